/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Internal to migration/: what the state machine, the source and QMP
 * (migration.c) share with the destination (incoming.c).  Not for the
 * rest of ferry, which uses include/migration/migration.h.
 */
#ifndef MIGRATION_MIGRATION_INT_H
#define MIGRATION_MIGRATION_INT_H

#include <stdint.h>

#include <glib.h>

#include "migration/migration.h"
#include "migration/qemu-file.h"

/*
 * Postcopy's backlog bound on the source: a page the push has already
 * claimed comes on the main stream behind what is queued there, so the
 * source keeps at most this much unsent (TCP_NOTSENT_LOWAT).  What
 * queues at the destination is bounded by x-postcopy-push-window
 * (include/migration/ram.h).
 */
#define PUSH_BACKLOG    (128 << 10)

/* x-postcopy-stall-timeout's default (include/migration/postcopy-ram.h):
 * with the heartbeat every 250 ms, a silent peer is noticed within 5 s. */
#define POSTCOPY_STALL_TIMEOUT_MS   4000

/*
 * migration_set_rate: migration thread; from now the limit is parameter
 * @param's ("max-bandwidth", "max-postcopy-bandwidth"), or none (NULL),
 * and follows migrate-set-parameters.
 */
void migration_set_rate(MigrationState *s, const char *param);

/* migration_rate_update_locked: the limit in force from the parameters,
 * after migrate-set-parameters; under MigrationState.lock. */
void migration_rate_update_locked(MigrationState *s);

/* migration_param_u64: integer parameter @name; migration_param_bool: a
 * boolean one (false if unset).  Any thread. */
uint64_t migration_param_u64(MigrationState *s, const char *name);
bool migration_param_bool(MigrationState *s, const char *name);

/* migration_param_str: string parameter @name, a copy ("" if unset). */
char *migration_param_str(MigrationState *s, const char *name);

/*
 * TLS (migration/tls.c, docs/tls.md).  migration_tls_enabled: tls-creds
 * is set.  migration_tls_connect: the source's side of a connection
 * @fd to @uri, on the thread that will use it: with tls-creds set, the
 * handshake and the checks, at most CHANNEL_CONNECT_TIMEOUT_S, and the
 * session attached to @fd; true at once without.  @what names the
 * channel in the error ("preempt channel"; NULL for the main one).  migration_tls_accept: the
 * destination's server session for accepted @fd (not yet handshaken),
 * NULL without TLS, or NULL with @errp.
 */
bool migration_tls_enabled(MigrationState *s);
bool migration_tls_connect(MigrationState *s, int fd, const char *uri,
                           const char *what, GError **errp);
struct TlsSession *migration_tls_accept(MigrationState *s, int fd, GError **errp);
/* migration_tls_uri_ok: refuses file: and exec: while tls-creds is set
 * (TLS is for sockets; never a silent plaintext copy). */
bool migration_tls_uri_ok(MigrationState *s, const char *uri, GError **errp);

/* Milliseconds on g_get_monotonic_time()'s clock: MigrationState's times. */
static inline int64_t migration_now_ms(void)
{
    return g_get_monotonic_time() / 1000;
}

typedef struct RAMSaver RAMSaver;

/* migration_status: the state now (atomic read).  Any thread. */
MigrationStatus migration_status(MigrationState *s);

/*
 * migration_wait_leave: wait until the status is none of @from (ended by
 * MIGRATION_STATUS__MAX), at most @bound_ms; whether it left.  Any
 * thread; in the main thread only with a short bound, since a thread
 * changing the status may first wait on it (migration_call_main).
 */
bool migration_wait_leave(MigrationState *s, const MigrationStatus *from,
                          int bound_ms);

/*
 * migration_running: a migration is under way on this side, outgoing or
 * incoming, postcopy-paused included (QEMU's migration_is_running).
 */
bool migration_running(MigrationState *s);

/* migration_set_error: query-migrate's error-desc, unless one was set
 * before (the first error is the one that counts).  Any thread. */
void migration_set_error(MigrationState *s, const char *msg);

/*
 * migration_push_nice: the nice of a thread that pushes or places
 * background pages while requested pages go ahead of them: 0 where the
 * fault path's threads run SCHED_FIFO (they preempt it anyway), else 10.
 * The calling thread's class is left as it was.
 */
int migration_push_nice(void);

/*
 * migration_shutdown_stream: shut down the stream's fd *@fdp (both ways)
 * if it is still open, so a thread blocked on it returns.  Any thread.
 * migration_close_stream: the owning thread closes it: *@fdp is -1 first,
 * under the same lock, so a shutdown never hits a reused number.
 */
void migration_shutdown_stream(MigrationState *s, int *fdp);
void migration_close_stream(MigrationState *s, int *fdp, QEMUFile *f);

/* migration_thread_done: the last thing a migration or load thread does
 * (migration_cleanup waits for threads_live to reach 0). */
void migration_thread_done(MigrationState *s);

/*
 * migration_incoming_stop: make the destination's threads end (shut its
 * connections down, stop the fault thread); migration_incoming_cleanup:
 * once they have, join the load thread and free what it kept while
 * paused.  Main thread, from migration_cleanup.
 */
void migration_incoming_stop(MigrationState *s);
void migration_incoming_cleanup(MigrationState *s);

/* ---- The source's migration thread (migration.c) ----------------------- */

