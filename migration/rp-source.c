/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The source's return-path thread ("mig/src/rp"), from the start of a
 * migration with a return path to its end, in precopy as in postcopy:
 * page requests (after the switch), RUNNING, PONG, the destination's
 * reason for a failure and its SHUT.  The contract is in
 * migration-int.h.
 *
 * Read all along, the return path tells the source at once that the
 * destination failed, and why: before, precopy read it only at its
 * end, and a destination that had failed went unnoticed while its
 * connection stopped draining (/migration/failure/destination-fails).
 * On a failed SHUT, or the end of the return path before SHUT, the
 * thread shuts the stream down so that the migration thread's next
 * write fails, rather than on the peer's reset.
 */
#include "migration-int.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>

#include "migration/postcopy-ram.h"
#include "migration/qemu-file.h"
#include "migration/ram.h"
#include "migration/return-path.h"
#include "qemu/bitmap.h"
#include "qemu/thread-prio.h"

/*
 * Postcopy's watch on the destination (POSTCOPY_HEARTBEAT_MS): once it
 * has sent a heartbeat on this connection and postcopy runs (the saver
 * attached), wait at most @stall_ms for its next message.  False when
 * none came: said as the migration's error, the stream shut down, and
 * postcopy pauses (the push sees the return path end).
 */
static bool rp_wait_input(MigrationState *s, QEMUFile *rp, int64_t stall_ms,
                          int64_t last_ms)
{
    if (!stall_ms || qemu_file_pending(rp) ||
        !__atomic_load_n(&s->src.saver, __ATOMIC_ACQUIRE)) {
        return true;
    }
    struct pollfd p = { .fd = s->src.rp_fd, .events = POLLIN };
    for (;;) {
        int64_t left = last_ms + stall_ms - migration_now_ms();
        int r = left > 0 ? poll(&p, 1, (int)left) : 0;
        if (r > 0 || (r < 0 && errno != EINTR)) {
            return true;        /* the read says what came */
        }
        if (r == 0) {
            break;
        }
    }
    g_autofree char *msg = g_strdup_printf(
        "postcopy: nothing came from the destination for %" G_GINT64_FORMAT
        " ms (x-postcopy-stall-timeout): the network or the destination "
        "stopped answering", migration_now_ms() - last_ms);
    migration_set_error(s, msg);
    shutdown(s->src.rp_fd, SHUT_RDWR);
    return false;
}

