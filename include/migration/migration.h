/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Live migration: the state machine, the source's migration thread and
 * the QMP commands (migration/migration.c), the destination's load
 * thread (migration/incoming.c).
 *
 * Threads and ownership:
 * - main thread: QMP handlers, events, run-state changes, accepting the
 *   incoming connection.  The migration and load threads ask it to stop
 *   or start the VM through migration_call_main() and wait.
 * - migration thread (source, "live_migration"): owns the stream and the
 *   dirty bitmap from migrate until it ends.
 * - load thread (destination, "mig/dst/load"): owns the incoming stream.
 * @status changes only through migrate_set_state() (compare and swap,
 * trace, MIGRATION event).  @stats are atomics written by the thread
 * that moves pages and read by query-migrate.  @lock protects caps,
 * params and error.
 */
#ifndef MIGRATION_MIGRATION_H
#define MIGRATION_MIGRATION_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>
#include <json-glib/json-glib.h>

#include "monitor/qmp.h"
#include "system/machine.h"

typedef enum MigrationStatus {
    MIGRATION_STATUS_NONE,
    MIGRATION_STATUS_SETUP,
    MIGRATION_STATUS_CANCELLING,
    MIGRATION_STATUS_CANCELLED,
    MIGRATION_STATUS_ACTIVE,
    MIGRATION_STATUS_POSTCOPY_ACTIVE,
    MIGRATION_STATUS_POSTCOPY_PAUSED,
    MIGRATION_STATUS_POSTCOPY_RECOVER_SETUP,
    MIGRATION_STATUS_POSTCOPY_RECOVER,
    MIGRATION_STATUS_COMPLETED,
    MIGRATION_STATUS_FAILED,
    MIGRATION_STATUS_COLO,
    MIGRATION_STATUS_PRE_SWITCHOVER,
    MIGRATION_STATUS_DEVICE,
    MIGRATION_STATUS_WAIT_UNPLUG,
    MIGRATION_STATUS__MAX,
} MigrationStatus;

const char *migration_status_name(MigrationStatus s);

/* Counters of one migration; all accessed with __atomic builtins. */
typedef struct MigrationStats {
    uint64_t transferred;       /* bytes put on the stream */
    uint64_t normal_pages;      /* pages sent with their contents */
    uint64_t zero_pages;        /* pages sent as a zero flag */
    uint64_t dirty_sync_count;
    uint64_t remaining_pages;   /* dirty, not yet sent */
    uint64_t dirty_pages_rate;  /* pages per second, last pass */
    uint64_t bandwidth;         /* bytes per second, last pass */
    uint64_t downtime_bytes;    /* sent while the VM was stopped */
    uint64_t pages_per_second;
    uint64_t postcopy_requests; /* source: page requests received */
    uint64_t postcopy_start_bytes;  /* transferred when postcopy began */
    uint64_t postcopy_started;      /* 1 once it began */
    /* x-postcopy-working-set (source), in 4 KiB pages: those ranked at
     * the switch, and those the push took from that order and from
     * fault neighbourhoods (include/migration/working-set.h). */
    uint64_t ws_ranked;
    uint64_t ws_hot_pushed;
    uint64_t ws_near_pushed;
} MigrationStats;

typedef struct RAMSaver RAMSaver;
typedef struct RAMLoader RAMLoader;
typedef struct PostcopyIncoming PostcopyIncoming;
typedef struct QEMUFile QEMUFile;

/*
 * The source's half (QEMU's MigrationState proper).  Owners: the main
 * thread sets a migration up in qmp_migrate(); from then until it ends
 * the migration thread ("live_migration") owns the stream and the
 * saver; the return-path thread ("mig/src/rp", rp-source.c) reads the
 * return path.  Each field says how the others reach it.
 */
