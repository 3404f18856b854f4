/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The migration stream (docs/migration-stream.md): a header, then
 * records, then an end marker.  Little-endian throughout.
 *
 * Error contract: GError **errp last, bool.  The loader checks every
 * field it reads and never writes outside guest RAM.
 */
#ifndef MIGRATION_STREAM_H
#define MIGRATION_STREAM_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include "system/machine.h"

#define STREAM_MAGIC        0x59525246      /* "FRRY" */
#define STREAM_VERSION      2

/*
 * Every channel of a migration opens with this header (docs/migration-
 * stream.md): u32 magic, u32 version, u8 role, 16 bytes naming the
 * migration (random, made by the source at `migrate`).  A destination
 * reads it before it gives a connection a role, so that a stray
 * connection to its port is refused instead of becoming a channel.
 */
#define STREAM_CHANNEL_HEADER_LEN   25
#define STREAM_ID_LEN               16

typedef enum StreamChannelRole {
    STREAM_CHANNEL_MAIN = 0,        /* the stream, and the return path */
    STREAM_CHANNEL_PREEMPT = 1,     /* postcopy-preempt: requested pages */
} StreamChannelRole;

typedef struct StreamChannel {
    StreamChannelRole role;
    uint8_t id[STREAM_ID_LEN];
} StreamChannel;

/*
 * stream_parse_channel: the first @len bytes of a channel header in @buf,
 * checked as far as they go (so that a connection that cannot be a
 * ferry channel is refused at its first bytes).  1: the whole header,
 * in @c; 0: no fault yet, more is needed; -1: not a ferry channel of this
 * version, saying why.
 */
int stream_parse_channel(const uint8_t *buf, size_t len, StreamChannel *c,
                         GError **errp);

enum {
    REC_RAM_BLOCK   = 0x01,     /* u8 len, name, u64 size, u64 page size */
    REC_RAM_PAGES   = 0x02,     /* u64 offset, u32 count, count * 4 KiB */
    REC_RAM_ZERO    = 0x03,     /* u64 offset, u32 count */
    REC_PASS_END    = 0x04,     /* u32 pass */
    REC_DEVICE      = 0x05,     /* u8 len, name, u32 len, state */
    REC_OPEN_RETURN_PATH = 0x06,    /* the destination answers on this fd */
    REC_PING        = 0x07,     /* u32 id: answer RP_PONG once loaded */
    REC_MAPPED_RAM  = 0x08,     /* u64 bitmap, u64 pages, u64 end offsets:
                                 * RAM is in the file's slots (mapped-ram) */
    /* Postcopy (docs/migration-stream.md): */
    REC_POSTCOPY_ADVISE = 0x10,     /* u64 host page size: get ready */
    REC_POSTCOPY_DISCARD = 0x11,    /* u64 offset, u64 count: drop pages */
    REC_POSTCOPY_LISTEN = 0x12,     /* start serving faults */
    REC_POSTCOPY_RUN = 0x13,        /* u32 len, device records + EOF: run */
    /* Postcopy recovery, on a resumed main channel only: */
    REC_RECV_BITMAP = 0x14,         /* u8 len, block name: send RP_RECV_BITMAP */
    REC_POSTCOPY_RESUME = 0x15,     /* the source rebuilt what is left: go on */
    REC_EOF         = 0xff,
};

/* Return path (destination to source), on the same connection. */
enum {
    RP_SHUT         = 0x01,     /* u32 status: 0 when everything loaded */
    RP_REQ_PAGES    = 0x02,     /* u64 offset, u32 count: send these now */
    RP_RUNNING      = 0x03,     /* postcopy: the guest runs here now */
    RP_PONG         = 0x04,     /* u32 id: every record before PING id is
                                 * loaded */
    RP_REASON       = 0x05,     /* u16 len, text: why the load failed, sent
                                 * right before SHUT 1 (ferry's own) */
    RP_RECV_BITMAP  = 0x06,     /* u8 len, name, u64 pages, u64 words of
                                 * the pages in place, RP_BITMAP_END */
    RP_RESUME_ACK   = 0x07,     /* u32 1: the destination goes on */
};
#define RP_BITMAP_END       0x0123456789abcdefULL   /* as QEMU's */
#define RP_REASON_MAX       1024            /* bytes of a reason's text */

#define STREAM_MAX_RUN      1024            /* pages in one record */
#define STREAM_MAX_DEVICE   (1 << 20)       /* bytes of one device's state */
#define STREAM_MAX_PACKAGE  (16 << 20)      /* bytes of the postcopy package */

/*
 * stream_run_fits: whether @count pages at offset @off of @rb make a run
 * the stream allows, in a RAM record or a page request: 4 KiB aligned,
 * 1 to STREAM_MAX_RUN pages, inside the block.
 */
static inline bool stream_run_fits(const RAMBlock *rb, uint64_t off,
                                   uint32_t count)
{
    return off % TARGET_PAGE_SIZE == 0 && count > 0 && count <= STREAM_MAX_RUN &&
           off < rb->size && (uint64_t)count * TARGET_PAGE_SIZE <= rb->size - off;
}

typedef struct QEMUFile QEMUFile;
typedef struct MigrationStats MigrationStats;
typedef struct RAMLoader RAMLoader;
typedef struct MappedRam MappedRam;
typedef struct RAMLoadBuf RAMLoadBuf;

