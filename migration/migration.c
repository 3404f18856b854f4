/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Live migration: state machine, source thread, destination thread.
 * The contract and the thread rules are in include/migration/migration.h.
 */
#include "migration/mapped-ram.h"
#include "migration/snapshot.h"
#include "migration/migration.h"
#include "migration-int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "migration/channel.h"
#include "migration/qemu-file.h"
#include "migration/ram.h"
#include "migration/return-path.h"
#include "migration/postcopy-auto.h"
#include "migration/working-set.h"
#include "migration/postcopy-ram.h"
#include "migration/stream.h"
#include "qemu/bitmap.h"
#include "qemu/thread-prio.h"
#include "qemu/main-loop.h"

const char *migration_status_name(MigrationStatus s)
{
    static const char *const names[MIGRATION_STATUS__MAX] = {
        "none", "setup", "cancelling", "cancelled", "active",
        "postcopy-active", "postcopy-paused", "postcopy-recover-setup",
        "postcopy-recover", "completed", "failed", "colo", "pre-switchover",
        "device", "wait-unplug",
    };
    return s < MIGRATION_STATUS__MAX ? names[s] : "unknown";
}

/* ---- Running things in the main thread -------------------------------------- */

typedef struct MainCall {
    void (*fn)(void *);
    void *opaque;
    GMutex lock;
    GCond cond;
    bool done;
} MainCall;

static void main_call_run(void *data)
{
    MainCall *c = data;
    c->fn(c->opaque);
    g_mutex_lock(&c->lock);
    c->done = true;
    g_cond_signal(&c->cond);
    g_mutex_unlock(&c->lock);
}

void migration_call_main(MigrationState *s, void (*fn)(void *), void *opaque)
{
    (void)s;
    MainCall c = { .fn = fn, .opaque = opaque };
    g_mutex_init(&c.lock);
    g_cond_init(&c.cond);
    main_loop_post(main_call_run, &c);
    g_mutex_lock(&c.lock);
    while (!c.done) {
        g_cond_wait(&c.cond, &c.lock);
    }
    g_mutex_unlock(&c.lock);
    g_mutex_clear(&c.lock);
    g_cond_clear(&c.cond);
}

/* ---- Events ------------------------------------------------------------------------- */

typedef struct PendingEvent {
    MigrationState *s;
    char *name;
    JsonObject *data;
} PendingEvent;

static void emit_in_main(void *opaque)
{
    PendingEvent *e = opaque;
    e->s->emit(e->s->emit_opaque, e->name, e->data);
    json_object_unref(e->data);
    g_free(e->name);
    g_free(e);
}

/* Queue an event for the main thread; events keep their order. */
static void emit(MigrationState *s, const char *name, JsonObject *data);

void migration_emit(MigrationState *s, const char *name, JsonObject *data)
{
    emit(s, name, data);
}

static void emit(MigrationState *s, const char *name, JsonObject *data)
{
    PendingEvent *e = g_new0(PendingEvent, 1);
    e->s = s;
    e->name = g_strdup(name);
    e->data = data;
    main_loop_post(emit_in_main, e);
}

static void events_flushed(void *opaque)
{
    (void)opaque;       /* queued after them: the events before are out */
}

void migration_flush_events(MigrationState *s)
{
    migration_call_main(s, events_flushed, NULL);
}

typedef struct Unread {
    MigrationState *s;
    size_t n;
} Unread;

static void count_unread(void *opaque)
{
    Unread *u = opaque;
    u->n = u->s->events_unread ? u->s->events_unread(u->s->emit_opaque) : 0;
}

void migration_events_read(MigrationState *s, int bound_ms)
{
    int64_t until = g_get_monotonic_time() + bound_ms * G_TIME_SPAN_MILLISECOND;
    for (;;) {
        /* Run after the events queued so far: they are written. */
        Unread u = { s, 0 };
        migration_call_main(s, count_unread, &u);
        if (!u.n || g_get_monotonic_time() >= until) {
            return;
        }
        g_usleep(500);
    }
}

