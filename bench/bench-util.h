/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What the C benchmarks share: the clock, the machine line of their
 * tables, and rewriting their section of docs/benchmarks.md (markers
 * bench:NAME:begin/end, as bench/benchlib.py writes them).
 */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <stdbool.h>

#include <glib.h>

/* CLOCK_MONOTONIC in seconds. */
double bench_now_s(void);

/* qsort's comparison of doubles, ascending. */
int bench_cmp_double(const void *a, const void *b);

/* "MODEL, N CPUs, Linux RELEASE" of this host; g_free() it. */
char *bench_machine_line(void);

/*
 * Replace the section @name of the markdown file @path with a heading
 * "## @title" and @body, or append it (creating the file).  False with
 * @errp set when the file cannot be written.
 */
bool bench_write_doc(const char *path, const char *name, const char *title,
                     const char *body, GError **errp);

#endif