static gpointer rp_thread(gpointer opaque)
{
    MigrationState *s = opaque;
    RAMBlock *rb = s->m->ram;
    QEMUFile *rp = qemu_file_new(s->src.rp_fd, false, false);
    int64_t stall_ms = migration_param_u64(s, "x-postcopy-stall-timeout");
    bool heartbeats = false;    /* the destination sends them */
    int64_t last_ms = migration_now_ms();
    /* Page requests are read (and with preempt served) here: see
     * FAULT_PATH_RT_PRIO.  The thread blocks on the socket otherwise. */
    thread_set_fifo(FAULT_PATH_RT_PRIO);

    for (;;) {
        RPMessage m;
        g_autoptr(GError) err = NULL;
        if (heartbeats && !rp_wait_input(s, rp, stall_ms, last_ms)) {
            break;
        }
        bool ok = rp_get(rp, &m, &err);
        last_ms = migration_now_ms();
        if (ok && m.type == RP_PONG && m.id == RP_HEARTBEAT_ID) {
            heartbeats = true;
            continue;
        }
        if (!ok) {
            if (!qemu_file_error(rp)) {
                g_warning("%s", err->message);      /* unknown message */
            }
            break;
        }
        if (m.type == RP_REQ_PAGES) {
            /* Requests come only after the switch, once the saver is
             * attached; one before, or outside the block, is refused. */
            RAMSaver *r = __atomic_load_n(&s->src.saver, __ATOMIC_ACQUIRE);
            if (!r) {
                g_set_error(&err, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                            "return path: refused a page request before "
                            "postcopy");
            }
            if (!r || !rp_check_request(rb, m.off, m.count, &err)) {
                __atomic_fetch_add(&s->src.rp_refused, 1, __ATOMIC_RELAXED);
                g_warning("%s", err->message);
                continue;
            }
            if (!ram_postcopy_request(r, m.off / TARGET_PAGE_SIZE, m.count)) {
                break;          /* the preempt channel broke */
            }
        } else if (m.type == RP_RUNNING) {
            __atomic_store_n(&s->src.rp_running, 1, __ATOMIC_SEQ_CST);
            int64_t stop = __atomic_load_n(&s->src.stop_ms, __ATOMIC_SEQ_CST);
            __atomic_store_n(&s->downtime_ms, migration_now_ms() - stop,
                             __ATOMIC_SEQ_CST);
        } else if (m.type == RP_PONG && PUSH_MARK_IS(m.id)) {
            /* The push's mark: it may go on (ram.h, x-postcopy-push-window). */
            RAMSaver *r = __atomic_load_n(&s->src.saver, __ATOMIC_ACQUIRE);
            if (r) {
                ram_postcopy_acked(r, m.id);
            }
        } else if (m.type == RP_PONG) {
            g_mutex_lock(&s->src.rp_lock);
            s->src.rp_pong = m.id;
            g_cond_broadcast(&s->src.rp_cond);
            g_mutex_unlock(&s->src.rp_lock);
        } else if (m.type == RP_RECV_BITMAP) {
            /* Recovery: what the destination has; the migration thread
             * waits for it (source_rp_wait_bitmap). */
            if (strcmp(m.text, rb->name) != 0 ||
                m.npages != rb->size / TARGET_PAGE_SIZE) {
                g_warning("return path: a received-pages bitmap of %"
                          G_GUINT64_FORMAT " pages for block '%s' (this one "
                          "is '%s', %" G_GUINT64_FORMAT " pages)", m.npages,
                          m.text, rb->name, rb->size / TARGET_PAGE_SIZE);
                bitmap_free(m.bitmap);
                break;
            }
            g_mutex_lock(&s->src.rp_lock);
            bitmap_free(s->src.rp_bitmap);
            s->src.rp_bitmap = m.bitmap;
            g_cond_broadcast(&s->src.rp_cond);
            g_mutex_unlock(&s->src.rp_lock);
        } else if (m.type == RP_RESUME_ACK) {
            /* As QEMU: the source is back in postcopy-active here. */
            migrate_set_state(s, MIGRATION_STATUS_POSTCOPY_RECOVER,
                              MIGRATION_STATUS_POSTCOPY_ACTIVE);
            g_mutex_lock(&s->src.rp_lock);
            s->src.rp_resumed = true;
            g_cond_broadcast(&s->src.rp_cond);
            g_mutex_unlock(&s->src.rp_lock);
        } else if (m.type == RP_REASON) {
            g_mutex_lock(&s->src.rp_lock);
            g_free(s->src.rp_reason);
            s->src.rp_reason = g_strdup(m.text);
            g_mutex_unlock(&s->src.rp_lock);
        } else {
            __atomic_store_n(&s->src.rp_shut, (int)m.status, __ATOMIC_SEQ_CST);
            break;
        }
    }
    if (__atomic_load_n(&s->src.rp_shut, __ATOMIC_SEQ_CST) != 0) {
        shutdown(s->src.rp_fd, SHUT_RDWR);
    }
    qemu_file_close(rp);
    g_mutex_lock(&s->src.rp_lock);
    s->src.rp_gone = true;
    RAMSaver *r = s->src.saver;
    g_cond_broadcast(&s->src.rp_cond);
    g_mutex_unlock(&s->src.rp_lock);
    if (r) {
        __atomic_store_n(&r->rp_ended, 1, __ATOMIC_RELEASE);
        ram_postcopy_wake(r);
    }
    return NULL;
}