bool migrate_set_state(MigrationState *s, MigrationStatus old,
                       MigrationStatus new)
{
    int expected = old;
    if (!__atomic_compare_exchange_n(&s->status, &expected, new, false,
                                     __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
        return false;
    }
    g_debug("migrate_set_state %s -> %s", migration_status_name(old),
            migration_status_name(new));
    g_mutex_lock(&s->status_lock);
    g_cond_broadcast(&s->status_cond);
    g_mutex_unlock(&s->status_lock);
    if (migrate_cap(s, "events")) {
        JsonObject *d = json_object_new();
        json_object_set_string_member(d, "status", migration_status_name(new));
        emit(s, "MIGRATION", d);
    }
    return true;
}

bool migrate_set_state_from(MigrationState *s, const MigrationStatus *from,
                            MigrationStatus new)
{
    for (; *from != MIGRATION_STATUS__MAX; from++) {
        if (migrate_set_state(s, *from, new)) {
            return true;
        }
    }
    return false;
}

MigrationStatus migration_status(MigrationState *s)
{
    return __atomic_load_n(&s->status, __ATOMIC_SEQ_CST);
}

static bool status_in(MigrationStatus st, const MigrationStatus *set)
{
    for (; *set != MIGRATION_STATUS__MAX; set++) {
        if (st == *set) {
            return true;
        }
    }
    return false;
}

bool migration_wait_leave(MigrationState *s, const MigrationStatus *from,
                          int bound_ms)
{
    gint64 until = g_get_monotonic_time() + bound_ms * G_TIME_SPAN_MILLISECOND;
    bool waited = true;
    g_mutex_lock(&s->status_lock);
    while (waited && status_in(migration_status(s), from)) {
        waited = g_cond_wait_until(&s->status_cond, &s->status_lock, until);
    }
    bool left = !status_in(migration_status(s), from);
    g_mutex_unlock(&s->status_lock);
    return left;
}

void migration_set_error(MigrationState *s, const char *msg)
{
    g_mutex_lock(&s->lock);
    if (!s->error) {
        s->error = g_strdup(msg);
    }
    g_mutex_unlock(&s->lock);
}

/* ---- The source ---------------------------------------------------------------------- */

void migration_stop_vm(void *opaque)
{
    StopCall *c = opaque;
    Machine *m = c->s->m;
    c->before = m->state;
    if (m->state == RUN_STATE_RUNNING) {
        machine_pause(m);
    }
    machine_set_state(m, c->target);
}

/* Main thread: after a failed or cancelled migration, run again if we stopped it. */
void migration_restart_vm(void *opaque)
{
    StopCall *c = opaque;
    Machine *m = c->s->m;
    if (m->state == c->target) {
        if (c->before == RUN_STATE_RUNNING) {
            machine_set_state(m, RUN_STATE_RUNNING);
            machine_resume(m);
        } else {
            machine_set_state(m, c->before);
        }
    }
}

static void finish_vm(void *opaque)
{
    StopCall *c = opaque;
    machine_set_state(c->s->m, RUN_STATE_POSTMIGRATE);
}

void migration_rate_update_locked(MigrationState *s)
{
    const char *param = s->src.rate_param;
    __atomic_store_n(&s->src.rate_limit,
                     param ? json_object_get_int_member(s->params, param) : 0,
                     __ATOMIC_RELAXED);
}

void migration_set_rate(MigrationState *s, const char *param)
{
    g_mutex_lock(&s->lock);
    s->src.rate_param = param;
    migration_rate_update_locked(s);
    g_mutex_unlock(&s->lock);
}

uint64_t migration_param_u64(MigrationState *s, const char *name)
{
    g_mutex_lock(&s->lock);
    uint64_t v = json_object_get_int_member(s->params, name);
    g_mutex_unlock(&s->lock);
    return v;
}

bool migration_param_bool(MigrationState *s, const char *name)
{
    g_mutex_lock(&s->lock);
    bool v = json_object_has_member(s->params, name) &&
             json_object_get_boolean_member(s->params, name);
    g_mutex_unlock(&s->lock);
    return v;
}

static uint64_t param_u64(MigrationState *s, const char *name)
{
    return migration_param_u64(s, name);
}

typedef struct Throttle {
    MigrationState *s;
    int pct;
} Throttle;

static void set_throttle_main(void *opaque)
{
    Throttle *t = opaque;
    machine_set_throttle(t->s->m, t->pct);
}

static void set_throttle(MigrationState *s, int pct)
{
    Throttle t = { s, pct };
    __atomic_store_n(&s->src.throttle_pct, pct, __ATOMIC_SEQ_CST);
    migration_call_main(s, set_throttle_main, &t);
}

/*
 * auto-converge, as QEMU: a pass in which the guest dirtied more than
 * throttle-trigger-threshold percent of what was sent counts; at the
 * second such pass the vCPUs are throttled by cpu-throttle-initial, then
 * by cpu-throttle-increment more each time, up to max-cpu-throttle.
 */
static void auto_converge(MigrationState *s, uint64_t dirty_bytes,
                          uint64_t sent_bytes, int *high)
{
    if (!migrate_cap(s, "auto-converge")) {
        return;
    }
    if (dirty_bytes * 100 <= sent_bytes * param_u64(s, "throttle-trigger-threshold")) {
        return;
    }
    if (++*high < 2) {
        return;
    }
    *high = 0;
    int pct = __atomic_load_n(&s->src.throttle_pct, __ATOMIC_SEQ_CST);
    pct = pct ? pct + (int)param_u64(s, "cpu-throttle-increment")
              : (int)param_u64(s, "cpu-throttle-initial");
    set_throttle(s, MIN(pct, (int)param_u64(s, "max-cpu-throttle")));
}

/*
 * x-postcopy-auto's verdict on @pass, for query-migrate and the trace.
 * Migration thread.  Takes @reason.
 */
static void auto_record(MigrationState *s, uint64_t pass, PostcopyAutoVerdict v,
                        char *reason)
{
    g_debug("x-postcopy-auto: pass %" G_GUINT64_FORMAT ": %s: %s", pass,
            postcopy_auto_verdict_name(v), reason);
    g_mutex_lock(&s->lock);
    s->src.autosw.verdict = postcopy_auto_verdict_name(v);
    g_free(s->src.autosw.reason);
    s->src.autosw.reason = reason;
    s->src.autosw.pass = pass;
    s->src.autosw.time_ms = migration_now_ms() - s->start_ms;
    g_mutex_unlock(&s->lock);
}

static bool cancelled(MigrationState *s)
{
    return migration_cancelled(s);
}

bool migration_pause_before_switchover(MigrationState *s, MigrationStatus next)
{
    if (!migrate_cap(s, "pause-before-switchover")) {
        return !cancelled(s) &&
               (next == MIGRATION_STATUS_DEVICE ||
                migrate_set_state(s, MIGRATION_STATUS_ACTIVE, next));
    }
    if (!migrate_set_state(s, MIGRATION_STATUS_ACTIVE,
                           MIGRATION_STATUS_PRE_SWITCHOVER)) {
        return false;           /* cancelled just now */
    }
    g_mutex_lock(&s->src.continue_lock);
    while (!s->src.continue_posted && !cancelled(s)) {
        g_cond_wait(&s->src.continue_cond, &s->src.continue_lock);
    }
    s->src.continue_posted = false;
    g_mutex_unlock(&s->src.continue_lock);
    return !cancelled(s) &&
           migrate_set_state(s, MIGRATION_STATUS_PRE_SWITCHOVER, next);
}

typedef struct MigrateArgs {
    MigrationState *s;
    int fd;
    char *uri;                  /* source: where the preempt channel goes */
} MigrateArgs;

/*
 * Migration thread, after completed (or paused in postcopy): what the
 * migration no longer needs.  Dirty logging off can take longer than
 * libvirt's Finish on the destination; done before completed, it
 * delayed the state and counted in the downtime, and libvirt read this
 * side's statistics while still postcopy-active (its job lost the
 * downtime).  Nothing here waits on the main thread: a migrate that
 * comes at once joins this thread there.
 */
static void migration_source_cleanup(MigrationState *s, RAMSaver *r, QEMUFile *f)
{
    kvm_set_dirty_log(&s->m->kvm, s->m->ram, false, NULL);
    if (r->mapped) {
        mapped_ram_cleanup(r->mapped);
    }
    if (f) {
        migration_close_stream(s, &s->src.stream_fd, f);
    }
    ram_saver_cleanup(r);
}

static void migration_thread_body(MigrateArgs *a);

static gpointer migration_thread(gpointer opaque)
{
    MigrateArgs *a = opaque;
    MigrationState *s = a->s;
    migration_thread_body(a);
    migration_thread_done(s);
    return NULL;
}

static void migration_thread_body(MigrateArgs *a)
{
    MigrationState *s = a->s;
    Machine *m = s->m;
    g_autoptr(GError) err = NULL;
    /* Before any migration byte, and before the QEMUFile that is to
     * write through the session. */
    bool tls_ok = migration_tls_connect(s, a->fd, a->uri, NULL, &err);
    QEMUFile *f = qemu_file_new(a->fd, true, true);
    RAMSaver r;
    MappedRam mapped = { .fd = -1, .fd_pages = -1 };
    StopCall stop = { s, RUN_STATE_RUNNING, RUN_STATE_FINISH_MIGRATE };
    bool stopped = false;
    g_autofree char *uri = a->uri;
    g_free(a);

    if (migrate_cap(s, "background-snapshot")) {
        snapshot_run(s, f, uri);
        return;
    }
    bool postcopy = migrate_cap(s, "postcopy-ram");
    bool autosw = postcopy && migrate_cap(s, "x-postcopy-auto");
    int64_t first_pass_ms = 0;
    /* postcopy-ram brings the return path with it. */
    bool return_path = migrate_cap(s, "return-path") || postcopy;
    int dirty_high = 0;
    ram_saver_init(&r, m->ram, &m->kvm, f, &s->stats, &s->src.cancel);
    r.max_bandwidth = &s->src.rate_limit;
    migration_set_rate(s, "max-bandwidth");
    r.stop_pass = postcopy ? &s->src.postcopy_start : NULL;
    if (postcopy && migrate_cap(s, "x-postcopy-working-set")) {
        r.ws = g_new(WorkingSet, 1);
        working_set_init(r.ws, r.npages, r.hpages);
    }
    if (!tls_ok) {
        goto fail;
    }
    stream_put_header(f, m->ram, s->src.channel_id);
    qemu_fflush(f);             /* the destination names the channel by it */
    if (return_path) {
        qemu_put_byte(f, REC_OPEN_RETURN_PATH);
        source_rp_start(s, qemu_file_fd(f), false);
    }
    if (postcopy) {
        qemu_put_byte(f, REC_POSTCOPY_ADVISE);
        qemu_put_u64(f, m->ram->page_size);
    }
    if (migrate_cap(s, "mapped-ram")) {
        if (!mapped_ram_writer_start(&mapped, f, r.npages,
                                     migration_param_bool(s, "direct-io"),
                                     &err)) {
            goto fail;
        }
        r.mapped = &mapped;
    }
    if (!kvm_set_dirty_log(&m->kvm, m->ram, true, &err)) {
        goto fail;
    }
    __atomic_store_n(&s->setup_ms, migration_now_ms() - s->start_ms, __ATOMIC_SEQ_CST);

    for (uint64_t pass = 1;; pass++) {
        /* As QEMU: pass 1 is announced during setup, before active. */
        JsonObject *d = json_object_new();
        json_object_set_int_member(d, "pass", pass);
        emit(s, "MIGRATION_PASS", d);
        if (pass == 1) {
            migrate_set_state(s, MIGRATION_STATUS_SETUP, MIGRATION_STATUS_ACTIVE);
        }

        uint64_t bytes0 = s->stats.transferred;
        int64_t t0 = g_get_monotonic_time();
        if (autosw) {
            /* The budget ends a pass too, so a long one cannot overrun it
             * (the default's is known once the first pass has ended). */
            int64_t budget = postcopy_auto_budget_ms(
                migration_param_u64(s, "x-postcopy-auto-budget"), first_pass_ms);
            r.deadline_us = budget ? (s->start_ms + budget) * 1000 : 0;
        }
        if (!ram_save_pass(&r)) {
            goto fail;
        }
        if (!r.mapped) {        /* mapped-ram: nothing between its records */
            qemu_put_byte(f, REC_PASS_END);
            qemu_put_u32(f, pass);
            qemu_fflush(f);
        }
        if (postcopy && (__atomic_load_n(&s->src.postcopy_start, __ATOMIC_SEQ_CST) ||
                         s->src.postcopy_after_pass1)) {
            if (autosw) {
                auto_record(s, pass, POSTCOPY_AUTO_SWITCH, g_strdup(
                    s->src.postcopy_after_pass1
                        ? "migrate -p: after the first pass"
                        : "migrate-start-postcopy"));
            }
            goto postcopy;
        }
        if (r.deadline_hit) {
            auto_record(s, pass, POSTCOPY_AUTO_SWITCH, g_strdup_printf(
                "the precopy budget of %" G_GINT64_FORMAT " ms is spent "
                "(pass %" G_GUINT64_FORMAT " cut short)",
                r.deadline_us / 1000 - s->start_ms, pass));
            goto postcopy;
        }
        double secs = MAX(1e-6, (g_get_monotonic_time() - t0) / 1e6);
        uint64_t bytes = s->stats.transferred - bytes0;
        uint64_t bw = MAX(1, bytes / secs);

        if (!ram_sync_dirty(&r, &err)) {
            goto fail;
        }
        if (r.ws) {
            /* The pass sent every dirty page: what is dirty now is what
             * the guest wrote during it. */
            working_set_record(r.ws, r.dirty);
        }
        uint64_t dirty = ram_dirty_count(&r);
        __atomic_store_n(&s->stats.remaining_pages, dirty, __ATOMIC_RELAXED);
        __atomic_store_n(&s->stats.dirty_pages_rate, (uint64_t)(dirty / secs),
                         __ATOMIC_RELAXED);
        __atomic_store_n(&s->stats.bandwidth, bw, __ATOMIC_RELAXED);
        __atomic_store_n(&s->stats.pages_per_second,
                         (uint64_t)((bytes / TARGET_PAGE_SIZE) / secs), __ATOMIC_RELAXED);
        /* Converged: what is left goes within the downtime limit. */
        int64_t expected = dirty * TARGET_PAGE_SIZE * 1000 / bw;
        __atomic_store_n(&s->expected_downtime_ms, expected, __ATOMIC_SEQ_CST);
        if (autosw) {
            int64_t pass_ms = secs * 1000;  /* the pass, not the sync after */
            if (pass == 1) {
                first_pass_ms = MAX(1, pass_ms);
            }
            PostcopyAutoPass p = {
                .pass = pass, .sent_bytes = bytes, .pass_ms = pass_ms,
                .dirty_bytes = dirty * TARGET_PAGE_SIZE,
                .elapsed_ms = migration_now_ms() - s->start_ms,
                .budget_ms = postcopy_auto_budget_ms(
                    migration_param_u64(s, "x-postcopy-auto-budget"), first_pass_ms),
                .downtime_limit_ms = param_u64(s, "downtime-limit"),
            };
            char *why = NULL;
            PostcopyAutoVerdict v = postcopy_auto_decide(&p, &why);
            auto_record(s, pass, v, why);
            if (v == POSTCOPY_AUTO_CONVERGED) {
                break;
            }
            if (v == POSTCOPY_AUTO_SWITCH) {
                goto postcopy;
            }
        } else if (expected <= (int64_t)param_u64(s, "downtime-limit")) {
            break;
        }
        auto_converge(s, dirty * TARGET_PAGE_SIZE, bytes, &dirty_high);
        if (cancelled(s)) {
            goto fail;
        }
    }

    /* Switchover: stop, send the rest and the devices. */
    int64_t stop_at = migration_now_ms();
    migration_call_main(s, migration_stop_vm, &stop);
    stopped = true;
    if (!migration_pause_before_switchover(s, MIGRATION_STATUS_DEVICE)) {
        goto fail;
    }
    uint64_t before = s->stats.transferred;
    migration_set_rate(s, NULL);    /* the guest is stopped: no limit now */
    if (!ram_sync_dirty(&r, &err)) {
        goto fail;
    }
    if (!ram_save_pass(&r)) {
        goto fail;
    }
    if (r.mapped && !mapped_ram_writer_finish(r.mapped, f, &err)) {
        goto fail;
    }
    uint64_t dev0 = qemu_file_transferred(f);
    if (!stream_put_devices(f, m, stop.before, &err)) {
        goto fail;
    }
    __atomic_fetch_add(&s->stats.transferred, qemu_file_transferred(f) - dev0,
                       __ATOMIC_RELAXED);
    __atomic_store_n(&s->stats.downtime_bytes, s->stats.transferred - before,
                     __ATOMIC_RELAXED);
    /*
     * Wait for the destination to have loaded everything: its SHUT on
     * the return path says how that went; without one, its close does.
     */
    shutdown(qemu_file_fd(f), SHUT_WR);
    if (return_path) {
        if (source_rp_join(s) != 0) {
            source_rp_error(s, &err);
            goto fail;
        }
    } else {
        char c;
        while (read(qemu_file_fd(f), &c, 1) > 0) {
        }
    }
    __atomic_store_n(&s->downtime_ms, migration_now_ms() - stop_at, __ATOMIC_SEQ_CST);
    __atomic_store_n(&s->end_ms, migration_now_ms(), __ATOMIC_SEQ_CST);
    set_throttle(s, 0);
    migration_call_main(s, finish_vm, &stop);
    /* The destination runs the guest now: completed, even over a cancel
     * that came too late (cancelled would invite a cont here). */
    migrate_set_state_from(s, (const MigrationStatus[]) {
        MIGRATION_STATUS_ACTIVE, MIGRATION_STATUS_DEVICE,
        MIGRATION_STATUS_CANCELLING, MIGRATION_STATUS__MAX },
        MIGRATION_STATUS_COMPLETED);
    migration_source_cleanup(s, &r, f);
    return;

postcopy: {
    if (!postcopy_switch(s, &r, f, &stop, &stopped, uri, &err)) {
        goto fail;
    }
    MigrationStatus end = postcopy_run(s, &r, &f, &uri, &err);
    if (end == MIGRATION_STATUS_FAILED) {
        goto fail;              /* on the stream of the switch */
    }
    __atomic_store_n(&s->end_ms, migration_now_ms(), __ATOMIC_SEQ_CST);
    set_throttle(s, 0);
    if (end == MIGRATION_STATUS_COMPLETED) {
        migration_call_main(s, finish_vm, &stop);
        migrate_set_state(s, MIGRATION_STATUS_POSTCOPY_ACTIVE, end);
    } else {
        /* The process ends, paused: postcopy-paused it stays. */
        migration_set_error(s, err->message);
    }
    migration_source_cleanup(s, &r, f);
    return;
}

fail:
    if (s->src.rp_thread) {
        /* The reader goes before the fd it reads is closed. */
        shutdown(qemu_file_fd(f), SHUT_RDWR);
        source_rp_join(s);
    }
    if (__atomic_load_n(&s->src.rp_shut, __ATOMIC_SEQ_CST) > 0 && !cancelled(s)) {
        g_clear_error(&err);
        source_rp_error(s, &err);   /* the destination said why */
    }
    if (!err && qemu_file_error(f) && !cancelled(s) && !migration_tls_enabled(s) &&
        channel_peer_sent_tls(qemu_file_fd(f))) {
        g_set_error(&err, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "the destination answered with a TLS alert: it expects "
                    "TLS (set tls-creds on this side too)");
    }
    if (!err && qemu_file_error(f) && !cancelled(s)) {
        /* Name what could not be written: a file, a command, a socket. */
        g_autofree char *what = g_str_has_prefix(uri, "file:")
            ? g_strdup_printf("file '%.*s'", (int)strcspn(uri + 5, ","), uri + 5)
            : g_strdup(g_str_has_prefix(uri, "exec:") ? "the command" : "socket");
        g_set_error(&err, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "Unable to write to %s: %s", what,
                    g_strerror(-qemu_file_error(f)));
    }
    migration_close_stream(s, &s->src.stream_fd, f);
    kvm_set_dirty_log(&m->kvm, m->ram, false, NULL);
    mapped_ram_cleanup(&mapped);
    ram_saver_cleanup(&r);
    set_throttle(s, 0);
    if (stopped) {
        migration_call_main(s, migration_restart_vm, &stop);
    }
    __atomic_store_n(&s->end_ms, migration_now_ms(), __ATOMIC_SEQ_CST);
    if (cancelled(s)) {
        migrate_set_state(s, MIGRATION_STATUS_CANCELLING,
                          MIGRATION_STATUS_CANCELLED);
    } else {
        migration_set_error(s, err ? err->message : "migration failed");
        /* Before the switch, or at it before the destination ran the
         * guest (postcopy_run): ours runs on. */
        migrate_set_state_from(s, (const MigrationStatus[]) {
            MIGRATION_STATUS_SETUP, MIGRATION_STATUS_ACTIVE,
            MIGRATION_STATUS_PRE_SWITCHOVER, MIGRATION_STATUS_DEVICE,
            MIGRATION_STATUS_POSTCOPY_ACTIVE, MIGRATION_STATUS__MAX },
            MIGRATION_STATUS_FAILED);
    }
    return;
}

/* ---- QMP ------------------------------------------------------------------------------ */

static JsonNode *ret_empty(void)
{
    return qmp_return_empty();
}

bool migration_running(MigrationState *s)
{
    MigrationStatus st = migration_status(s);
    return st == MIGRATION_STATUS_SETUP || st == MIGRATION_STATUS_ACTIVE ||
           st == MIGRATION_STATUS_CANCELLING || st == MIGRATION_STATUS_DEVICE ||
           st == MIGRATION_STATUS_PRE_SWITCHOVER ||
           (st >= MIGRATION_STATUS_POSTCOPY_ACTIVE &&
            st <= MIGRATION_STATUS_POSTCOPY_RECOVER);
}

static JsonNode *qmp_migrate(JsonObject *args, void *opaque, GError **errp)
{
    MigrationState *s = opaque;
    const char *uri = json_object_get_string_member(args, "uri");

    if (!s->m->ram) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "The 'none' machine has no guest to migrate");
        return NULL;
    }
    if (json_object_get_boolean_member_with_default(args, "resume", false)) {
        return migration_resume(s, uri, errp);
    }
    if (s->dst.incoming) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Guest is waiting for an incoming migration");
        return NULL;
    }
    if (s->quitting) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "The process is shutting down");
        return NULL;
    }
    if (migration_running(s)) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "There's a migration process in progress");
        return NULL;
    }
    if (s->m->state != RUN_STATE_RUNNING && s->m->state != RUN_STATE_PAUSED &&
        s->m->state != RUN_STATE_PRELAUNCH) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Migration is not possible in run state %s",
                    runstate_name(s->m->state));
        return NULL;
    }
    if (migrate_cap(s, "background-snapshot") &&
        !g_str_has_prefix(uri, "file:") && !g_str_has_prefix(uri, "exec:")) {
        /* Its guest would run on there from the snapshot's moment while
         * this one runs on: the same guest in two places. */
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Background-snapshot saves to file: or exec:, not to a "
                    "running destination");
        return NULL;
    }
    if (!g_str_has_prefix(uri, "file:") && migrate_cap(s, "mapped-ram")) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Migration requires seekable transport (e.g. file)");
        return NULL;
    }
    if (migration_param_bool(s, "direct-io") && !migrate_cap(s, "mapped-ram")) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "direct-io needs the mapped-ram capability");
        return NULL;
    }
    if (!migration_tls_uri_ok(s, uri, errp)) {
        return NULL;
    }
    if ((g_str_has_prefix(uri, "file:") || g_str_has_prefix(uri, "exec:")) &&
        migrate_cap(s, "return-path")) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Return path is not supported with %.5s migration", uri);
        return NULL;
    }
    bool after_pass1 = json_object_get_boolean_member_with_default(
        args, "x-postcopy-after-pass1", false);
    bool no_push = json_object_get_boolean_member_with_default(
        args, "x-postcopy-no-push", false);
    if ((after_pass1 || no_push) && !migrate_cap(s, "postcopy-ram")) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Enable postcopy with migrate_set_capability before the "
                    "start of migration");
        return NULL;
    }
    if (!migration_postcopy_uri_ok(s, uri, errp)) {
        return NULL;
    }
    if (migrate_cap(s, "postcopy-ram") &&
        s->m->ram->page_size > (uint64_t)STREAM_MAX_RUN * TARGET_PAGE_SIZE) {
        /* A page request carries at most STREAM_MAX_RUN 4 KiB pages (the
         * destination refuses such a block at advise too). */
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Postcopy is not supported with %" G_GUINT64_FORMAT
                    " GiB huge pages (RAM block '%s'); use 2 MiB pages",
                    s->m->ram->page_size >> 30, s->m->ram->name);
        return NULL;
    }
    int fd = g_str_has_prefix(uri, "fd:") ? qmp_take_fd(s->qmp, uri + 3, errp)
                                          : channel_connect(uri, errp);
    if (fd < 0) {
        return NULL;
    }
    if (g_str_has_prefix(uri, "fd:")) {
        channel_tune(fd);
        channel_keepalive_default(fd);
    }
    if (s->src.thread) {
        g_thread_join(s->src.thread);
        s->src.thread = NULL;
    }
    g_mutex_lock(&s->lock);
    g_clear_pointer(&s->error, g_free);
    g_mutex_unlock(&s->lock);
    memset(&s->stats, 0, sizeof(s->stats));
    s->setup_ms = s->end_ms = s->downtime_ms = s->expected_downtime_ms = 0;
    g_mutex_lock(&s->lock);
    g_clear_pointer(&s->src.autosw.reason, g_free);
    s->src.autosw.verdict = NULL;
    g_mutex_unlock(&s->lock);
    __atomic_store_n(&s->src.postcopy_start, 0, __ATOMIC_SEQ_CST);
    s->src.postcopy_after_pass1 = after_pass1;
    s->src.postcopy_no_push = no_push;
    if (s->dst.pci) {
        /* An earlier incoming postcopy's statistics: this is a source now. */
        __atomic_store_n(&s->dst.preempt_ready, 0, __ATOMIC_SEQ_CST);
        postcopy_incoming_cleanup(s->dst.pci);
        g_clear_pointer(&s->dst.pci, g_free);
    }
    s->src.rp_refused = 0;
    /* Names this migration's channels to the destination (not a secret:
     * it tells a stray connection from the preempt channel). */
    if (getrandom(s->src.channel_id, sizeof(s->src.channel_id), 0) !=
        sizeof(s->src.channel_id)) {
        for (size_t i = 0; i < sizeof(s->src.channel_id); i++) {
            s->src.channel_id[i] = g_random_int();
        }
    }
    s->start_ms = migration_now_ms();
    __atomic_store_n(&s->src.cancel, 0, __ATOMIC_SEQ_CST);
    g_mutex_lock(&s->lock);
    s->src.stream_fd = fd;
    g_mutex_unlock(&s->lock);
    /* From the end of the last migration, either side's, or none. */
    if (!migrate_set_state_from(s, (const MigrationStatus[]) {
            MIGRATION_STATUS_NONE, MIGRATION_STATUS_COMPLETED,
            MIGRATION_STATUS_FAILED, MIGRATION_STATUS_CANCELLED,
            MIGRATION_STATUS__MAX }, MIGRATION_STATUS_SETUP)) {
        close(fd);
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "There's a migration process in progress");
        return NULL;
    }
    MigrateArgs *a = g_new0(MigrateArgs, 1);
    a->s = s;
    a->fd = fd;
    a->uri = g_strdup(uri);
    __atomic_fetch_add(&s->threads_live, 1, __ATOMIC_SEQ_CST);
    s->src.thread = g_thread_new(migrate_cap(s, "background-snapshot")
                                 ? "bg_snapshot" : "live_migration",
                                 migration_thread, a);
    return ret_empty();
}