typedef struct MigrationSource {
    GThread *thread;            /* main thread: "live_migration", joined
                                 * at the next migrate or at cleanup */
    GMutex continue_lock;       /* pause-before-switchover: the thread waits */
    GCond continue_cond;        /* here for migrate-continue or a cancel */
    bool continue_posted;       /* under continue_lock */
    /* Postcopy recovery: migrate resume=true (main thread) hands the
     * paused migration thread where to go on, under continue_lock. */
    bool resume_posted;
    int resume_fd;              /* fd:'s connection, or -1: connect */
    char *resume_uri;           /* where it goes (and the preempt channel) */
    int cancel;                 /* atomic: any thread sets, the thread reads */
    /* The bandwidth limit in force (RAMSaver.max_bandwidth points here):
     * the value of rate_param, or 0 with none (the guest stopped).  The
     * migration thread picks the parameter per phase, migrate-set-
     * parameters updates the value; both under MigrationState.lock. */
    uint64_t rate_limit;        /* atomic */
    const char *rate_param;     /* under MigrationState.lock */
    int throttle_pct;           /* atomic: auto-converge's current throttle */
    int stream_fd;              /* under MigrationState.lock: shut down to
                                 * cancel, or -1 (migration_close_stream) */
    /* Postcopy. */
    int postcopy_start;         /* atomic: migrate-start-postcopy was given */
    bool postcopy_after_pass1;  /* main thread, before the thread: migrate -p */
    bool postcopy_no_push;      /* main thread, before the thread: -n */
    int64_t stop_ms;            /* atomic: when the source stopped the VM */
    /* x-postcopy-auto's latest verdict, for query-migrate: written by
     * the migration thread after each pass, under MigrationState.lock
     * (verdict NULL: none yet). */
    struct {
        const char *verdict;    /* postcopy_auto_verdict_name() */
        char *reason;
        uint64_t pass;
        int64_t time_ms;        /* since the migration began */
    } autosw;
    int preempt_fd;             /* migration thread: the preempt channel, -1 */
    uint8_t channel_id[16];     /* main thread, before the thread: names this
                                 * migration's channels (STREAM_ID_LEN) */
    /* The return path (rp-source.c). */
    GThread *rp_thread;         /* migration thread: started and joined */
    int rp_fd;                  /* the stream's fd it reads */
    RAMSaver *saver;            /* atomic; set under rp_lock: the migration
                                 * thread's, from the switch (requests) */
    GMutex rp_lock;
    GCond rp_cond;              /* a PONG came, or the return path ended */
    uint32_t rp_pong;           /* under rp_lock: the last PONG's id */
    bool rp_gone;               /* under rp_lock: the return path ended */
    char *rp_reason;            /* under rp_lock: the destination's reason */
    unsigned long *rp_bitmap;   /* under rp_lock: recovery's RECV_BITMAP */
    bool rp_resumed;            /* under rp_lock: RESUME_ACK came */
    int rp_shut;                /* atomic: -1 none yet, else SHUT's status */
    int rp_running;             /* atomic: the destination said RUNNING:
                                 * this guest must never run again here */
    uint64_t rp_refused;        /* atomic: malformed requests refused */
} MigrationSource;

/*
 * The destination's half (QEMU's MigrationIncomingState).  Owners: the
 * main thread accepts connections and runs RUN's device load; the load
 * thread ("mig/dst/load", incoming.c) owns the stream and the RAM loader
 * from its start; postcopy's fault thread is PostcopyIncoming's.
 */
typedef struct MigrationIncoming {
    bool incoming;              /* main thread: this process waits for, or
                                 * loads, a migration */
    bool incoming_defer;        /* main thread: -incoming defer */
    bool exit_on_error;         /* main thread, before the load thread */
    int listen_fd;              /* main thread */
    guint listen_src;           /* main thread */
    GList *pending;             /* main thread: connections whose channel
                                 * header has not come yet (PendingChannel) */
    bool have_main;             /* main thread: the main channel came */
    bool recovering;            /* main thread: migrate-recover listens for
                                 * the paused migration's new stream */
    uint8_t channel_id[16];     /* main thread: the main channel's id */
    JsonArray *socket_address;  /* main thread */
    GThread *load_thread;       /* main thread: started, joined at cleanup */
    int incoming_fd;            /* under MigrationState.lock: the stream's
                                 * connection while the load thread has it */
    QEMUFile *paused_stream;    /* load thread, then main at cleanup: the
                                 * stream, kept open while postcopy is paused */
    RAMLoader *ram_loader;      /* load thread; kept while postcopy-paused */
    int stopping;               /* atomic: set by migration_incoming_stop
                                 * (restore on demand reads no further) */
    PostcopyIncoming *pci;      /* atomic pointer, set whole by the load
                                 * thread at advise: fault thread and stats */
    int preempt_fd;             /* atomic: the preempt channel accepted by
                                 * the main thread until handed over, or -1 */
    int preempt_ready;          /* atomic: the fault thread takes the
                                 * preempt channel (hand_over_preempt) */
    /* Postcopy's RUN: the main thread loads the devices and runs the
     * guest while the load thread reads on; it says how that went. */
    GMutex run_lock;
    GCond run_cond;
    int run_result;             /* under run_lock: 0 not yet, 1 the guest
                                 * runs here, -1 the devices failed */
} MigrationIncoming;

