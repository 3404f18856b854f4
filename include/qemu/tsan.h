/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Happens-before edges that ThreadSanitizer cannot see by itself: data
 * handed from a thread to the main loop goes through GLib's own locks
 * (g_idle_add, main_loop_post), which are not instrumented.  The
 * sender releases the object before queueing it, the callback acquires
 * it first.  No-ops in every other build.
 */
#ifndef QEMU_TSAN_H
#define QEMU_TSAN_H

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define TSAN_RELEASE(p) __tsan_release(p)
#define TSAN_ACQUIRE(p) __tsan_acquire(p)
#else
#define TSAN_RELEASE(p) do { (void)(p); } while (0)
#define TSAN_ACQUIRE(p) do { (void)(p); } while (0)
#endif

#endif