/*
 * What a destination does at the postcopy records; all run in the load
 * thread.  NULL ops: postcopy was not enabled, the records are refused.
 */
typedef struct StreamPostcopyOps {
    /* ADVISE: check that postcopy can run here. */
    bool (*advise)(void *opaque, uint64_t host_page_size, GError **errp);
    /* LISTEN: start the fault thread. */
    bool (*listen)(void *opaque, GError **errp);
    /* RUN: load the device state in @package and run the guest, without
     * waiting for it: RAM keeps coming on this stream meanwhile. */
    bool (*run)(void *opaque, GBytes *package, GError **errp);
    /* RECV_BITMAP (recovery): answer with what is in place here. */
    bool (*recv_bitmap)(void *opaque, GError **errp);
    /* POSTCOPY_RESUME (recovery): acknowledge, serve faults again. */
    bool (*resume)(void *opaque, GError **errp);
} StreamPostcopyOps;

/*
 * Where a destination is in postcopy's commands, as QEMU's
 * PostcopyState: ADVISE once, then any DISCARDs, LISTEN once, RUN once.
 * stream_load() refuses a command out of this order before acting on it.
 */
typedef enum StreamPostcopyState {
    STREAM_POSTCOPY_NONE,
    STREAM_POSTCOPY_ADVISE,
    STREAM_POSTCOPY_DISCARD,
    STREAM_POSTCOPY_LISTENING,
    STREAM_POSTCOPY_RUNNING,
    STREAM_POSTCOPY_RECOVER,    /* a resumed channel before RESUME */
} StreamPostcopyState;

typedef struct StreamLoad {
    Machine *m;
    MigrationStats *stats;
    RAMLoader *ram;
    const StreamPostcopyOps *postcopy;
    /*
     * PING: every record before it is loaded; answer RP_PONG @id on the
     * return path.  Load thread.  NULL: no return path here, a PING is
     * refused.
     */
    bool (*pong)(void *opaque, uint32_t id, GError **errp);
    void *opaque;               /* for postcopy's ops and pong */
    /*
     * A resumed main channel of a paused postcopy (migrate-recover): its
     * header must name @resume_id; RECV_BITMAP and POSTCOPY_RESUME come
     * first, then pages as after RUN.
     */
    bool resume;
    uint8_t resume_id[STREAM_ID_LEN];
    /* The mapped-ram capability is on here: a MAPPED_RAM record is taken
     * (else refused); with @mapped_lazy its pages are left in the file
     * for restore on demand, else placed at once. */
    bool mapped_ram;
    bool mapped_lazy;
    bool mapped_uring;          /* read the slots through io_uring */
    MappedRam *mapped;          /* out: the file's layout, if it had one
                                 * (mapped_ram_cleanup, g_free) */
    RunState source_state;      /* out: the source's run state */
    StreamChannel channel;      /* out: the main channel's header */
    bool return_path;           /* out: the source asked for one */
    bool postcopy_running;      /* out: RUN was loaded */
    StreamPostcopyState postcopy_state;     /* out: the last command taken */
} StreamLoad;

/* stream_put_channel: the channel header for @role of migration @id. */
void stream_put_channel(QEMUFile *f, StreamChannelRole role, const uint8_t *id);

/* stream_put_header: the main channel's header (@id), then the RAM
 * block's identity. */
void stream_put_header(QEMUFile *f, const RAMBlock *rb, const uint8_t *id);

/* stream_put_recv_bitmap: recovery's REC_RECV_BITMAP for @rb. */
void stream_put_recv_bitmap(QEMUFile *f, const RAMBlock *rb);

/*
 * stream_put_devices: the state of the VM, every vCPU, the serial port
 * and the run state, then the end marker.  The vCPUs must be parked.
 */
bool stream_put_devices(QEMUFile *f, Machine *m, RunState state,
                        GError **errp);

/*
 * stream_load: read a whole stream into @l->m: RAM as it comes, device
 * state at the end (vCPUs parked), or in postcopy the RUN package.
 * @l->source_state gets the source's run state, which decides whether
 * the guest runs here; @l->return_path whether the source asked for one
 * (then it waits for RP_SHUT).
 */
bool stream_load(QEMUFile *f, StreamLoad *l, GError **errp);

/*
 * stream_place_mapped: place pages [first, first + n) of the mapped-ram
 * file @m: runs with data read from their slots into @b and placed, zero
 * runs placed as zero pages; counted in @stats.  A read past the file's
 * end says "the file ends before them".  stream_place_read: the same for
 * a run of data pages read into @data elsewhere (an io_uring read that
 * ended with @ret).  Any thread that claimed the pages, with its own @b.
 */
bool stream_place_mapped(RAMLoader *l, RAMLoadBuf *b, const MappedRam *m,
                         MigrationStats *stats, uint64_t first, uint64_t n,
                         GError **errp);
bool stream_place_read(RAMLoader *l, RAMLoadBuf *b, MigrationStats *stats,
                       uint64_t first, uint64_t n, const uint8_t *data,
                       int ret, GError **errp);

/*
 * stream_load_devices: device records up to the end marker, from @f (a
 * postcopy package), every vCPU included.  Main thread, vCPUs parked.
 */
bool stream_load_devices(QEMUFile *f, Machine *m, RunState *source_state,
                         GError **errp);

#endif