/*
 * Make the migration thread give up: the flag it tests between pages,
 * a wake-up if it waits for migrate-continue, and a shutdown of the
 * stream for a write that blocks.  Any thread.
 */
static void stop_thread(MigrationState *s)
{
    __atomic_store_n(&s->src.cancel, 1, __ATOMIC_SEQ_CST);
    g_mutex_lock(&s->src.continue_lock);
    g_cond_broadcast(&s->src.continue_cond);
    g_mutex_unlock(&s->src.continue_lock);
    migration_shutdown_stream(s, &s->src.stream_fd);
}

void migration_shutdown_stream(MigrationState *s, int *fdp)
{
    g_mutex_lock(&s->lock);
    if (*fdp >= 0) {
        shutdown(*fdp, SHUT_RDWR);
    }
    g_mutex_unlock(&s->lock);
}

void migration_close_stream(MigrationState *s, int *fdp, QEMUFile *f)
{
    g_mutex_lock(&s->lock);
    *fdp = -1;
    g_mutex_unlock(&s->lock);
    qemu_file_close(f);
}

void migration_thread_done(MigrationState *s)
{
    __atomic_fetch_sub(&s->threads_live, 1, __ATOMIC_SEQ_CST);
    g_main_context_wakeup(NULL);
}

static JsonNode *qmp_migrate_cancel(JsonObject *args, void *opaque, GError **errp)
{
    MigrationState *s = opaque;
    (void)args;
    MigrationStatus st = migration_status(s);
    if (!s->dst.incoming && st >= MIGRATION_STATUS_POSTCOPY_ACTIVE &&
        st <= MIGRATION_STATUS_POSTCOPY_RECOVER) {
        /* The guest runs there now: cancelling would lose it. */
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Postcopy migration can't be cancelled");
        return NULL;
    }
    if (!s->dst.incoming && (st == MIGRATION_STATUS_SETUP ||
                         st == MIGRATION_STATUS_ACTIVE ||
                         st == MIGRATION_STATUS_PRE_SWITCHOVER ||
                         st == MIGRATION_STATUS_DEVICE) &&
        migrate_set_state(s, st, MIGRATION_STATUS_CANCELLING)) {
        stop_thread(s);
    }
    return ret_empty();
}