void source_rp_start(MigrationState *s, int fd, bool resume)
{
    s->src.rp_fd = fd;
    s->src.rp_pong = 0;
    s->src.rp_gone = false;
    s->src.rp_resumed = false;
    g_clear_pointer(&s->src.rp_bitmap, bitmap_free);
    g_clear_pointer(&s->src.rp_reason, g_free);
    __atomic_store_n(&s->src.saver, NULL, __ATOMIC_RELEASE);
    __atomic_store_n(&s->src.rp_shut, -1, __ATOMIC_SEQ_CST);
    if (!resume) {
        /* A resumed postcopy keeps it: the guest has run there. */
        __atomic_store_n(&s->src.rp_running, 0, __ATOMIC_SEQ_CST);
    }
    s->src.rp_thread = g_thread_new("mig/src/rp", rp_thread, s);
}

bool source_rp_wait_pong(MigrationState *s, uint32_t id, GError **errp)
{
    g_mutex_lock(&s->src.rp_lock);
    while (s->src.rp_pong != id && !s->src.rp_gone) {
        g_cond_wait(&s->src.rp_cond, &s->src.rp_lock);
    }
    bool ok = s->src.rp_pong == id;
    g_mutex_unlock(&s->src.rp_lock);
    if (!ok) {
        source_rp_error(s, errp);
    }
    return ok;
}

unsigned long *source_rp_wait_bitmap(MigrationState *s, GError **errp)
{
    g_mutex_lock(&s->src.rp_lock);
    while (!s->src.rp_bitmap && !s->src.rp_gone) {
        g_cond_wait(&s->src.rp_cond, &s->src.rp_lock);
    }
    unsigned long *map = g_steal_pointer(&s->src.rp_bitmap);
    g_mutex_unlock(&s->src.rp_lock);
    if (!map) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "postcopy recovery: the destination closed the return "
                    "path before its received-pages bitmap");
    }
    return map;
}

bool source_rp_wait_resumed(MigrationState *s, GError **errp)
{
    g_mutex_lock(&s->src.rp_lock);
    while (!s->src.rp_resumed && !s->src.rp_gone) {
        g_cond_wait(&s->src.rp_cond, &s->src.rp_lock);
    }
    bool ok = s->src.rp_resumed;
    g_mutex_unlock(&s->src.rp_lock);
    if (!ok) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "postcopy recovery: the destination closed the return "
                    "path before it acknowledged the resume");
    }
    return ok;
}

void source_rp_attach_saver(MigrationState *s, RAMSaver *r)
{
    g_mutex_lock(&s->src.rp_lock);
    __atomic_store_n(&s->src.saver, r, __ATOMIC_RELEASE);
    bool gone = s->src.rp_gone;
    g_mutex_unlock(&s->src.rp_lock);
    if (gone) {
        /* Ended already: the push must not wait for requests. */
        __atomic_store_n(&r->rp_ended, 1, __ATOMIC_RELEASE);
    }
}

int source_rp_join(MigrationState *s)
{
    if (s->src.rp_thread) {
        g_thread_join(s->src.rp_thread);
        s->src.rp_thread = NULL;
    }
    __atomic_store_n(&s->src.saver, NULL, __ATOMIC_RELEASE);
    return __atomic_load_n(&s->src.rp_shut, __ATOMIC_SEQ_CST);
}

void source_rp_error(MigrationState *s, GError **errp)
{
    int shut = __atomic_load_n(&s->src.rp_shut, __ATOMIC_SEQ_CST);
    g_mutex_lock(&s->src.rp_lock);
    if (shut > 0) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "the destination failed to load the migration%s%s",
                    s->src.rp_reason ? ": " : "",
                    s->src.rp_reason ? s->src.rp_reason : "");
    } else {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "the destination closed the return path%s",
                    shut == 0 ? " after its SHUT" : " without an answer");
    }
    g_mutex_unlock(&s->src.rp_lock);
}