/* A stop of the source's guest for the switch, through migration_call_main. */
typedef struct StopCall {
    MigrationState *s;
    RunState before;            /* out: the state when we stopped it */
    RunState target;
} StopCall;

/* migration_stop_vm: main thread (migration_call_main): stop the vCPUs,
 * into @opaque's target state.  migration_restart_vm: run them again if
 * they ran before, when the state is still that target. */
void migration_stop_vm(void *opaque);
void migration_restart_vm(void *opaque);

/* migration_emit: queue QMP event @name (takes @data) for the main
 * thread, after every event queued before.  Any thread. */
void migration_emit(MigrationState *s, const char *name, JsonObject *data);

/*
 * migration_pause_before_switchover: with pause-before-switchover, wait
 * in pre-switchover for migrate-continue (libvirt's cue), then go on in
 * @next.  False when cancelled meanwhile.  Migration thread.
 */
bool migration_pause_before_switchover(MigrationState *s, MigrationStatus next);

/* migration_cancelled: migrate_cancel, or the process ends.  Any thread. */
static inline bool migration_cancelled(MigrationState *s)
{
    return __atomic_load_n(&s->src.cancel, __ATOMIC_SEQ_CST);
}

/* ---- Postcopy on the source (postcopy-source.c) ------------------------- */

/*
 * postcopy_switch: with the guest still running, discard rounds; then
 * stop it, the last discard, LISTEN, the preempt channel, and RUN with
 * the device state.  *@stopped once the guest is stopped.  False, saying
 * why, if it failed before the destination could run the guest (the
 * caller fails the migration and runs its guest again).  Migration thread.
 */
bool postcopy_switch(MigrationState *s, RAMSaver *r, QEMUFile *f,
                     StopCall *stop, bool *stopped, const char *uri,
                     GError **errp);

/*
 * postcopy_run: the push from the switch to the end, through any number
 * of breaks: each pauses (both sides keep everything) until migrate
 * resume=true, and a break during the handshake pauses again.  Returns
 * completed, failed (the destination failed before its guest ran), or
 * postcopy-paused when the process ends while paused.  *@fp is the
 * stream now (the caller closes it; NULL if none), *@uri where it goes.
 */
MigrationStatus postcopy_run(MigrationState *s, RAMSaver *r, QEMUFile **fp,
                             char **uri, GError **errp);

/*
 * migration_postcopy_uri_ok: whether a postcopy, or its resume or
 * recover, can use @uri: postcopy-preempt needs tcp: or unix: (its
 * second channel is connected there), postcopy-ram anything but file:
 * and exec: (no return path); says why not.
 */
bool migration_postcopy_uri_ok(MigrationState *s, const char *uri, GError **errp);

/*
 * migration_resume: QMP migrate resume=true; qmp_migrate_pause: QMP
 * migrate-pause (either side).  Main thread.
 */
JsonNode *migration_resume(MigrationState *s, const char *uri, GError **errp);
JsonNode *qmp_migrate_pause(JsonObject *args, void *opaque, GError **errp);

/* ---- The source's return path (rp-source.c) ---------------------------- */

/* source_rp_start: read the return path on @fd in "mig/src/rp" until it
 * ends.  Migration thread, once the stream has opened it; @resume: on a
 * postcopy's resumed stream (the destination's guest has run). */
void source_rp_start(MigrationState *s, int fd, bool resume);

/* source_rp_wait_bitmap: recovery: wait for RP_RECV_BITMAP and take its
 * bitmap (bitmap_free); NULL, saying why, if the return path ends first. */
unsigned long *source_rp_wait_bitmap(MigrationState *s, GError **errp);

/* source_rp_wait_resumed: recovery: wait for RP_RESUME_ACK (the thread
 * has moved postcopy-recover to postcopy-active); false, saying why, if
 * the return path ends first. */
bool source_rp_wait_resumed(MigrationState *s, GError **errp);

/* source_rp_wait_pong: wait for PONG @id; false, saying why, if the
 * return path ends first (a cancel shuts the stream down: it ends). */
bool source_rp_wait_pong(MigrationState *s, uint32_t id, GError **errp);

/* source_rp_attach_saver: postcopy's page requests go to @r from now. */
void source_rp_attach_saver(MigrationState *s, RAMSaver *r);

/* source_rp_join: wait for the thread to end (the stream must end or be
 * shut down); SHUT's status, or -1 if none came. */
int source_rp_join(MigrationState *s);

/* source_rp_error: why the return path ended badly: the destination's
 * reason when it sent one. */
void source_rp_error(MigrationState *s, GError **errp);

/*
 * Postcopy recovery, the destination: migrate-recover's handler (listen
 * again, or take an fd:, for the paused migration's source), and
 * migrate-pause's (break the connections as a failure would).  Main
 * thread.
 */
JsonNode *qmp_migrate_recover(JsonObject *args, void *opaque, GError **errp);
void migration_incoming_pause(MigrationState *s);

/* migration_incoming_run_guest: the device state is in: run the guest
 * if the source ran it (and -S was not given), else paused.  Main thread. */
void migration_incoming_run_guest(Machine *m, RunState source_state);

/*
 * migration_incoming_start: wait for a migration on @uri (tcp:, unix:,
 * fd:, file:, exec:) and load it in the "mig/dst/load" thread.  Main
 * thread; false with @errp set if @uri cannot be used.
 */
bool migration_incoming_start(MigrationState *s, const char *uri, GError **errp);

#endif
