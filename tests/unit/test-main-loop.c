/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Tests of util/main-loop.c: calls posted from threads run in the main
 * thread, each once, in each poster's order, and see what the poster
 * wrote.  In the ThreadSanitizer build the same program also checks that
 * the hand-over is visible to it (a GSource allocated by a poster and
 * freed by the main loop was reported as a race).
 */
#include "qemu/main-loop.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <glib.h>

enum { POSTERS = 4, CALLS = 500 };

typedef struct Call {
    int poster;
    int seq;
    int *payload;       /* written by the poster, freed by the main thread */
} Call;

static GThread *main_thread;
static int next_seq[POSTERS];
static int done;

static void on_call(void *opaque)
{
    Call *c = opaque;
    assert_true(g_thread_self() == main_thread);
    assert_int_equal(c->seq, next_seq[c->poster]);
    assert_int_equal(*c->payload, c->poster * CALLS + c->seq);
    next_seq[c->poster]++;
    done++;
    g_free(c->payload);
    g_free(c);
}

static gpointer poster(gpointer opaque)
{
    int id = GPOINTER_TO_INT(opaque);
    for (int i = 0; i < CALLS; i++) {
        Call *c = g_new(Call, 1);
        c->poster = id;
        c->seq = i;
        c->payload = g_new(int, 1);
        *c->payload = id * CALLS + i;
        main_loop_post(on_call, c);
    }
    return NULL;
}

static void test_posted_in_order(void **state G_GNUC_UNUSED)
{
    GThread *t[POSTERS];
    main_thread = g_thread_self();
    /* As in ferry, the main thread owns the default context before any
     * thread posts to it (its creation is GLib's own affair). */
    assert_true(g_main_context_acquire(g_main_context_default()));
    main_loop_init();
    for (int i = 0; i < POSTERS; i++) {
        t[i] = g_thread_new("poster", poster, GINT_TO_POINTER(i));
    }
    /* Every call is run (and its source freed) before any join, which
     * would order the threads by itself. */
    while (done < POSTERS * CALLS) {
        g_main_context_iteration(NULL, TRUE);
    }
    for (int i = 0; i < POSTERS; i++) {
        g_thread_join(t[i]);
        assert_int_equal(next_seq[i], CALLS);
    }
    main_loop_cleanup();
    assert_false(g_main_context_pending(NULL));
    g_main_context_release(g_main_context_default());
}

/* What is still queued at cleanup runs then, in order: nothing is lost. */
static void test_cleanup_runs_the_rest(void **state G_GNUC_UNUSED)
{
    memset(next_seq, 0, sizeof(next_seq));
    done = 0;
    main_thread = g_thread_self();
    main_loop_init();
    GThread *t = g_thread_new("poster", poster, GINT_TO_POINTER(0));
    g_thread_join(t);
    assert_int_equal(done, 0);
    main_loop_cleanup();
    assert_int_equal(done, CALLS);
    assert_int_equal(next_seq[0], CALLS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_posted_in_order),
        cmocka_unit_test(test_cleanup_runs_the_rest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
