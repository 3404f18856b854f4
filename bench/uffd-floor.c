/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The physical floor under postcopy on this machine: how fast a
 * userfault can be resolved by another thread, how fast pages can be
 * placed with UFFDIO_COPY / ZEROPAGE / MOVE, and how fast loopback TCP
 * is.  Every later postcopy figure is compared with these.
 *
 *   uffd-floor [--runs N] [--quick] [--doc docs/benchmarks.md]
 *
 * Each run measures everything once, so runs interleave and a slow
 * spell of the machine spreads over all rows.  The table gives the
 * median of the runs with the minimum and maximum.
 */
#include "qemu/userfaultfd.h"
#include "bench-util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <glib.h>

#define PAGE            4096UL
#define MiB             (1024UL * 1024)

typedef struct Config {
    int runs;
    size_t fault_pages;     /* faults timed per run */
    size_t fill_bytes;      /* bytes placed per throughput row */
    size_t cold_bytes;      /* bytes placed by the cold-memory rows */
    size_t tcp_rtts;        /* round trips per run */
    size_t tcp_bytes;       /* bulk bytes per run */
    const char *doc;
} Config;

/* One row of the table: a value per run. */
typedef struct Row {
    const char *name;
    const char *unit;
    GArray *values;         /* double */
} Row;

enum {
    R_FAULT_P50, R_FAULT_P99, R_FAULT_P999,
    R_FAULTS_P50, R_FAULTS_P99, R_FAULTS_P999,
    R_COPY_4K, R_COPY_64K, R_COPY_2M,
    R_ZERO_4K, R_ZERO_2M,
    R_MOVE_64K, R_MOVE_2M,
    R_COLD_FIRST, R_COLD_LAST,
    R_TCP_P50, R_TCP_P99, R_TCP_P999,
    R_TCPS_P50, R_TCPS_P99, R_TCPS_P999,
    R_TCP_BULK,
    R__MAX,
};

static Row rows[R__MAX] = {
    [R_FAULT_P50] = { "userfault resolved by another thread, p50", "us" },
    [R_FAULT_P99] = { "userfault resolved by another thread, p99", "us" },
    [R_FAULT_P999] = { "userfault resolved by another thread, p99.9", "us" },
    [R_FAULTS_P50] = { "userfault, resolver spinning, p50", "us" },
    [R_FAULTS_P99] = { "userfault, resolver spinning, p99", "us" },
    [R_FAULTS_P999] = { "userfault, resolver spinning, p99.9", "us" },
    [R_COPY_4K] = { "UFFDIO_COPY, 4 KiB per call", "GB/s" },
    [R_COPY_64K] = { "UFFDIO_COPY, 64 KiB per call", "GB/s" },
    [R_COPY_2M] = { "UFFDIO_COPY, 2 MiB per call", "GB/s" },
    [R_ZERO_4K] = { "UFFDIO_ZEROPAGE, 4 KiB per call", "GB/s" },
    [R_ZERO_2M] = { "UFFDIO_ZEROPAGE, 2 MiB per call", "GB/s" },
    [R_MOVE_64K] = { "UFFDIO_MOVE, 64 KiB per call", "GB/s" },
    [R_MOVE_2M] = { "UFFDIO_MOVE, 2 MiB per call", "GB/s" },
    [R_COLD_FIRST] = { "UFFDIO_COPY, 64 KiB per call, first GiB of a large fill",
                       "GB/s" },
    [R_COLD_LAST] = { "UFFDIO_COPY, 64 KiB per call, last GiB of a large fill",
                      "GB/s" },
    [R_TCP_P50] = { "loopback TCP round trip (64 B), p50", "us" },
    [R_TCP_P99] = { "loopback TCP round trip (64 B), p99", "us" },
    [R_TCP_P999] = { "loopback TCP round trip (64 B), p99.9", "us" },
    [R_TCPS_P50] = { "loopback TCP round trip, both ends spinning, p50", "us" },
    [R_TCPS_P99] = { "loopback TCP round trip, both ends spinning, p99", "us" },
    [R_TCPS_P999] = { "loopback TCP round trip, both ends spinning, p99.9", "us" },
    [R_TCP_BULK] = { "loopback TCP bulk, one connection", "GB/s" },
};

