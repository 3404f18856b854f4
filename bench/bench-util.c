/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Shared by the C benchmarks; the contract is in bench-util.h. */
#include "bench-util.h"

#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

double bench_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

char *bench_machine_line(void)
{
    struct utsname u;
    g_autofree char *cpuinfo = NULL;
    g_autofree char *model = g_strdup("unknown CPU");

    uname(&u);
    if (g_file_get_contents("/proc/cpuinfo", &cpuinfo, NULL, NULL)) {
        char *m = strstr(cpuinfo, "model name");
        char *colon = m ? strchr(m, ':') : NULL;
        char *end = colon ? strchr(colon, '\n') : NULL;
        if (colon && end) {
            g_free(model);
            model = g_strstrip(g_strndup(colon + 1, end - colon - 1));
        }
    }
    return g_strdup_printf("%s, %ld CPUs, Linux %s", model,
                           sysconf(_SC_NPROCESSORS_ONLN), u.release);
}

bool bench_write_doc(const char *path, const char *name, const char *title,
                     const char *body, GError **errp)
{
    g_autofree char *old = NULL;
    g_autofree char *begin = g_strdup_printf("<!-- bench:%s:begin -->", name);
    g_autofree char *end = g_strdup_printf("<!-- bench:%s:end -->", name);
    g_autofree char *section = g_strdup_printf("%s\n## %s\n\n%s%s", begin,
                                               title, body, end);
    g_autofree char *out = NULL;

    if (!g_file_get_contents(path, &old, NULL, NULL)) {
        old = g_strdup("# Benchmarks\n\nFigures measured by the programs in "
                       "bench/ (`make bench`).  Each section is rewritten by "
                       "the program named in its heading.\n");
    }
    char *b = strstr(old, begin);
    char *e = b ? strstr(b, end) : NULL;
    if (b && e) {
        *b = '\0';
        out = g_strconcat(old, section, e + strlen(end), NULL);
    } else {
        out = g_strconcat(old, "\n", section, "\n", NULL);
    }
    return g_file_set_contents(path, out, -1, errp);
}