/* What both halves share, and the two halves. */
typedef struct MigrationState {
    Machine *m;
    QmpDispatcher *qmp;         /* for fd: URIs (getfd's named fds) */
    /* Events go out through this, in the main thread. */
    void (*emit)(void *opaque, const char *name, JsonObject *data);
    /* Main thread: bytes of events and replies the monitors have not
     * read (migration_events_read); NULL: none to wait for. */
    size_t (*events_unread)(void *opaque);
    void *emit_opaque;

    int status;                 /* MigrationStatus; migrate_set_state() only */
    GMutex status_lock;         /* only for status_cond: each change of */
    GCond status_cond;          /* status is broadcast (migration_wait_leave) */
    GMutex lock;
    bool *caps;                 /* under lock, indexed by capability */
    JsonObject *params;         /* under lock */
    char *error;                /* under lock: error-desc */

    /* Times in ms since the epoch of g_get_monotonic_time; atomics. */
    int64_t start_ms, setup_ms, end_ms, downtime_ms, expected_downtime_ms;
    MigrationStats stats;       /* atomics: the threads moving pages write */

    int threads_live;           /* atomic: migration and load threads not
                                 * finished (migration_cleanup waits) */
    bool quitting;              /* main thread: migration_cleanup began */

    MigrationSource src;
    MigrationIncoming dst;
} MigrationState;

/*
 * migration_init: the state of this process, and its QMP commands
 * registered in @d.  @incoming: the -incoming URI, "defer", or NULL.
 */
bool migration_init(MigrationState *s, Machine *m, QmpDispatcher *d,
                     const char *incoming, GError **errp);
void migration_cleanup(MigrationState *s);

/*
 * migrate_set_state: move from @old to @new if the status is still @old
 * (compare and swap); trace it and emit MIGRATION when the events
 * capability is on.  False if the status had moved on.
 */
bool migrate_set_state(MigrationState *s, MigrationStatus old,
                       MigrationStatus new);

/*
 * migrate_set_state_from: move to @new from the first state of @from
 * (a list ended by MIGRATION_STATUS__MAX) that the status still is, each
 * a compare-and-swap as above: for an end that several states lead to.
 * False if the status is none of them.
 */
bool migrate_set_state_from(MigrationState *s, const MigrationStatus *from,
                            MigrationStatus new);

/* migrate_cap: whether capability @name is on. */
bool migrate_cap(MigrationState *s, const char *name);

/* migration_options_register: capabilities and parameters, their commands. */
void migration_options_register(MigrationState *s, QmpDispatcher *d);

/* migration_call_main: run @fn(@opaque) in the main thread and wait. */
void migration_call_main(MigrationState *s, void (*fn)(void *), void *opaque);

/*
 * migration_flush_events: wait until the main thread has written every
 * event queued so far to the monitors.  A migration thread (never the
 * main thread) calls it before it tells the peer of a state change whose
 * event a manager waits for on this side: libvirt acts on the peer's
 * news, then reads this side's last event, which must be the new one.
 */
void migration_flush_events(MigrationState *s);

/*
 * migration_events_read: flush, then wait until every monitor has read
 * what it was sent, for at most @bound_ms (a client that does not read
 * costs that, never more).  libvirt 9.0 handles an event in the thread
 * that reads it, and fails the destination's finish of a postcopy
 * resume if it still has postcopy-paused there: the source, told the
 * resume is done, makes libvirt ask for that finish at once, and on a
 * busy host the event written a moment before was not yet read.
 */
void migration_events_read(MigrationState *s, int bound_ms);

#endif
