/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Return-path messages (migration/return-path.c): what the destination
 * says to the source on the stream's connection read the other way
 * (docs/migration-stream.md): RP_SHUT, RP_REQ_PAGES, RP_RUNNING,
 * RP_PONG, RP_REASON, and for recovery RP_RECV_BITMAP, RP_RESUME_ACK.
 *
 * rp_put() only encodes: the caller holds whatever lock guards @f and
 * flushes.  rp_get() reads one message.  Error contract:
 * GError **errp last, bool.
 */
#ifndef MIGRATION_RETURN_PATH_H
#define MIGRATION_RETURN_PATH_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include "migration/stream.h"
#include "system/ramblock.h"

typedef struct QEMUFile QEMUFile;

typedef struct RPMessage {
    uint8_t type;               /* RP_* */
    uint64_t off;               /* RP_REQ_PAGES: byte offset in the block */
    uint32_t count;             /* RP_REQ_PAGES: 4 KiB pages */
    uint32_t status;            /* RP_SHUT: 0 when everything loaded */
    uint32_t id;                /* RP_PONG: the PING's id */
    char text[RP_REASON_MAX + 1];   /* RP_REASON: NUL-terminated, at most
                                 * RP_REASON_MAX bytes (cut there);
                                 * RP_RECV_BITMAP: the block's name */
    /* RP_RECV_BITMAP: one bit per 4 KiB page, @npages of them.  rp_put
     * reads it; rp_get allocates it, the caller frees it (bitmap_free). */
    unsigned long *bitmap;
    uint64_t npages;
} RPMessage;

/* rp_put: write message @m (the members its type uses) to @f. */
void rp_put(QEMUFile *f, const RPMessage *m);

/*
 * rp_get: read one message into @m.  False at a stream error or end
 * (the stream's error says which), for an unknown type, and for a
 * bitmap larger than RP_BITMAP_MAX_PAGES or without its end marker.
 */
#define RP_BITMAP_MAX_PAGES (1ULL << 32)       /* 16 TiB of guest RAM */
bool rp_get(QEMUFile *f, RPMessage *m, GError **errp);

/*
 * rp_check_request: whether a request for @count pages at @off fits
 * @rb (aligned, not empty, at most STREAM_MAX_RUN pages, inside the
 * block); if not, says why.
 */
bool rp_check_request(const RAMBlock *rb, uint64_t off, uint32_t count,
                      GError **errp);

#endif