static void record(int row, double v)
{
    g_array_append_val(rows[row].values, v);
}

/* Record p50, p99 and p99.9 of @v in the three rows from @row. */
static void record_quantiles(int row, double *v, size_t n);


/* @q-quantile of sorted @v (nearest rank). */
static double quantile(const double *v, size_t n, double q)
{
    size_t i = (size_t)(q * n);
    return v[i < n ? i : n - 1];
}

static void record_quantiles(int row, double *v, size_t n)
{
    qsort(v, n, sizeof(double), bench_cmp_double);
    record(row, quantile(v, n, 0.50));
    record(row + 1, quantile(v, n, 0.99));
    record(row + 2, quantile(v, n, 0.999));
}

static G_NORETURN void die(const char *what, int err)
{
    fprintf(stderr, "uffd-floor: %s: %s\n", what, strerror(err));
    exit(1);
}

static char *map_anon(size_t len)
{
    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        die("mmap", errno);
    }
    return p;
}

/* A userfaultfd with the handshake done and @area registered MISSING. */
static int uffd_for(void *area, size_t len)
{
    int fd = uffd_open(O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        die("userfaultfd", -fd);
    }
    int ret = uffd_api(fd, 0, NULL, NULL);
    if (ret == 0) {
        ret = uffd_register(fd, area, len, UFFDIO_REGISTER_MODE_MISSING, NULL);
    }
    if (ret < 0) {
        die("userfaultfd setup", -ret);
    }
    return fd;
}

/* ---- Fault round trip --------------------------------------------------------- */

typedef struct Resolver {
    int uffd;
    int stop_fd;            /* eventfd: the main thread is done */
    const char *src;
    bool spin;              /* busy-read instead of sleeping in poll() */
} Resolver;

/*
 * Resolves every fault with a one-page UFFDIO_COPY, as postcopy would.
 * Sleeping in poll() adds the wake-up of an idle CPU to every fault;
 * spinning shows the floor without it.
 */
static void *resolver_fn(void *opaque)
{
    Resolver *r = opaque;
    struct pollfd pfd[2] = {
        { .fd = r->uffd, .events = POLLIN },
        { .fd = r->stop_fd, .events = POLLIN },
    };
    UffdEvent ev[16];

    for (;;) {
        if (poll(pfd, 2, r->spin ? 0 : -1) < 0 && errno != EINTR) {
            die("poll", errno);
        }
        if (pfd[1].revents) {
            return NULL;
        }
        int n = uffd_read_events(r->uffd, ev, 16);
        for (int i = 0; i < n; i++) {
            if (ev[i].event != UFFD_EVENT_PAGEFAULT) {
                continue;
            }
            void *page = (void *)(uintptr_t)(ev[i].pagefault.address &
                                             ~(PAGE - 1));
            ssize_t ret = uffd_copy(r->uffd, page, r->src, PAGE, 0);
            if (ret < 0 && ret != -EEXIST) {
                die("UFFDIO_COPY", -ret);
            }
        }
    }
}

static void bench_fault(const Config *cfg, bool spin)
{
    size_t n = cfg->fault_pages, len = n * PAGE;
    char *area = map_anon(len);
    char *src = map_anon(PAGE);
    memset(src, 0xa5, PAGE);
    Resolver r = { uffd_for(area, len), eventfd(0, EFD_CLOEXEC), src, spin };
    int row = spin ? R_FAULTS_P50 : R_FAULT_P50;
    g_autofree double *lat = g_new(double, n);
    pthread_t thread;

    pthread_create(&thread, NULL, resolver_fn, &r);
    for (size_t i = 0; i < n; i++) {
        volatile char *p = area + i * PAGE;
        double t0 = bench_now_s();
        (void)*p;
        lat[i] = (bench_now_s() - t0) * 1e6;
    }
    uint64_t one = 1;
    if (write(r.stop_fd, &one, sizeof(one)) != sizeof(one)) {
        die("eventfd", errno);
    }
    pthread_join(thread, NULL);

    record_quantiles(row, lat, n);
    close(r.stop_fd);
    close(r.uffd);
    munmap(area, len);
    munmap(src, PAGE);
}

