/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Handing work from a thread to the main loop (GLib's default context).
 * No error path: nothing here can fail.
 *
 * Why not g_idle_add: each call would allocate a GSource in the posting
 * thread that the main thread frees, ordered only by GLib's own context
 * lock, which ThreadSanitizer cannot see (GLib is not instrumented), so
 * every hand-over read as a race.  Here the posting thread allocates
 * nothing of GLib's: it queues under a ferry mutex (annotated in the
 * ThreadSanitizer build, meson/tsan-glib.h) and wakes the context.
 */
#ifndef QEMU_MAIN_LOOP_H
#define QEMU_MAIN_LOOP_H

/* main_loop_init: main thread, once, before any thread posts. */
void main_loop_init(void);

/*
 * main_loop_post: any thread, after main_loop_init; @fn(@opaque) runs
 * once in the main thread, from the default context, at default
 * priority.  Calls run in the order they were posted (one queue for all
 * threads), and each sees everything its poster wrote before posting.
 */
void main_loop_post(void (*fn)(void *opaque), void *opaque);

/*
 * main_loop_run_pending: main thread; runs what is queued now, in order,
 * as the context would next.  A QMP reply goes out after it, so that the
 * events a command caused come before its reply (QEMU's order: libvirt
 * takes a migrate whose MIGRATION "setup" comes after the reply as a
 * job that never became active).
 */
void main_loop_run_pending(void);

/*
 * main_loop_cleanup: main thread, when no thread can post any more;
 * runs what is still queued (nothing posted is dropped), then detaches.
 */
void main_loop_cleanup(void);

#endif
