/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The kernel's side of demand paging as threads grow, without a VMM:
 * T threads each write every page of their own range once (the shape of
 * the kernel's demand_paging_test), and the faults are resolved by
 *
 *   - nobody: plain first-touch faults, anonymous and memfd (the ceiling
 *     for MISSING), and memfd pages already in the page cache, mapped by
 *     an ordinary minor fault (the ceiling for MINOR);
 *   - one userfaultfd read by one thread, or one per range read by a
 *     thread each (ferry's x-postcopy-fault-threads), with
 *     MISSING + UFFDIO_COPY on anonymous memory or
 *     MINOR + UFFDIO_CONTINUE on memfd pages already in the page cache
 *     (x-postcopy-minor-faults: the push writes them through a second
 *     mapping).
 *
 *   uffd-scale [--threads 1,2,4,8,16] [--mib 64] [--runs 3]
 *              [--doc PATH [--section NAME] [--title TEXT]]
 *
 * It needs no /dev/kvm, so it runs on a host where bench/fault-scale.py
 * cannot start a guest, and it gives the floor that ferry's fault path
 * sits on.  Each thread checks the value it finds in each page (zero for
 * a first touch, the page's number when a resolver placed it), so a
 * wrong page fails the run.  Runs interleave: each run measures every
 * row once.
 */
#include "qemu/userfaultfd.h"
#include "bench-util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <glib.h>

#define PAGE            4096UL
#define MiB             (1024UL * 1024)
#define MAX_THREADS     256

typedef enum Mode {
    PLAIN_ANON,         /* first touch of anonymous memory */
    PLAIN_MEMFD,        /* first touch of a memfd: allocates the page */
    PLAIN_CACHED,       /* memfd page in the page cache, not yet mapped */
    COPY_ONE,           /* MISSING + UFFDIO_COPY, one uffd */
    COPY_SHARDED,       /* MISSING + UFFDIO_COPY, one uffd per range */
    CONT_ONE,           /* MINOR + UFFDIO_CONTINUE, one uffd */
    CONT_SHARDED,       /* MINOR + UFFDIO_CONTINUE, one uffd per range */
    MODE__MAX,
} Mode;

static const char *mode_name[MODE__MAX] = {
    [PLAIN_ANON] = "plain faults, anonymous",
    [PLAIN_MEMFD] = "plain faults, memfd first touch",
    [PLAIN_CACHED] = "plain faults, memfd in page cache",
    [COPY_ONE] = "MISSING + COPY, one uffd",
    [COPY_SHARDED] = "MISSING + COPY, sharded",
    [CONT_ONE] = "MINOR + CONTINUE, one uffd",
    [CONT_SHARDED] = "MINOR + CONTINUE, sharded",
};

static bool mode_memfd(Mode m)
{
    return m == PLAIN_MEMFD || m == PLAIN_CACHED || m == CONT_ONE ||
           m == CONT_SHARDED;
}

static bool mode_minor(Mode m)
{
    return m == CONT_ONE || m == CONT_SHARDED;
}

/* What the page-th page must read when first seen: a page a resolver or
 * the page cache provided carries its number; a first touch reads 0. */
static uint64_t expected(Mode m, size_t page)
{
    return (m == PLAIN_ANON || m == PLAIN_MEMFD) ? 0 : page + 1;
}

/* One measured row: a value per run. */
typedef struct Result {
    GArray *pps;        /* double: pages per second, all threads */
    GArray *p50, *p99;  /* double: per-fault latency in us */
} Result;

typedef struct Worker {
    pthread_t thread;
    Mode mode;
    char *base;         /* this thread's range */
    size_t first;       /* number of its first page in the area */
    size_t pages;
    pthread_barrier_t *start;
    uint32_t *lat_ns;   /* one per page */
    double elapsed;
    size_t wrong;       /* pages that read other than expected */
} Worker;

typedef struct Resolver {
    pthread_t thread;
    int uffd;
    int stop_fd;        /* eventfd: the workers are done */
    bool minor;
    char *area;         /* the whole registered view */
    const char *src;    /* COPY: page n's content at src + n * PAGE */
    int error;          /* first ioctl failure, as -errno */
} Resolver;

static G_NORETURN void die(const char *what, int err)
{
    fprintf(stderr, "uffd-scale: %s: %s\n", what, strerror(err));
    exit(1);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static void *worker_fn(void *opaque)
{
    Worker *w = opaque;

    pthread_setname_np(pthread_self(), "scale-vcpu");
    pthread_barrier_wait(w->start);
    double t0 = bench_now_s();
    for (size_t i = 0; i < w->pages; i++) {
        uint64_t *p = (uint64_t *)(w->base + i * PAGE);
        uint64_t t = now_ns();
        /* One write access: it faults once and returns what was there. */
        uint64_t old = __atomic_fetch_add(p, 1ULL << 32, __ATOMIC_RELAXED);
        w->lat_ns[i] = (uint32_t)MIN(now_ns() - t, UINT32_MAX);
        if (old != expected(w->mode, w->first + i)) {
            w->wrong++;
        }
    }
    w->elapsed = bench_now_s() - t0;
    return NULL;
}

/* Resolve every fault on r->uffd with one 4 KiB COPY or CONTINUE until
 * the stop eventfd fires.  Threads never share a page, so -EEXIST means
 * a lost race with nobody and is an error like any other. */
static void *resolver_fn(void *opaque)
{
    Resolver *r = opaque;
    struct pollfd pfd[2] = {
        { .fd = r->uffd, .events = POLLIN },
        { .fd = r->stop_fd, .events = POLLIN },
    };
    UffdEvent ev[64];

    pthread_setname_np(pthread_self(), "scale-fault");
    for (;;) {
        if (poll(pfd, 2, -1) < 0 && errno != EINTR) {
            r->error = -errno;
            return NULL;
        }
        if (pfd[1].revents) {
            return NULL;
        }
        int n = uffd_read_events(r->uffd, ev, G_N_ELEMENTS(ev));
        if (n < 0 && n != -EAGAIN) {
            r->error = n;
            return NULL;
        }
        for (int i = 0; i < n; i++) {
            if (ev[i].event != UFFD_EVENT_PAGEFAULT) {
                continue;
            }
            char *page = (char *)(uintptr_t)(ev[i].pagefault.address &
                                             ~(PAGE - 1));
            ssize_t ret;
            do {
                ret = r->minor ? uffd_continue(r->uffd, page, PAGE, 0) :
                      uffd_copy(r->uffd, page, r->src + (page - r->area),
                                PAGE, 0);
            } while (ret == -EAGAIN);
            if (ret != (ssize_t)PAGE && !r->error) {
                r->error = ret < 0 ? (int)ret : -EIO;
            }
        }
    }
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* An area of @len bytes for @m.  For memfd modes *@fd is the memfd; for
 * modes that read placed pages *@src (COPY) or the page cache (the
 * cached and CONTINUE modes) holds page n's number plus one. */
static char *area_for(Mode m, size_t len, int *fd, char **src)
{
    *fd = -1;
    *src = NULL;
    if (!mode_memfd(m)) {
        char *a = mmap(NULL, len, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (a == MAP_FAILED) {
            die("mmap", errno);
        }
        /* 4 KiB faults in every row: a transparent huge page would make
         * one plain fault of 512 pages (userfaultfd ranges never get one). */
        madvise(a, len, MADV_NOHUGEPAGE);
        if (m == COPY_ONE || m == COPY_SHARDED) {
            *src = mmap(NULL, len, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
            if (*src == MAP_FAILED) {
                die("mmap", errno);
            }
            for (size_t i = 0; i < len / PAGE; i++) {
                *(uint64_t *)(*src + i * PAGE) = i + 1;
            }
        }
        return a;
    }
    *fd = memfd_create("uffd-scale", MFD_CLOEXEC);
    if (*fd < 0 || ftruncate(*fd, len) < 0) {
        die("memfd", errno);
    }
    if (m != PLAIN_MEMFD) {
        /* The push's mapping: it fills the page cache, the view that
         * faults stays unmapped. */
        char *fill = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED,
                          *fd, 0);
        if (fill == MAP_FAILED) {
            die("mmap", errno);
        }
        for (size_t i = 0; i < len / PAGE; i++) {
            *(uint64_t *)(fill + i * PAGE) = i + 1;
        }
        munmap(fill, len);
    }
    char *a = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0);
    if (a == MAP_FAILED) {
        die("mmap", errno);
    }
    return a;
}

static int uffd_for(Mode m, void *start, size_t len)
{
    uint64_t features = mode_minor(m) ? UFFD_FEATURE_MINOR_SHMEM : 0;
    int fd = uffd_open(O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        die("userfaultfd", -fd);
    }
    int ret = uffd_api(fd, features, NULL, NULL);
    if (ret == 0) {
        ret = uffd_register(fd, start, len,
                            mode_minor(m) ? UFFDIO_REGISTER_MODE_MINOR :
                                            UFFDIO_REGISTER_MODE_MISSING,
                            NULL);
    }
    if (ret < 0) {
        die(mode_minor(m) ? "userfaultfd MINOR faults on shmem" :
                            "userfaultfd setup", -ret);
    }
    return fd;
}

/* One row once: @threads threads of @per_thread bytes each in mode @m. */
static void run_one(Mode m, int threads, size_t per_thread, Result *res)
{
    size_t len = per_thread * threads, pages = per_thread / PAGE;
    int memfd;
    char *src;
    char *area = area_for(m, len, &memfd, &src);
    bool sharded = m == COPY_SHARDED || m == CONT_SHARDED;
    int nres = m < COPY_ONE ? 0 : sharded ? threads : 1;
    Resolver rs[MAX_THREADS] = { 0 };
    Worker ws[MAX_THREADS] = { 0 };
    pthread_barrier_t start;
    int stop_fd = eventfd(0, EFD_CLOEXEC);

    if (stop_fd < 0) {
        die("eventfd", errno);
    }
    for (int i = 0; i < nres; i++) {
        size_t off = sharded ? i * per_thread : 0;
        rs[i] = (Resolver) {
            .uffd = uffd_for(m, area + off, sharded ? per_thread : len),
            .stop_fd = stop_fd, .minor = mode_minor(m), .area = area,
            .src = src,
        };
        pthread_create(&rs[i].thread, NULL, resolver_fn, &rs[i]);
    }
    pthread_barrier_init(&start, NULL, threads + 1);
    for (int i = 0; i < threads; i++) {
        ws[i] = (Worker) {
            .mode = m, .base = area + i * per_thread, .first = i * pages,
            .pages = pages, .start = &start,
            .lat_ns = g_new(uint32_t, pages),
        };
        pthread_create(&ws[i].thread, NULL, worker_fn, &ws[i]);
    }
    pthread_barrier_wait(&start);
    double slowest = 0;
    size_t wrong = 0;
    g_autofree uint32_t *lat = g_new(uint32_t, pages * threads);
    for (int i = 0; i < threads; i++) {
        pthread_join(ws[i].thread, NULL);
        slowest = MAX(slowest, ws[i].elapsed);
        wrong += ws[i].wrong;
        memcpy(lat + i * pages, ws[i].lat_ns, pages * sizeof(uint32_t));
        g_free(ws[i].lat_ns);
    }
    uint64_t one = 1;
    if (write(stop_fd, &one, sizeof(one)) != sizeof(one)) {
        die("eventfd write", errno);
    }
    for (int i = 0; i < nres; i++) {
        pthread_join(rs[i].thread, NULL);
        if (rs[i].error) {
            die("resolving a fault", -rs[i].error);
        }
        uffd_close(rs[i].uffd);
    }
    if (wrong) {
        fprintf(stderr, "uffd-scale: %s, %d threads: %zu pages read wrong\n",
                mode_name[m], threads, wrong);
        exit(1);
    }
    size_t n = pages * threads;
    qsort(lat, n, sizeof(uint32_t), cmp_u32);
    double pps = n / slowest;
    double p50 = lat[n / 2] / 1e3, p99 = lat[MIN(n - 1, n * 99 / 100)] / 1e3;
    g_array_append_val(res->pps, pps);
    g_array_append_val(res->p50, p50);
    g_array_append_val(res->p99, p99);
    fprintf(stderr, "  %2d threads, %-34s %12.0f pages/s  p50 %.1f us  "
            "p99 %.1f us\n", threads, mode_name[m], pps, p50, p99);

    pthread_barrier_destroy(&start);
    close(stop_fd);
    munmap(area, len);
    if (src) {
        munmap(src, len);
    }
    if (memfd >= 0) {
        close(memfd);
    }
}

static char *cell(GArray *v, const char *fmt)
{
    g_array_sort(v, bench_cmp_double);
    double *d = (double *)v->data;
    double med = v->len % 2 ? d[v->len / 2] :
                 (d[v->len / 2 - 1] + d[v->len / 2]) / 2;
    g_autofree char *a = g_strdup_printf(fmt, med);
    g_autofree char *b = g_strdup_printf(fmt, d[0]);
    g_autofree char *c = g_strdup_printf(fmt, d[v->len - 1]);
    return g_strdup_printf("%s (%s-%s)", a, b, c);
}

int main(int argc, char **argv)
{
    int runs = 3, mib = 64;
    /* NULL until given: GOption does not free a default it replaces. */
    g_autofree char *threads_arg = NULL;
    g_autofree char *doc = NULL;
    g_autofree char *section = NULL;
    g_autofree char *title = NULL;
    GOptionEntry entries[] = {
        { "runs", 'r', 0, G_OPTION_ARG_INT, &runs,
          "Interleaved runs (default 3)", "N" },
        { "threads", 't', 0, G_OPTION_ARG_STRING, &threads_arg,
          "Thread counts (default 1,2,4,8,16)", "LIST" },
        { "mib", 'm', 0, G_OPTION_ARG_INT, &mib,
          "MiB each thread writes (default 64)", "N" },
        { "doc", 'd', 0, G_OPTION_ARG_FILENAME, &doc,
          "Write the table into this markdown file", "PATH" },
        { "section", 's', 0, G_OPTION_ARG_STRING, &section,
          "The file's section to rewrite (default uffd-scale)", "NAME" },
        { "title", 0, 0, G_OPTION_ARG_STRING, &title,
          "The section's heading", "TEXT" },
        { NULL },
    };
    g_autoptr(GOptionContext) ctx = g_option_context_new(
        "- demand paging with userfaultfd as threads grow");
    g_autoptr(GError) err = NULL;

    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!g_option_context_parse(ctx, &argc, &argv, &err)) {
        fprintf(stderr, "uffd-scale: %s\n", err->message);
        return 1;
    }
    g_auto(GStrv) tv = g_strsplit(threads_arg ? threads_arg : "1,2,4,8,16",
                                  ",", -1);
    int nt = g_strv_length(tv);
    g_autofree int *counts = g_new(int, nt);
    for (int i = 0; i < nt; i++) {
        char *end;
        long v = strtol(tv[i], &end, 10);
        if (*end || v < 1 || v > MAX_THREADS) {
            fprintf(stderr, "uffd-scale: --threads: '%s' is not a count "
                    "from 1 to %d\n", tv[i], MAX_THREADS);
            return 1;
        }
        counts[i] = v;
    }
    if (runs < 1 || mib < 1) {
        fprintf(stderr, "uffd-scale: --runs and --mib must be at least 1\n");
        return 1;
    }
    g_autofree Result *res = g_new0(Result, nt * MODE__MAX);
    for (int i = 0; i < nt * MODE__MAX; i++) {
        res[i].pps = g_array_new(false, false, sizeof(double));
        res[i].p50 = g_array_new(false, false, sizeof(double));
        res[i].p99 = g_array_new(false, false, sizeof(double));
    }
    for (int r = 0; r < runs; r++) {
        fprintf(stderr, "uffd-scale: run %d of %d\n", r + 1, runs);
        for (int i = 0; i < nt; i++) {
            for (int m = 0; m < MODE__MAX; m++) {
                run_one(m, counts[i], mib * MiB, &res[i * MODE__MAX + m]);
            }
        }
    }

    GString *s = g_string_new(NULL);
    g_autofree char *machine = bench_machine_line();
    g_autoptr(GDateTime) now = g_date_time_new_now_utc();
    g_autofree char *date = g_date_time_format(now, "%Y-%m-%d");
    g_string_append_printf(s, "%s; %s; %d MiB written per thread, 4 KiB "
                           "pages; median (min-max) of %d interleaved runs.  "
                           "Thread counts above the host's CPUs are "
                           "oversubscribed.\n\n", machine, date, mib, runs);
    g_string_append(s, "| threads | variant | pages/s | per thread | "
                    "fault p50 us | fault p99 us |\n"
                    "|---:|---|---:|---:|---:|---:|\n");
    for (int i = 0; i < nt; i++) {
        for (int m = 0; m < MODE__MAX; m++) {
            Result *x = &res[i * MODE__MAX + m];
            g_autoptr(GArray) per = g_array_new(false, false, sizeof(double));
            for (guint k = 0; k < x->pps->len; k++) {
                double v = g_array_index(x->pps, double, k) / counts[i];
                g_array_append_val(per, v);
            }
            g_autofree char *a = cell(x->pps, "%.0f");
            g_autofree char *b = cell(per, "%.0f");
            g_autofree char *c = cell(x->p50, "%.1f");
            g_autofree char *d = cell(x->p99, "%.1f");
            g_string_append_printf(s, "| %d | %s | %s | %s | %s | %s |\n",
                                   counts[i], mode_name[m], a, b, c, d);
        }
    }
    g_string_append(s, "\n");
    g_autofree char *body = g_string_free(s, false);
    fputs(body, stdout);
    fflush(stdout);
    if (doc && !bench_write_doc(doc, section ? section : "uffd-scale",
                                title ? title : "Userfaults as threads grow, "
                                "without a VMM (bench/uffd-scale)",
                                body, &err)) {
        fprintf(stderr, "uffd-scale: %s\n", err->message);
        return 1;
    }
    return 0;
}