/* ---- Placement throughput -------------------------------------------------------- */

typedef enum { FILL_COPY, FILL_ZERO, FILL_MOVE } FillKind;

/*
 * Place @bytes into a fresh registered area in calls of @batch bytes and
 * return GB/s.  MOVE takes its pages from a populated source, prepared
 * outside the timed part.
 */
static double fill_rate(FillKind kind, size_t bytes, size_t batch)
{
    char *dst = map_anon(bytes);
    char *src = map_anon(kind == FILL_COPY ? batch : bytes);
    int fd = uffd_for(dst, bytes);

    if (kind == FILL_MOVE) {
        /* Small pages only: this is the placement of received 4 KiB pages. */
        madvise(src, bytes, MADV_NOHUGEPAGE);
    }
    if (kind != FILL_ZERO) {
        memset(src, 0x5a, kind == FILL_COPY ? batch : bytes);
    }

    double t0 = bench_now_s();
    for (size_t off = 0; off < bytes; off += batch) {
        ssize_t ret;
        switch (kind) {
        case FILL_COPY:
            ret = uffd_copy(fd, dst + off, src, batch, 0);
            break;
        case FILL_ZERO:
            ret = uffd_zeropage(fd, dst + off, batch, 0);
            break;
        default:
            ret = uffd_move(fd, dst + off, src + off, batch, 0);
            break;
        }
        if (ret != (ssize_t)batch) {
            die("placing pages", ret < 0 ? -ret : EIO);
        }
    }
    double dt = bench_now_s() - t0;

    close(fd);
    munmap(dst, bytes);
    munmap(src, kind == FILL_COPY ? batch : bytes);
    return bytes / dt / 1e9;
}

static void bench_fill(const Config *cfg)
{
    size_t b = cfg->fill_bytes;
    record(R_COPY_4K, fill_rate(FILL_COPY, b, 4 * 1024));
    record(R_COPY_64K, fill_rate(FILL_COPY, b, 64 * 1024));
    record(R_COPY_2M, fill_rate(FILL_COPY, b, 2 * MiB));
    record(R_ZERO_4K, fill_rate(FILL_ZERO, b, 4 * 1024));
    record(R_ZERO_2M, fill_rate(FILL_ZERO, b, 2 * MiB));
    record(R_MOVE_64K, fill_rate(FILL_MOVE, b, 64 * 1024));
    record(R_MOVE_2M, fill_rate(FILL_MOVE, b, 2 * MiB));
}

/*
 * Placement into a large fresh area, its first GiB against its last.
 * Where this machine is itself a VM that hands free memory back to its
 * host (free page reporting), only the memory it used lately is warm:
 * past that, each first touch of a page waits for the host to back it,
 * whatever the VMM.  A postcopy destination places the whole guest, so
 * its push meets the same wall once the guest is larger than what is
 * warm; the rows say where that wall is on this machine.
 */
static void bench_cold(const Config *cfg)
{
    const size_t batch = 64 * 1024, gib = 1024 * MiB;
    size_t bytes = cfg->cold_bytes;
    char *dst = map_anon(bytes);
    char *src = map_anon(batch);
    int fd = uffd_for(dst, bytes);
    double first = 0, last = 0;

    memset(src, 0x5a, batch);
    for (size_t g = 0; g < bytes; g += gib) {
        double t0 = bench_now_s();
        for (size_t off = g; off < g + gib && off < bytes; off += batch) {
            ssize_t ret = uffd_copy(fd, dst + off, src, batch, 0);
            if (ret != (ssize_t)batch) {
                die("placing pages", ret < 0 ? -ret : EIO);
            }
        }
        double dt = bench_now_s() - t0;
        if (g == 0) {
            first = dt;
        }
        last = dt;
    }
    close(fd);
    munmap(dst, bytes);
    munmap(src, batch);
    record(R_COLD_FIRST, gib / first / 1e9);
    record(R_COLD_LAST, gib / last / 1e9);
}