static JsonNode *qmp_migrate_start_postcopy(JsonObject *args, void *opaque,
                                           GError **errp)
{
    MigrationState *s = opaque;
    (void)args;
    MigrationStatus st = migration_status(s);
    if (st == MIGRATION_STATUS_COMPLETED || st == MIGRATION_STATUS_FAILED ||
        st == MIGRATION_STATUS_CANCELLED) {
        return ret_empty();     /* as QEMU: too late is not an error */
    }
    if (!migrate_cap(s, "postcopy-ram")) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Enable postcopy with migrate_set_capability before the "
                    "start of migration");
        return NULL;
    }
    if (s->dst.incoming || st == MIGRATION_STATUS_NONE) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Postcopy must be started after migration has been started");
        return NULL;
    }
    __atomic_store_n(&s->src.postcopy_start, 1, __ATOMIC_SEQ_CST);
    return ret_empty();
}

static JsonNode *qmp_migrate_continue(JsonObject *args, void *opaque,
                                      GError **errp)
{
    MigrationState *s = opaque;
    const char *want = json_object_get_string_member(args, "state");
    MigrationStatus st = migration_status(s);
    if (strcmp(want, migration_status_name(st)) != 0 ||
        st != MIGRATION_STATUS_PRE_SWITCHOVER) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Migration not in expected state: %s",
                    migration_status_name(st));
        return NULL;
    }
    g_mutex_lock(&s->src.continue_lock);
    s->src.continue_posted = true;
    g_cond_broadcast(&s->src.continue_cond);
    g_mutex_unlock(&s->src.continue_lock);
    return ret_empty();
}

