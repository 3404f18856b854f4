/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Force-included in the ThreadSanitizer build (meson/tsan.ini): GLib's
 * GMutex is a futex of its own on Linux, which ThreadSanitizer cannot
 * see, so every access guarded by one would be reported as a race.  The
 * lock, unlock and condition-wait calls are annotated here with
 * ThreadSanitizer's mutex interface, so that they order accesses as the
 * real locks do.  Nothing of this is in any other build.
 */
#ifndef FERRY_TSAN_GLIB_H
#define FERRY_TSAN_GLIB_H

#include <glib.h>
#include <sanitizer/tsan_interface.h>

static inline void tsan_acquired(GMutex *m)
{
    __tsan_mutex_pre_lock(m, 0);
    __tsan_mutex_post_lock(m, 0, 0);
}

static inline void tsan_releasing(GMutex *m)
{
    __tsan_mutex_pre_unlock(m, 0);
    __tsan_mutex_post_unlock(m, 0);
}

static inline void tsan_g_mutex_lock(GMutex *m)
{
    (g_mutex_lock)(m);
    tsan_acquired(m);
}

static inline void tsan_g_mutex_unlock(GMutex *m)
{
    tsan_releasing(m);
    (g_mutex_unlock)(m);
}

static inline gboolean tsan_g_mutex_trylock(GMutex *m)
{
    gboolean ok = (g_mutex_trylock)(m);
    if (ok) {
        tsan_acquired(m);
    }
    return ok;
}

static inline void tsan_g_cond_wait(GCond *c, GMutex *m)
{
    tsan_releasing(m);
    (g_cond_wait)(c, m);
    tsan_acquired(m);
}

static inline gboolean tsan_g_cond_wait_until(GCond *c, GMutex *m, gint64 t)
{
    tsan_releasing(m);
    gboolean r = (g_cond_wait_until)(c, m, t);
    tsan_acquired(m);
    return r;
}

/* A mutex's life: one at the same address later (a MainCall on a stack)
 * is a new one. */
static inline void tsan_g_mutex_init(GMutex *m)
{
    (g_mutex_init)(m);
    __tsan_mutex_create(m, 0);
}

static inline void tsan_g_mutex_clear(GMutex *m)
{
    __tsan_mutex_destroy(m, 0);
    (g_mutex_clear)(m);
}

#define g_mutex_init(m)             tsan_g_mutex_init(m)
#define g_mutex_clear(m)            tsan_g_mutex_clear(m)
#define g_mutex_lock(m)             tsan_g_mutex_lock(m)
#define g_mutex_unlock(m)           tsan_g_mutex_unlock(m)
#define g_mutex_trylock(m)          tsan_g_mutex_trylock(m)
#define g_cond_wait(c, m)           tsan_g_cond_wait(c, m)
#define g_cond_wait_until(c, m, t)  tsan_g_cond_wait_until(c, m, t)

#endif
