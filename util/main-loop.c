/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Posting to the main loop; the contract is in include/qemu/main-loop.h. */
#include "qemu/main-loop.h"

#include <stdbool.h>

#include <glib.h>

typedef struct MainPost {
    void (*fn)(void *opaque);
    void *opaque;
} MainPost;

static GMutex post_lock;
static GQueue post_queue = G_QUEUE_INIT;   /* of MainPost, under post_lock */
static GSource *post_src;                  /* main thread */

static bool post_pending(void)
{
    g_mutex_lock(&post_lock);
    bool pending = !g_queue_is_empty(&post_queue);
    g_mutex_unlock(&post_lock);
    return pending;
}

static gboolean post_prepare(GSource *src, gint *timeout)
{
    (void)src;
    *timeout = -1;
    return post_pending();
}

static gboolean post_check(GSource *src)
{
    (void)src;
    return post_pending();
}

/* Runs every call queued so far, without the lock held: a call may post. */
static void post_drain(void)
{
    g_mutex_lock(&post_lock);
    GQueue calls = post_queue;
    g_queue_init(&post_queue);
    g_mutex_unlock(&post_lock);
    MainPost *p;
    while ((p = g_queue_pop_head(&calls))) {
        p->fn(p->opaque);
        g_free(p);
    }
}

static gboolean post_dispatch(GSource *src, GSourceFunc cb, gpointer data)
{
    (void)src, (void)cb, (void)data;
    post_drain();
    return G_SOURCE_CONTINUE;
}

static GSourceFuncs post_funcs = {
    .prepare = post_prepare,
    .check = post_check,
    .dispatch = post_dispatch,
};

void main_loop_init(void)
{
    g_assert(!post_src);
    post_src = g_source_new(&post_funcs, sizeof(GSource));
    g_source_set_static_name(post_src, "main_loop_post");
    g_source_set_priority(post_src, G_PRIORITY_DEFAULT);
    g_source_attach(post_src, NULL);
}

void main_loop_post(void (*fn)(void *opaque), void *opaque)
{
    g_assert(post_src);
    MainPost *p = g_new(MainPost, 1);
    p->fn = fn;
    p->opaque = opaque;
    g_mutex_lock(&post_lock);
    g_queue_push_tail(&post_queue, p);
    g_mutex_unlock(&post_lock);
    /* If the main thread is in poll, it returns and checks; if it is not
     * there yet, its next poll returns at once. */
    g_main_context_wakeup(NULL);
}

void main_loop_run_pending(void)
{
    if (post_src) {
        post_drain();
    }
}

void main_loop_cleanup(void)
{
    if (!post_src) {
        return;
    }
    while (post_pending()) {
        post_drain();
    }
    g_source_destroy(post_src);
    g_source_unref(post_src);
    post_src = NULL;
}