static JsonNode *qmp_migrate_incoming(JsonObject *args, void *opaque,
                                      GError **errp)
{
    MigrationState *s = opaque;
    if (s->dst.incoming && !s->dst.incoming_defer) {
        /* -incoming URI: it was started with the process (QEMU's words). */
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "The incoming migration has already been started");
        return NULL;
    }
    if (!s->dst.incoming_defer) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "'-incoming' was not specified on the command line");
        return NULL;
    }
    if (migration_status(s) != MIGRATION_STATUS_NONE) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "The incoming migration has already been started");
        return NULL;
    }
    if (json_object_has_member(args, "exit-on-error")) {
        s->dst.exit_on_error = json_object_get_boolean_member(args, "exit-on-error");
    }
    if (!migration_incoming_start(s, json_object_get_string_member(args, "uri"), errp)) {
        return NULL;
    }
    return ret_empty();
}

static JsonObject *ram_info(MigrationState *s)
{
    MigrationStats *st = &s->stats;
    uint64_t transferred = __atomic_load_n(&st->transferred, __ATOMIC_RELAXED);
    uint64_t normal = __atomic_load_n(&st->normal_pages, __ATOMIC_RELAXED);
    uint64_t bw = __atomic_load_n(&st->bandwidth, __ATOMIC_RELAXED);
    JsonObject *r = json_object_new();

    json_object_set_int_member(r, "transferred", transferred);
    json_object_set_int_member(r, "remaining",
                               __atomic_load_n(&st->remaining_pages,
                                               __ATOMIC_RELAXED) * TARGET_PAGE_SIZE);
    json_object_set_int_member(r, "total", s->m->ram->size);
    json_object_set_int_member(r, "duplicate",
                               __atomic_load_n(&st->zero_pages, __ATOMIC_RELAXED));
    json_object_set_int_member(r, "skipped", 0);
    json_object_set_int_member(r, "normal", normal);
    json_object_set_int_member(r, "normal-bytes", normal * TARGET_PAGE_SIZE);
    json_object_set_int_member(r, "dirty-pages-rate",
                               __atomic_load_n(&st->dirty_pages_rate,
                                               __ATOMIC_RELAXED));
    json_object_set_double_member(r, "mbps", bw * 8 / 1e6);
    json_object_set_int_member(r, "dirty-sync-count",
                               __atomic_load_n(&st->dirty_sync_count,
                                               __ATOMIC_RELAXED));
    json_object_set_int_member(r, "postcopy-requests",
                               __atomic_load_n(&st->postcopy_requests,
                                               __ATOMIC_RELAXED));
    json_object_set_int_member(r, "page-size", TARGET_PAGE_SIZE);
    json_object_set_int_member(r, "multifd-bytes", 0);
    json_object_set_int_member(r, "pages-per-second",
                               __atomic_load_n(&st->pages_per_second,
                                               __ATOMIC_RELAXED));
    uint64_t downtime_bytes = __atomic_load_n(&st->downtime_bytes,
                                              __ATOMIC_RELAXED);
    uint64_t pc0 = __atomic_load_n(&st->postcopy_start_bytes, __ATOMIC_RELAXED);
    uint64_t postcopy_bytes =
        __atomic_load_n(&st->postcopy_started, __ATOMIC_ACQUIRE) ? transferred - pc0 : 0;
    json_object_set_int_member(r, "precopy-bytes",
                               transferred - downtime_bytes - postcopy_bytes);
    json_object_set_int_member(r, "downtime-bytes", downtime_bytes);
    json_object_set_int_member(r, "postcopy-bytes", postcopy_bytes);
    json_object_set_int_member(r, "dirty-sync-missed-zero-copy", 0);
    return r;
}

