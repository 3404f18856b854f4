/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The source's RAM saver (migration/ram.c): sends dirty pages, zero
 * pages as a flag only, runs of contiguous pages in one record, within
 * max-bandwidth.
 *
 * Threads: everything here runs in the migration thread, which owns
 * the dirty bitmap; other threads only read the statistics.
 */
#ifndef MIGRATION_RAM_H
#define MIGRATION_RAM_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include "system/kvm.h"
#include "system/ramblock.h"

typedef struct QEMUFile QEMUFile;
typedef struct MigrationStats MigrationStats;

/* Pages per chunk of KVM's dirty log cleared at once (64 MiB). */
#define RAM_CLEAR_CHUNK_PAGES   16384

typedef struct RAMSaver {
    RAMBlock *rb;
    KVMState *kvm;
    unsigned long *dirty;       /* one bit per 4 KiB page of the block */
    /*
     * One bit per chunk whose pages KVM still logs as dirty since the
     * last sync (manual protection): cleared in KVM before the first
     * page of the chunk is read for sending.
     */
    unsigned long *clear_pending;
    uint64_t npages;
    QEMUFile *f;
    MigrationStats *stats;
    uint64_t max_bandwidth;     /* bytes/s, 0: unlimited */
    int64_t window_start_us;    /* rate limiting: 100 ms windows */
    uint64_t window_bytes;
    int *cancel;
} RAMSaver;

/* ram_saver_init: every page dirty, for the first pass. */
void ram_saver_init(RAMSaver *r, RAMBlock *rb, KVMState *kvm, QEMUFile *f,
                    MigrationStats *stats, int *cancel);
void ram_saver_cleanup(RAMSaver *r);

/* ram_save_pass: send every dirty page once; false on error or cancel. */
bool ram_save_pass(RAMSaver *r);

/* ram_sync_dirty: add the pages KVM logged since the last sync. */
bool ram_sync_dirty(RAMSaver *r, GError **errp);

/* ram_dirty_count: pages still dirty. */
uint64_t ram_dirty_count(const RAMSaver *r);

#endif
