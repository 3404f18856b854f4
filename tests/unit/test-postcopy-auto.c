/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * x-postcopy-auto's model (migration/postcopy-auto.c): the verdict on a
 * pass, for guests that converge, never converge, converge too slowly
 * for the budget, and for a spent budget; and its reasons.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <glib.h>
#include <string.h>

#include "migration/postcopy-auto.h"

#define MIB     (1024ull * 1024)

/* A pass of @sent MiB in @ms, @dirty MiB dirtied meanwhile, the
 * migration @elapsed ms old, a 300 ms downtime-limit. */
static PostcopyAutoPass pass(uint64_t n, uint64_t sent, int64_t ms,
                             uint64_t dirty, int64_t elapsed, int64_t budget)
{
    return (PostcopyAutoPass) {
        .pass = n, .sent_bytes = sent * MIB, .pass_ms = ms,
        .dirty_bytes = dirty * MIB, .elapsed_ms = elapsed,
        .budget_ms = budget, .downtime_limit_ms = 300,
    };
}

static PostcopyAutoVerdict decide(PostcopyAutoPass p, const char *want)
{
    g_autofree char *why = NULL;
    PostcopyAutoVerdict v = postcopy_auto_decide(&p, &why);
    assert_non_null(why);
    if (want && !strstr(why, want)) {
        fail_msg("reason '%s' lacks '%s'", why, want);
    }
    return v;
}

/* The rest goes within downtime-limit: converged, as plain precopy's
 * test (1 GiB/s: 300 MiB fits in 300 ms). */
static void test_converged(void **state)
{
    (void)state;
    assert_int_equal(decide(pass(2, 1024, 1000, 200, 2000, 8000), "within"),
                     POSTCOPY_AUTO_CONVERGED);
    /* Converged wins over a spent budget: no switch a pass too late. */
    assert_int_equal(decide(pass(5, 1024, 1000, 200, 9000, 8000), NULL),
                     POSTCOPY_AUTO_CONVERGED);
}

/* A slow dirtier (1/8 of the link): one more pass leaves 16 MiB, which
 * goes within 300 ms at 128 MiB/s; well in the budget. */
static void test_converging_stays(void **state)
{
    (void)state;
    assert_int_equal(decide(pass(1, 1024, 8000, 128, 8000, 32000),
                            "converges in about 1 more pass,"),
                     POSTCOPY_AUTO_STAY);
    /* The same guest with no budget given yet: stays too. */
    assert_int_equal(decide(pass(1, 1024, 8000, 128, 8000, 0), NULL),
                     POSTCOPY_AUTO_STAY);
}

static void test_never_converges(void **state)
{
    (void)state;
    assert_int_equal(decide(pass(1, 1024, 8000, 1024, 8000, 32000),
                            "does not converge"),
                     POSTCOPY_AUTO_SWITCH);
    assert_int_equal(decide(pass(1, 1000, 8000, 900, 8000, 32000), NULL),
                     POSTCOPY_AUTO_SWITCH);
    /* Nothing sent (a stalled link): no progress, no model. */
    assert_int_equal(decide(pass(3, 0, 1000, 64, 20000, 0), NULL),
                     POSTCOPY_AUTO_SWITCH);
}

/*
 * q = 0.8 at 128 MiB/s: precopy would converge (a 300 ms downtime's
 * worth is 38.4 MiB), in ln(38.4/800)/ln(0.8) = 14 passes of 800, 640,
 * ... MiB, about 29.9 s: within the 32 s a 40 s budget has left after 8 s,
 * but not within the 24 s of a 32 s one.
 */
static void test_too_slow_for_budget(void **state)
{
    (void)state;
    assert_int_equal(decide(pass(1, 1000, 7812, 800, 8000, 40000),
                            "converges in about 14 more passes, 29874 ms"),
                     POSTCOPY_AUTO_STAY);
    assert_int_equal(decide(pass(1, 1000, 7812, 800, 8000, 32000),
                            "would need 14 more passes"),
                     POSTCOPY_AUTO_SWITCH);
}

static void test_budget_spent(void **state)
{
    (void)state;
    assert_int_equal(decide(pass(4, 1024, 2000, 256, 12001, 12000), "spent"),
                     POSTCOPY_AUTO_SWITCH);
}

/* downtime-limit 0 cannot be met: stay until the budget says. */
static void test_zero_limit(void **state)
{
    (void)state;
    PostcopyAutoPass p = pass(1, 1024, 1000, 10, 1000, 0);
    p.downtime_limit_ms = 0;
    assert_int_equal(decide(p, "cannot be met"), POSTCOPY_AUTO_STAY);
    p.budget_ms = 4000;
    assert_int_equal(decide(p, "would need"), POSTCOPY_AUTO_SWITCH);
}

static void test_budget(void **state)
{
    (void)state;
    assert_int_equal(postcopy_auto_budget_ms(5000, 1234), 5000);
    assert_int_equal(postcopy_auto_budget_ms(0, 1234),
                     POSTCOPY_AUTO_BUDGET_PASSES * 1234);
    assert_int_equal(postcopy_auto_budget_ms(0, 0), 0);
    assert_string_equal(postcopy_auto_verdict_name(POSTCOPY_AUTO_SWITCH), "switch");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_converged),
        cmocka_unit_test(test_converging_stays),
        cmocka_unit_test(test_never_converges),
        cmocka_unit_test(test_too_slow_for_budget),
        cmocka_unit_test(test_budget_spent),
        cmocka_unit_test(test_zero_limit),
        cmocka_unit_test(test_budget),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