/* x-postcopy-working-set's figures, in 4 KiB pages (docs/postcopy.md). */
static JsonObject *working_set_info(MigrationStats *st)
{
    JsonObject *w = json_object_new();
    json_object_set_int_member(w, "ranked",
                               __atomic_load_n(&st->ws_ranked, __ATOMIC_RELAXED));
    json_object_set_int_member(w, "hot-pushed",
                               __atomic_load_n(&st->ws_hot_pushed, __ATOMIC_RELAXED));
    json_object_set_int_member(w, "near-pushed",
                               __atomic_load_n(&st->ws_near_pushed, __ATOMIC_RELAXED));
    return w;
}

static JsonNode *qmp_query_migrate(JsonObject *args, void *opaque, GError **errp)
{
    MigrationState *s = opaque;
    MigrationStatus st = migration_status(s);
    JsonObject *r = json_object_new();
    (void)args;
    (void)errp;

    if (st == MIGRATION_STATUS_NONE) {
        return qmp_return_object(r);
    }
    json_object_set_string_member(r, "status", migration_status_name(st));
    if (s->dst.incoming || s->dst.pci) {
        if (s->dst.socket_address && s->dst.incoming) {
            json_object_set_array_member(r, "socket-address",
                                         json_array_ref(s->dst.socket_address));
        }
        if (s->dst.pci && migrate_cap(s, "postcopy-blocktime")) {
            postcopy_stats(s->dst.pci, r);
        }
    } else if (st != MIGRATION_STATUS_SETUP) {
        int64_t end = __atomic_load_n(&s->end_ms, __ATOMIC_SEQ_CST);
        json_object_set_int_member(r, "setup-time",
                                   __atomic_load_n(&s->setup_ms, __ATOMIC_SEQ_CST));
        json_object_set_int_member(r, "total-time",
                                   (end ? end : migration_now_ms()) - s->start_ms);
        if (st == MIGRATION_STATUS_COMPLETED ||
            (st >= MIGRATION_STATUS_POSTCOPY_ACTIVE &&
             st <= MIGRATION_STATUS_POSTCOPY_RECOVER)) {
            json_object_set_int_member(r, "downtime",
                                       __atomic_load_n(&s->downtime_ms,
                                                       __ATOMIC_SEQ_CST));
        } else {
            json_object_set_int_member(r, "expected-downtime",
                                       __atomic_load_n(&s->expected_downtime_ms,
                                                       __ATOMIC_SEQ_CST));
        }
        json_object_set_object_member(r, "ram", ram_info(s));
        int pct = __atomic_load_n(&s->src.throttle_pct, __ATOMIC_SEQ_CST);
        if (pct) {
            json_object_set_int_member(r, "cpu-throttle-percentage", pct);
        }
    }
    if (!s->dst.incoming && migrate_cap(s, "x-postcopy-working-set") &&
        __atomic_load_n(&s->stats.postcopy_started, __ATOMIC_ACQUIRE)) {
        json_object_set_object_member(r, "x-postcopy-working-set",
                                      working_set_info(&s->stats));
    }
    g_mutex_lock(&s->lock);
    if (s->src.autosw.verdict && !s->dst.incoming) {
        JsonObject *a = json_object_new();
        json_object_set_string_member(a, "verdict", s->src.autosw.verdict);
        json_object_set_string_member(a, "reason", s->src.autosw.reason);
        json_object_set_int_member(a, "pass", s->src.autosw.pass);
        json_object_set_int_member(a, "time", s->src.autosw.time_ms);
        json_object_set_object_member(r, "x-postcopy-auto", a);
    }
    if (s->error) {
        json_object_set_string_member(r, "error-desc", s->error);
    }
    g_mutex_unlock(&s->lock);
    return qmp_return_object(r);
}