/* ---- Loopback TCP ---------------------------------------------------------------- */

/* A connected pair of loopback TCP sockets with Nagle off. */
static void tcp_pair(int fds[2])
{
    struct sockaddr_in addr = { .sin_family = AF_INET,
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t alen = sizeof(addr);
    int one = 1;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
        listen(lfd, 1) < 0 ||
        getsockname(lfd, (struct sockaddr *)&addr, &alen) < 0) {
        die("listen", errno);
    }
    fds[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(fds[0], (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        die("connect", errno);
    }
    fds[1] = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fds[1] < 0) {
        die("accept", errno);
    }
    close(lfd);
    for (int i = 0; i < 2; i++) {
        setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
}

/* Move all of @buf; with @spin, a read that finds nothing retries at once. */
static void io_all(int fd, void *buf, size_t len, bool wr, bool spin)
{
    char *p = buf;
    while (len) {
        ssize_t n = wr ? write(fd, p, len) :
                    recv(fd, p, len, spin ? MSG_DONTWAIT : 0);
        if (n < 0 && errno == EAGAIN && spin) {
            continue;
        }
        if (n <= 0) {
            die(wr ? "write" : "read", n < 0 ? errno : EPIPE);
        }
        p += n;
        len -= n;
    }
}

typedef struct Peer {
    int fd;
    size_t count;           /* echoes, or bytes to swallow */
    bool spin;
} Peer;

static void *echo_fn(void *opaque)
{
    Peer *p = opaque;
    char buf[64];
    for (size_t i = 0; i < p->count; i++) {
        io_all(p->fd, buf, sizeof(buf), false, p->spin);
        io_all(p->fd, buf, sizeof(buf), true, p->spin);
    }
    return NULL;
}

static void *sink_fn(void *opaque)
{
    Peer *p = opaque;
    size_t chunk = 1 * MiB;
    g_autofree char *buf = g_malloc(chunk);
    while (p->count) {
        ssize_t n = read(p->fd, buf, MIN(chunk, p->count));
        if (n <= 0) {
            die("read", n < 0 ? errno : EPIPE);
        }
        p->count -= n;
    }
    return NULL;
}

static void tcp_rtt(int fds[2], size_t n, bool spin)
{
    pthread_t thread;
    char buf[64] = { 0 };
    g_autofree double *lat = g_new(double, n);
    Peer echo = { fds[1], n, spin };

    pthread_create(&thread, NULL, echo_fn, &echo);
    for (size_t i = 0; i < n; i++) {
        double t0 = bench_now_s();
        io_all(fds[0], buf, sizeof(buf), true, spin);
        io_all(fds[0], buf, sizeof(buf), false, spin);
        lat[i] = (bench_now_s() - t0) * 1e6;
    }
    pthread_join(thread, NULL);
    record_quantiles(spin ? R_TCPS_P50 : R_TCP_P50, lat, n);
}

static void bench_tcp(const Config *cfg)
{
    int fds[2];
    pthread_t thread;

    tcp_pair(fds);
    tcp_rtt(fds, cfg->tcp_rtts, false);
    tcp_rtt(fds, cfg->tcp_rtts, true);

    size_t chunk = 256 * 1024;
    g_autofree char *data = g_malloc0(chunk);
    Peer sink = { fds[1], cfg->tcp_bytes, false };
    pthread_create(&thread, NULL, sink_fn, &sink);
    double t0 = bench_now_s();
    for (size_t sent = 0; sent < cfg->tcp_bytes; sent += chunk) {
        io_all(fds[0], data, MIN(chunk, cfg->tcp_bytes - sent), true, false);
    }
    pthread_join(thread, NULL);
    record(R_TCP_BULK, cfg->tcp_bytes / (bench_now_s() - t0) / 1e9);
    close(fds[0]);
    close(fds[1]);
}

/* ---- Report ---------------------------------------------------------------------- */

static char *table(const Config *cfg)
{
    GString *s = g_string_new(NULL);
    g_autofree char *machine = bench_machine_line();
    g_autoptr(GDateTime) now = g_date_time_new_now_utc();
    g_autofree char *date = g_date_time_format(now, "%Y-%m-%d");

    g_string_append_printf(s, "Measured %s on %s; median of %d interleaved "
                           "runs, with min and max.  Faults: %zu per run; "
                           "placement: %zu MiB per row per run (a large "
                           "fill: %zu GiB); TCP: %zu "
                           "round trips and %zu MiB bulk per run.\n\n",
                           date, machine, cfg->runs, cfg->fault_pages,
                           cfg->fill_bytes / MiB, cfg->cold_bytes / (1024 * MiB),
                           cfg->tcp_rtts,
                           cfg->tcp_bytes / MiB);
    g_string_append(s, "| measurement | median | min | max | unit |\n");
    g_string_append(s, "|---|---:|---:|---:|---|\n");
    for (int i = 0; i < R__MAX; i++) {
        GArray *v = rows[i].values;
        g_array_sort(v, bench_cmp_double);
        double *d = (double *)v->data;
        /* Median of an even count: the mean of the middle two. */
        double med = v->len % 2 ? d[v->len / 2] :
                     (d[v->len / 2 - 1] + d[v->len / 2]) / 2;
        g_string_append_printf(s, "| %s | %.2f | %.2f | %.2f | %s |\n",
                               rows[i].name, med, d[0], d[v->len - 1],
                               rows[i].unit);
    }
    return g_string_free(s, false);
}

int main(int argc, char **argv)
{
    Config cfg = {
        .runs = 5, .fault_pages = 20000, .fill_bytes = 256 * MiB,
        .cold_bytes = 8192 * MiB,
        .tcp_rtts = 20000, .tcp_bytes = 1024 * MiB,
    };
    gboolean quick = false;
    g_autofree char *doc = NULL;
    GOptionEntry entries[] = {
        { "runs", 'r', 0, G_OPTION_ARG_INT, &cfg.runs,
          "Interleaved runs (default 5)", "N" },
        { "quick", 'q', 0, G_OPTION_ARG_NONE, &quick,
          "One short run, for a demonstration", NULL },
        { "doc", 'd', 0, G_OPTION_ARG_FILENAME, &doc,
          "Write the table into this markdown file", "PATH" },
        { NULL },
    };
    g_autoptr(GOptionContext) ctx = g_option_context_new(
        "- the userfaultfd and loopback TCP floor under postcopy");
    g_autoptr(GError) err = NULL;

    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!g_option_context_parse(ctx, &argc, &argv, &err)) {
        fprintf(stderr, "uffd-floor: %s\n", err->message);
        return 1;
    }
    if (quick) {
        cfg = (Config) { .runs = 1, .fault_pages = 5000, .fill_bytes = 64 * MiB,
                         .cold_bytes = 2048 * MiB,
                         .tcp_rtts = 5000, .tcp_bytes = 256 * MiB };
    }
    if (cfg.runs < 1) {
        fprintf(stderr, "uffd-floor: --runs must be at least 1\n");
        return 1;
    }
    for (int i = 0; i < R__MAX; i++) {
        rows[i].values = g_array_new(false, false, sizeof(double));
    }
    for (int r = 0; r < cfg.runs; r++) {
        fprintf(stderr, "uffd-floor: run %d of %d\n", r + 1, cfg.runs);
        bench_fault(&cfg, false);
        bench_fault(&cfg, true);
        bench_fill(&cfg);
        bench_cold(&cfg);
        bench_tcp(&cfg);
    }
    g_autofree char *t = table(&cfg);
    fputs(t, stdout);
    fflush(stdout);
    if (doc && !bench_write_doc(doc, "uffd-floor", "Floor: userfaultfd and "
                                         "loopback TCP (bench/uffd-floor)",
                                         t, &err)) {
        fprintf(stderr, "uffd-floor: %s\n", err->message);
        return 1;
    }
    return 0;
}
