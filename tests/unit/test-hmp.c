/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Tests of HMP's line parsing (monitor/hmp.c): words, aliases, errors. */
#include "monitor/monitor.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

static void expect(const char *line, const char *name, int nwords)
{
    g_auto(GStrv) argv = NULL;
    g_autoptr(GError) err = NULL;
    g_autofree char *got = hmp_parse_line(line, &argv, &err);
    if (!got) {
        fail_msg("'%s': %s", line, err->message);
    }
    assert_string_equal(got, name);
    assert_int_equal(argv ? g_strv_length(argv) : 0, nwords);
}

static void expect_error(const char *line, const char *msg)
{
    g_auto(GStrv) argv = NULL;
    g_autoptr(GError) err = NULL;
    g_autofree char *got = hmp_parse_line(line, &argv, &err);
    assert_null(got);
    assert_non_null(err);
    if (!strstr(err->message, msg)) {
        fail_msg("'%s': '%s' lacks '%s'", line, err->message, msg);
    }
}

static void test_parse(void **state)
{
    (void)state;
    expect("cont", "cont", 1);
    expect("c", "cont", 1);
    expect("  stop  ", "stop", 1);
    expect("s", "stop", 1);
    expect("q", "quit", 1);
    expect("?", "help", 1);
    expect("help stop", "help", 2);
    expect("info", "info", 1);
    expect("info status", "info status", 2);
    expect("help 'info  status'", "help", 2);      /* quoting keeps one word */
    expect("", "", 0);
    expect("   \t ", "", 0);
}

static void test_errors(void **state)
{
    (void)state;
    expect_error("frobnicate", "unknown command: 'frobnicate'");
    expect_error("info bogus", "unknown command: 'info bogus'");
    expect_error("help 'unterminated", "");     /* a quoting error */
    expect_error("Cont", "unknown command: 'Cont'");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        { "/monitor/hmp/parse", test_parse, NULL, NULL, NULL },
        { "/monitor/hmp/errors", test_errors, NULL, NULL, NULL },
    };
    return cmocka_run_group_tests_name("hmp", tests, NULL, NULL);
}