bool migration_init(MigrationState *s, Machine *m, QmpDispatcher *d,
                    const char *incoming, GError **errp)
{
    s->m = m;
    s->qmp = d;
    s->status = MIGRATION_STATUS_NONE;
    s->dst.listen_fd = -1;
    s->src.stream_fd = -1;
    s->dst.incoming_fd = -1;
    s->src.preempt_fd = -1;
    s->src.resume_fd = -1;
    s->dst.preempt_fd = -1;
    s->dst.exit_on_error = true;
    g_mutex_init(&s->lock);
    g_mutex_init(&s->status_lock);
    g_cond_init(&s->status_cond);
    g_mutex_init(&s->src.continue_lock);
    g_cond_init(&s->src.continue_cond);
    g_mutex_init(&s->dst.run_lock);
    g_cond_init(&s->dst.run_cond);
    g_mutex_init(&s->src.rp_lock);
    g_cond_init(&s->src.rp_cond);
    s->src.rp_shut = -1;
    migration_options_register(s, d);
    qmp_register(d, "migrate", qmp_migrate, s);
    qmp_register(d, "migrate_cancel", qmp_migrate_cancel, s);
    qmp_register(d, "migrate-pause", qmp_migrate_pause, s);
    qmp_register(d, "migrate-recover", qmp_migrate_recover, s);
    qmp_register(d, "migrate-continue", qmp_migrate_continue, s);
    qmp_register(d, "migrate-start-postcopy", qmp_migrate_start_postcopy, s);
    qmp_register(d, "migrate-incoming", qmp_migrate_incoming, s);
    qmp_register(d, "query-migrate", qmp_query_migrate, s);
    if (!incoming) {
        return true;
    }
    s->dst.incoming = true;
    if (!strcmp(incoming, "defer")) {
        s->dst.incoming_defer = true;
        return true;
    }
    g_autoptr(GError) err = NULL;
    if (!migration_incoming_start(s, incoming, &err)) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "-incoming %s: %s",
                    incoming, err->message);
        return false;
    }
    return true;
}

/*
 * The process ends (quit, a signal, the guest's exit): every migration
 * thread is told to stop and joined before anything it uses is freed.
 * They may wait on the main thread meanwhile (migration_call_main, the
 * destination's RUN), so the main context runs until the last is done.
 * Before, they were left running, and read freed memory (migrate_cap in
 * the load thread when the guest exited by itself; the fault thread on
 * quit).  Main thread.
 */
void migration_cleanup(MigrationState *s)
{
    if (!s->m) {
        return;
    }
    s->quitting = true;         /* no migrate while they finish */
    if (s->src.thread) {
        stop_thread(s);
    }
    migration_incoming_stop(s);
    while (__atomic_load_n(&s->threads_live, __ATOMIC_SEQ_CST) > 0) {
        g_main_context_iteration(NULL, TRUE);
    }
    if (s->src.thread) {
        g_thread_join(s->src.thread);
        s->src.thread = NULL;
    }
    migration_incoming_cleanup(s);
    g_free(s->caps);
    if (s->params) {
        json_object_unref(s->params);
    }
    g_free(s->error);
    g_free(s->src.rp_reason);
    g_free(s->src.autosw.reason);
    bitmap_free(s->src.rp_bitmap);
    if (s->src.resume_fd >= 0) {
        close(s->src.resume_fd);        /* posted as the process ended */
    }
    g_free(s->src.resume_uri);
}
