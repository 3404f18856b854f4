/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The return path (migration/return-path.c): each message written and
 * read back, malformed messages and requests refused; and the fault
 * thread's requests (migration/postcopy-ram.c): one request per missing
 * page however many threads wait on it, none for a page in place; the
 * preempt channel read and placed by the fault thread, and the
 * end of the main stream waiting for the pages still on it; recovery's
 * messages and the fault side's resume.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <glib.h>
#include <gio/gio.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "migration/postcopy-ram.h"
#include "migration/qemu-file.h"
#include "migration/return-path.h"
#include "migration/stream.h"
#include "qemu/bitmap.h"
#include "qemu/histogram.h"

#define NPAGES  64

static GBytes *encode(const RPMessage *msgs, int n)
{
    QEMUFile *w = qemu_file_new_mem_writer();
    for (int i = 0; i < n; i++) {
        rp_put(w, &msgs[i]);
    }
    return qemu_file_mem_finish(w);
}

static void test_roundtrip(void **state)
{
    (void)state;
    RPMessage in[] = {
        { .type = RP_REQ_PAGES, .off = 0x123456789000ULL, .count = 7 },
        { .type = RP_RUNNING },
        { .type = RP_SHUT, .status = 1 },
        { .type = RP_PONG, .id = 0xa1b2c3d4 },
    };
    g_autoptr(GBytes) b = encode(in, 4);
    /* The wire format of docs/migration-stream.md: 13 + 1 + 5 + 5 bytes. */
    assert_int_equal(g_bytes_get_size(b), 24);
    const uint8_t *p = g_bytes_get_data(b, NULL);
    assert_int_equal(p[0], RP_REQ_PAGES);
    assert_int_equal(p[1], 0x00);           /* little-endian offset */
    assert_int_equal(p[2], 0x90);
    assert_int_equal(p[9], 7);              /* little-endian count */
    assert_int_equal(p[19], RP_PONG);
    assert_int_equal(p[20], 0xd4);          /* little-endian id */
    QEMUFile *r = qemu_file_new_mem(p, g_bytes_get_size(b));
    for (int i = 0; i < 4; i++) {
        RPMessage m;
        g_autoptr(GError) err = NULL;
        assert_true(rp_get(r, &m, &err));
        assert_int_equal(m.type, in[i].type);
        assert_int_equal(m.off, in[i].off);
        assert_int_equal(m.count, in[i].count);
        assert_int_equal(m.status, in[i].status);
        assert_int_equal(m.id, in[i].id);
    }
    /* Past the end: a stream error, not a message. */
    RPMessage m;
    g_autoptr(GError) err = NULL;
    assert_false(rp_get(r, &m, &err));
    assert_non_null(err);
    qemu_file_close(r);
}

/* RP_REASON: the destination's reason, cut at RP_REASON_MAX; a longer
 * one on the wire is refused. */
static void test_reason(void **state)
{
    (void)state;
    RPMessage in = { .type = RP_REASON };
    memset(in.text, 'x', RP_REASON_MAX);
    in.text[RP_REASON_MAX] = '\0';
    RPMessage small = { .type = RP_REASON };
    strcpy(small.text, "RAM record lies outside block 'pc.ram'");
    RPMessage both[] = { small, in };
    g_autoptr(GBytes) b = encode(both, 2);
    gsize len;
    const uint8_t *p = g_bytes_get_data(b, &len);
    assert_int_equal(len, 3 + strlen(small.text) + 3 + RP_REASON_MAX);
    QEMUFile *r = qemu_file_new_mem(p, len);
    RPMessage m;
    assert_true(rp_get(r, &m, NULL));
    assert_string_equal(m.text, small.text);
    assert_true(rp_get(r, &m, NULL));
    assert_int_equal(strlen(m.text), RP_REASON_MAX);
    qemu_file_close(r);
    static const uint8_t too_long[] = { RP_REASON, 0x01, 0x04 };    /* 1025 */
    g_autoptr(GError) err = NULL;
    r = qemu_file_new_mem(too_long, sizeof(too_long));
    assert_false(rp_get(r, &m, &err));
    assert_non_null(strstr(err->message, "a reason of 1025 bytes"));
    qemu_file_close(r);
}

static void test_malformed(void **state)
{
    (void)state;
    static const uint8_t unknown[] = { 0x7f };
    static const uint8_t cut[] = { RP_REQ_PAGES, 0, 0x10, 0 };
    static const uint8_t cut_pong[] = { RP_PONG, 1, 0 };
    RPMessage m;
    g_autoptr(GError) e1 = NULL, e2 = NULL, e3 = NULL;
    QEMUFile *r = qemu_file_new_mem(unknown, sizeof(unknown));
    assert_false(rp_get(r, &m, &e1));
    assert_non_null(strstr(e1->message, "unknown message 0x7f"));
    qemu_file_close(r);
    r = qemu_file_new_mem(cut, sizeof(cut));
    assert_false(rp_get(r, &m, &e2));
    assert_non_null(strstr(e2->message, "cut short"));
    qemu_file_close(r);
    r = qemu_file_new_mem(cut_pong, sizeof(cut_pong));
    assert_false(rp_get(r, &m, &e3));
    assert_non_null(strstr(e3->message, "message 0x04 cut short"));
    qemu_file_close(r);
}

/* Recovery's messages: the bitmap (not a whole number of words, bits
 * past its end dropped) and RESUME_ACK; a bitmap without its end marker
 * or of no pages is refused. */
static void test_recv_bitmap(void **state)
{
    (void)state;
    enum { N = 64 * 3 + 13 };
    g_autofree unsigned long *map = bitmap_new(N + 64);
    for (int p = 0; p < N; p += 3) {
        set_bit(p, map);
    }
    set_bit(N + 5, map);                /* past the block: not sent as a page */
    RPMessage in[] = {
        { .type = RP_RECV_BITMAP, .text = "pc.ram", .bitmap = map, .npages = N },
        { .type = RP_RESUME_ACK },
    };
    g_autoptr(GBytes) b = encode(in, 2);
    /* type, name, pages, 4 words, marker; then type and u32 */
    assert_int_equal(g_bytes_get_size(b), 1 + 1 + 6 + 8 + 4 * 8 + 8 + 5);
    QEMUFile *r = qemu_file_new_mem(g_bytes_get_data(b, NULL), g_bytes_get_size(b));
    RPMessage m;
    g_autoptr(GError) err = NULL;
    assert_true(rp_get(r, &m, &err));
    assert_int_equal(m.type, RP_RECV_BITMAP);
    assert_string_equal(m.text, "pc.ram");
    assert_int_equal(m.npages, N);
    for (int p = 0; p < N; p++) {
        assert_int_equal(test_bit(p, m.bitmap), p % 3 == 0);
    }
    /* The word past the last page's bit holds nothing. */
    assert_int_equal(m.bitmap[N / 64] >> (N % 64), 0);
    bitmap_free(m.bitmap);
    assert_true(rp_get(r, &m, &err));
    assert_int_equal(m.type, RP_RESUME_ACK);
    assert_int_equal(m.status, 1);
    qemu_file_close(r);

    /* The marker wrong, or no pages: refused, nothing left allocated. */
    GByteArray *bad = g_byte_array_new();
    g_byte_array_append(bad, g_bytes_get_data(b, NULL), g_bytes_get_size(b) - 5);
    bad->data[bad->len - 1] ^= 1;
    r = qemu_file_new_mem(bad->data, bad->len);
    g_clear_error(&err);
    assert_false(rp_get(r, &m, &err));
    assert_non_null(strstr(err->message, "not its marker"));
    assert_null(m.bitmap);
    qemu_file_close(r);
    static const uint8_t none[] = { RP_RECV_BITMAP, 1, 'x', 0, 0, 0, 0, 0, 0, 0, 0 };
    r = qemu_file_new_mem(none, sizeof(none));
    g_clear_error(&err);
    assert_false(rp_get(r, &m, &err));
    assert_non_null(strstr(err->message, "bitmap of 0 pages"));
    qemu_file_close(r);
    g_byte_array_unref(bad);
}

static void test_check_request(void **state)
{
    (void)state;
    RAMBlock rb = { .name = (char *)"pc.ram", .size = NPAGES * TARGET_PAGE_SIZE };
    static const struct { uint64_t off; uint32_t count; bool ok; } t[] = {
        { 0, 1, true },
        { (NPAGES - 1) * TARGET_PAGE_SIZE, 1, true },
        { 0, NPAGES, true },
        { TARGET_PAGE_SIZE + 1, 1, false },                 /* not page aligned */
        { 0, 0, false },                        /* empty */
        { 0, STREAM_MAX_RUN + 1, false },       /* absurd length */
        { NPAGES * TARGET_PAGE_SIZE, 1, false },            /* past the end */
        { (NPAGES - 1) * TARGET_PAGE_SIZE, 2, false },      /* runs over the end */
        { UINT64_MAX - TARGET_PAGE_SIZE + 1, 2, false },    /* wraps around */
    };
    for (size_t i = 0; i < G_N_ELEMENTS(t); i++) {
        g_autoptr(GError) err = NULL;
        assert_int_equal(rp_check_request(&rb, t[i].off, t[i].count, &err),
                         t[i].ok);
        if (!t[i].ok) {
            assert_non_null(strstr(err->message, "block 'pc.ram'"));
        }
    }
}

/* ---- The fault thread's requests --------------------------------------- */

/* The next message the fault thread sent, past its heartbeats (it sends
 * one every POSTCOPY_HEARTBEAT_MS from LISTEN on). */
static bool next_message(QEMUFile *f, RPMessage *m, GError **errp)
{
    while (rp_get(f, m, errp)) {
        if (m->type != RP_PONG || m->id != RP_HEARTBEAT_ID) {
            return true;
        }
    }
    return false;
}

typedef struct Toucher {
    volatile uint8_t *addr;
    uint8_t seen;
} Toucher;

static gpointer touch(gpointer opaque)
{
    Toucher *t = opaque;
    t->seen = *t->addr;
    return NULL;
}

/* Wait (up to 10 s) for *@v to reach @want: a test hang, not a timing. */
static void wait_for(uint64_t *v, uint64_t want)
{
    for (int i = 0; i < 10000 && __atomic_load_n(v, __ATOMIC_ACQUIRE) < want; i++) {
        g_usleep(1000);
    }
    assert_int_equal(__atomic_load_n(v, __ATOMIC_ACQUIRE), want);
}

static void place(RAMLoader *l, RAMLoadBuf *b, uint64_t page, uint8_t fill)
{
    uint8_t data[TARGET_PAGE_SIZE];
    memset(data, fill, TARGET_PAGE_SIZE);
    QEMUFile *mf = qemu_file_new_mem(data, TARGET_PAGE_SIZE);
    g_autoptr(GError) err = NULL;
    assert_true(ram_load_pages(l, b, mf, page * TARGET_PAGE_SIZE, 1, &err));
    qemu_file_close(mf);
}

/*
 * A RAM block with its loader and a postcopy fault side over it, whose
 * return path is one end of @sv; false (skip) without userfaultfd.
 */
typedef struct Faults {
    RAMBlock *rb;
    RAMLoader l;
    RAMLoadBuf b;
    Machine m;
    PostcopyIncoming pc;
    int sv[2];
} Faults;

/* The block, its loader and the fault side over it; false (skip)
 * without userfaultfd.  Shared with the preempt channel's fixture. */
static bool loader_setup(RAMBlock **rb, RAMLoader *l, RAMLoadBuf *b,
                         Machine *m, PostcopyIncoming *pc)
{
    *rb = ram_block_new_anon("pc.ram", NPAGES * TARGET_PAGE_SIZE, NULL);
    ram_loader_init(l, *rb);
    if (!l->registered) {
        print_message("# SKIP: %s\n", l->why_no_uffd);
        ram_loader_cleanup(l);
        ram_block_free(*rb);
        return false;
    }
    ram_load_buf_init(b, l);
    postcopy_incoming_init(pc, m, l);
    return true;
}

/* After postcopy_incoming_cleanup(). */
static void loader_cleanup(RAMBlock *rb, RAMLoader *l, RAMLoadBuf *b)
{
    ram_load_buf_cleanup(b);
    ram_loader_cleanup(l);
    ram_block_free(rb);
}

static bool faults_setup(Faults *f)
{
    memset(f, 0, sizeof(*f));
    if (!loader_setup(&f->rb, &f->l, &f->b, &f->m, &f->pc)) {
        return false;
    }
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, f->sv), 0);
    return true;
}

/* Undo faults_setup; @reader (or NULL) reads sv[1] until sv[0] closes. */
static void faults_cleanup(Faults *f, GThread *reader)
{
    postcopy_incoming_cleanup(&f->pc);
    close(f->sv[0]);
    if (reader) {
        g_thread_join(reader);
    }
    close(f->sv[1]);
    loader_cleanup(f->rb, &f->l, &f->b);
}

static void test_dedup(void **state)
{
    (void)state;
    Faults f;
    if (!faults_setup(&f)) {
        skip();
    }
    RAMBlock *rb = f.rb;
    int *sv = f.sv;
    g_autoptr(GError) err = NULL;
    /* Precopy, before: page 11 comes as zero and is left unmapped. */
    assert_true(ram_load_zero(&f.l, &f.b, 11 * TARGET_PAGE_SIZE, 1, &err));
    assert_true(ram_load_zero_left(&f.l, 11));
    assert_true(postcopy_listen(&f.pc, sv[0], false, &err));

    /* A page in place already: read without a fault, no request. */
    place(&f.l, &f.b, 7, 0x77);
    assert_int_equal(rb->host[7 * TARGET_PAGE_SIZE], 0x77);

    /* Two threads on one missing page: one request, the second fault
     * is counted as a duplicate; both wake when the page is placed. */
    Toucher t1 = { .addr = rb->host + 5 * TARGET_PAGE_SIZE + 8 };
    Toucher t2 = { .addr = rb->host + 5 * TARGET_PAGE_SIZE + 100 };
    GThread *th1 = g_thread_new("touch1", touch, &t1);
    wait_for(&f.pc.requests, 1);
    QEMUFile *src = qemu_file_new(sv[1], false, false);
    RPMessage req;
    assert_true(next_message(src, &req, &err));
    assert_int_equal(req.type, RP_REQ_PAGES);
    assert_int_equal(req.off, 5 * TARGET_PAGE_SIZE);
    assert_int_equal(req.count, 1);
    GThread *th2 = g_thread_new("touch2", touch, &t2);
    wait_for(&f.pc.dup_faults, 1);
    assert_int_equal(__atomic_load_n(&f.pc.requests, __ATOMIC_ACQUIRE), 1);
    place(&f.l, &f.b, 5, 0x55);
    g_thread_join(th1);
    g_thread_join(th2);
    assert_int_equal(t1.seen, 0x55);
    assert_int_equal(t2.seen, 0x55);

    /* A page that came as zero in precopy and was left unmapped: the
     * source will not send it again, so the fault thread maps zeros
     * itself, with no request. */
    Toucher tz = { .addr = rb->host + 11 * TARGET_PAGE_SIZE + 64 };
    GThread *thz = g_thread_new("touchz", touch, &tz);
    g_thread_join(thz);
    assert_int_equal(tz.seen, 0);
    assert_int_equal(__atomic_load_n(&f.pc.zero_faults, __ATOMIC_ACQUIRE), 1);
    assert_int_equal(__atomic_load_n(&f.pc.requests, __ATOMIC_ACQUIRE), 1);

    /* Nothing else was sent: the next message is the next request. */
    Toucher t3 = { .addr = rb->host + 9 * TARGET_PAGE_SIZE };
    GThread *th3 = g_thread_new("touch3", touch, &t3);
    assert_true(next_message(src, &req, &err));
    assert_int_equal(req.off, 9 * TARGET_PAGE_SIZE);
    place(&f.l, &f.b, 9, 0x99);
    g_thread_join(th3);
    assert_int_equal(t3.seen, 0x99);
    assert_int_equal(__atomic_load_n(&f.pc.requests, __ATOMIC_ACQUIRE), 2);

    qemu_file_close(src);
    faults_cleanup(&f, NULL);
}

/*
 * x-postcopy-fault-threads: RAM in four ranges, each with its own
 * userfaultfd and fault thread.  A thread waits on a page of each range:
 * every fault is read (a single fault thread read the first range's fd
 * only, and the other three waited for ever), each asks once, and each
 * placement wakes its waiter.  The statistics count per range, and the
 * waiters, not vCPUs here, in postcopy-non-vcpu-latency.
 */
static void test_shards(void **state)
{
    (void)state;
    Faults f;
    memset(&f, 0, sizeof(f));
    f.rb = ram_block_new_anon("pc.ram", NPAGES * TARGET_PAGE_SIZE, NULL);
    ram_loader_init_shards(&f.l, f.rb, 4);
    if (!f.l.registered) {
        print_message("# SKIP: %s\n", f.l.why_no_uffd);
        ram_loader_cleanup(&f.l);
        ram_block_free(f.rb);
        skip();
    }
    ram_load_buf_init(&f.b, &f.l);
    postcopy_incoming_init(&f.pc, &f.m, &f.l);
    assert_int_equal(f.pc.nshards, 4);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, f.sv), 0);
    g_autoptr(GError) err = NULL;
    assert_true(postcopy_listen(&f.pc, f.sv[0], false, &err));

    Toucher t[4];
    GThread *th[4];
    for (int i = 0; i < 4; i++) {
        t[i] = (Toucher) { .addr = f.rb->host +
                                   (i * (NPAGES / 4) + 5) * TARGET_PAGE_SIZE };
        th[i] = g_thread_new("touch", touch, &t[i]);
    }
    wait_for(&f.pc.requests, 4);
    QEMUFile *src = qemu_file_new(f.sv[1], false, false);
    uint64_t asked = 0;
    for (int i = 0; i < 4; i++) {
        RPMessage req;
        assert_true(next_message(src, &req, &err));
        assert_int_equal(req.type, RP_REQ_PAGES);
        assert_int_equal(req.count, 1);
        uint64_t page = req.off / TARGET_PAGE_SIZE;
        assert_int_equal(page % (NPAGES / 4), 5);
        asked |= 1ull << (page / (NPAGES / 4));
    }
    assert_int_equal(asked, 0xf);
    for (int i = 0; i < 4; i++) {
        place(&f.l, &f.b, i * (NPAGES / 4) + 5, (uint8_t)(0x40 + i));
    }
    for (int i = 0; i < 4; i++) {
        g_thread_join(th[i]);
        assert_int_equal(t[i].seen, 0x40 + i);
    }
    assert_int_equal(postcopy_faults_waiting(&f.pc), 0);

    JsonObject *r = json_object_new();
    postcopy_stats(&f.pc, r);
    JsonArray *shards = json_object_get_array_member(r, "x-postcopy-fault-shards");
    assert_int_equal(json_array_get_length(shards), 4);
    for (int i = 0; i < 4; i++) {
        JsonObject *o = json_array_get_object_element(shards, i);
        assert_int_equal(json_object_get_int_member(o, "requests"), 1);
        assert_int_equal(json_object_get_int_member(o, "served"), 1);
        assert_true(json_object_get_int_member(o, "faults") >= 1);
        assert_true(json_object_get_int_member(o, "latency") > 0);
    }
    assert_true(json_object_get_int_member(r, "postcopy-non-vcpu-latency") > 0);
    json_object_unref(r);

    qemu_file_close(src);
    postcopy_incoming_cleanup(&f.pc);
    close(f.sv[0]);
    close(f.sv[1]);
    loader_cleanup(f.rb, &f.l, &f.b);
}

/* Read and drop requests until the source's end closes. */
static gpointer drop_requests(gpointer opaque)
{
    int fd = GPOINTER_TO_INT(opaque);
    char buf[4096];
    while (read(fd, buf, sizeof(buf)) > 0) {
    }
    return NULL;
}

typedef struct Sweeper {
    RAMBlock *rb;
    uint64_t first, n;
} Sweeper;

static gpointer sweep(gpointer opaque)
{
    Sweeper *w = opaque;
    for (uint64_t p = w->first; p < w->first + w->n; p++) {
        (void)*(volatile uint8_t *)(w->rb->host + p * TARGET_PAGE_SIZE);
    }
    return NULL;
}

/*
 * The fault thread and a placing thread race on the same pages: vCPUs
 * (threads here) fault while the pages are placed.  The fault thread
 * checks whether a page is in, notes the fault and marks it requested;
 * placement marks it in and closes the fault's record.  Done in steps
 * outside one lock, a placement in between left a record behind for
 * ever (a later request on the page then waited out its whole spin,
 * and blocktime was wrong).  After every round the fault table is
 * empty.
 */
static void test_fault_race(void **state)
{
    (void)state;
    Faults f;
    if (!faults_setup(&f)) {
        skip();
    }
    RAMBlock *rb = f.rb;
    int *sv = f.sv;
    g_autoptr(GError) err = NULL;
    assert_true(postcopy_listen(&f.pc, sv[0], false, &err));
    GThread *reader = g_thread_new("requests", drop_requests,
                                   GINT_TO_POINTER(sv[1]));
    for (int round = 0; round < 1000; round++) {
        Sweeper w[4];
        GThread *th[4];
        for (int i = 0; i < 4; i++) {
            w[i] = (Sweeper) { rb, i * (NPAGES / 4), NPAGES / 4 };
            th[i] = g_thread_new("sweep", sweep, &w[i]);
        }
        for (uint64_t p = 0; p < NPAGES; p++) {
            place(&f.l, &f.b, (p * 17) % NPAGES, (uint8_t)round);
        }
        for (int i = 0; i < 4; i++) {
            g_thread_join(th[i]);
        }
        /* Every fault was read before its thread woke: none is pending. */
        g_mutex_lock(&f.pc.shard[0].lock);
        guint left = g_hash_table_size(f.pc.shard[0].faults);
        g_mutex_unlock(&f.pc.shard[0].lock);
        if (left) {
            print_message("# round %d: %u fault records left\n", round, left);
        }
        assert_int_equal(left, 0);
        /* Each latency recorded is a real one, not a placement's clock
         * read before the fault's (negative, so 2^64 - x us). */
        g_mutex_lock(&f.pc.shard[0].lock);
        uint64_t sane = hist_count_upto(&f.pc.shard[0].latency_hist, 3600000000ull);
        uint64_t all = f.pc.shard[0].latency_hist.count;
        g_mutex_unlock(&f.pc.shard[0].lock);
        if (sane != all) {
            print_message("# round %d: %" PRIu64 " of %" PRIu64 " latencies "
                          "negative\n", round, all - sane, all);
        }
        assert_int_equal(sane, all);
        /* Missing again for the next round. */
        f.l.postcopy = false;
        assert_true(ram_load_discard(&f.l, 0, NPAGES, &err));
        f.l.postcopy = true;
        bitmap_test_and_clear_atomic(f.pc.requested, 0, NPAGES);
    }
    faults_cleanup(&f, reader);
}

/*
 * query-migrate's postcopy-latency-dist on the main thread: QEMU 10.1's
 * 24 buckets, the last holding all from 2^23 us on.  A latency at the
 * top of the range (2^64 - 5 us: a negative one, as the fault-race
 * above could record before) kept the loop going past 2^63 us for ever,
 * growing the reply until memory ran out, and QMP never answered.  Run
 * in a child with a memory limit and an alarm, so that a loop fails.
 */
static void test_stats_bounded(void **state)
{
    (void)state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit lim = { 1ull << 30, 1ull << 30 };
        setrlimit(RLIMIT_AS, &lim);
        alarm(10);
        Machine m = { .ncpus = 1 };
        RAMLoader l = { .npages = 1 };
        PostcopyIncoming pc;
        postcopy_incoming_init(&pc, &m, &l);
        hist_add(&pc.shard[0].latency_hist, 3);
        hist_add(&pc.shard[0].latency_hist, UINT64_MAX - 4);
        JsonObject *r = json_object_new();
        postcopy_stats(&pc, r);
        JsonArray *dist = json_object_get_array_member(r, "postcopy-latency-dist");
        guint n = json_array_get_length(dist);
        int64_t sum = 0;
        for (guint i = 0; i < n; i++) {
            sum += json_array_get_int_element(dist, i);
        }
        /* [0, 2), [2, 4) ... [2^23, ...): 24 buckets, both values in. */
        bool ok = n == 24 && sum == 2 &&
                  json_array_get_int_element(dist, 1) == 1 &&
                  json_array_get_int_element(dist, 23) == 1;
        json_object_unref(r);
        postcopy_incoming_cleanup(&pc);
        _exit(ok ? 0 : 1);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status)) {
        print_message("# the child ended by signal %d\n", WTERMSIG(status));
    }
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* ---- The preempt channel ------------------------------------------------- */

typedef struct Preempt {
    RAMBlock *rb;
    RAMLoader l;
    RAMLoadBuf b;
    Machine m;
    PostcopyIncoming pc;
    int rp[2], ch[2];           /* [0] the destination's end */
    QEMUFile *src_rp, *src_ch;  /* the source's ends */
} Preempt;

static bool preempt_setup(Preempt *u)
{
    memset(u, 0, sizeof(*u));
    if (!loader_setup(&u->rb, &u->l, &u->b, &u->m, &u->pc)) {
        return false;
    }
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, u->rp), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, u->ch), 0);
    g_autoptr(GError) err = NULL;
    assert_true(postcopy_listen(&u->pc, u->rp[0], true, &err));
    postcopy_attach_preempt(&u->pc, u->ch[0]);   /* the fault thread's now */
    u->src_rp = qemu_file_new(u->rp[1], false, true);
    u->src_ch = qemu_file_new(u->ch[1], true, true);
    return true;
}

static void preempt_cleanup(Preempt *u)
{
    postcopy_incoming_cleanup(&u->pc);
    qemu_file_close(u->src_rp);
    if (u->src_ch) {
        qemu_file_close(u->src_ch);
    }
    loader_cleanup(u->rb, &u->l, &u->b);
}

/* The source's side: the next request is for @page; answer it. */
static void serve_preempt(Preempt *u, uint64_t page, int fill)
{
    RPMessage req;
    g_autoptr(GError) err = NULL;
    assert_true(next_message(u->src_rp, &req, &err));
    assert_int_equal(req.type, RP_REQ_PAGES);
    assert_int_equal(req.off, page * TARGET_PAGE_SIZE);
    qemu_put_byte(u->src_ch, fill < 0 ? REC_RAM_ZERO : REC_RAM_PAGES);
    qemu_put_u64(u->src_ch, page * TARGET_PAGE_SIZE);
    qemu_put_u32(u->src_ch, 1);
    if (fill >= 0) {
        uint8_t data[TARGET_PAGE_SIZE];
        memset(data, fill, TARGET_PAGE_SIZE);
        qemu_put_buffer(u->src_ch, data, TARGET_PAGE_SIZE);
    }
    qemu_fflush(u->src_ch);
}

static void test_preempt(void **state)
{
    (void)state;
    Preempt u;
    if (!preempt_setup(&u)) {
        skip();
    }
    /* A page and a zero page come on the preempt channel, with nothing on
     * the main stream: the fault thread places them and the readers wake. */
    Toucher t1 = { .addr = u.rb->host + 5 * TARGET_PAGE_SIZE + 8 };
    GThread *th1 = g_thread_new("touch1", touch, &t1);
    serve_preempt(&u, 5, 0x5a);
    g_thread_join(th1);
    assert_int_equal(t1.seen, 0x5a);
    assert_true(ram_load_received(&u.l, 5));

    Toucher t2 = { .addr = u.rb->host + 7 * TARGET_PAGE_SIZE };
    GThread *th2 = g_thread_new("touch2", touch, &t2);
    serve_preempt(&u, 7, -1);
    g_thread_join(th2);
    assert_int_equal(t2.seen, 0);
    assert_true(ram_load_received(&u.l, 7));
    preempt_cleanup(&u);
}

typedef struct Drainer {
    PostcopyIncoming *pc;
    int done;                   /* atomic: 1 returned true, 2 false */
    char *error;
} Drainer;

static gpointer drain(gpointer opaque)
{
    Drainer *d = opaque;
    GError *err = NULL;
    bool ok = postcopy_drain(d->pc, &err);
    if (err) {
        d->error = g_strdup(err->message);
        g_error_free(err);
    }
    __atomic_store_n(&d->done, ok ? 1 : 2, __ATOMIC_RELEASE);
    return NULL;
}

/* Every page but @missing placed as if from the main stream. */
static void place_all_but(Preempt *u, uint64_t missing)
{
    for (uint64_t p = 0; p < NPAGES; p++) {
        if (p != missing && !ram_load_received(&u->l, p)) {
            place(&u->l, &u->b, p, (uint8_t)p);
        }
    }
}

static void test_drain(void **state)
{
    (void)state;
    Preempt u;
    if (!preempt_setup(&u)) {
        skip();
    }
    /* Page 9 is requested and on its way when the main stream ends: the
     * end waits for it instead of completing with it missing. */
    Toucher t = { .addr = u.rb->host + 9 * TARGET_PAGE_SIZE };
    GThread *th = g_thread_new("touch", touch, &t);
    wait_for(&u.pc.requests, 1);
    place_all_but(&u, 9);
    Drainer d = { .pc = &u.pc };
    GThread *dt = g_thread_new("drain", drain, &d);
    g_usleep(20000);
    assert_int_equal(__atomic_load_n(&d.done, __ATOMIC_ACQUIRE), 0);
    serve_preempt(&u, 9, 0x99);
    g_thread_join(dt);
    g_thread_join(th);
    assert_int_equal(d.done, 1);
    assert_int_equal(t.seen, 0x99);
    preempt_cleanup(&u);
}

static void test_drain_broken(void **state)
{
    (void)state;
    Preempt u;
    if (!preempt_setup(&u)) {
        skip();
    }
    /* The source ends the preempt channel (REC_EOF after its last page)
     * with page 9 never sent: the end fails (the destination pauses)
     * rather than complete without it, or wait for ever. */
    place_all_but(&u, 9);
    Drainer d = { .pc = &u.pc };
    GThread *dt = g_thread_new("drain", drain, &d);
    g_usleep(20000);
    assert_int_equal(__atomic_load_n(&d.done, __ATOMIC_ACQUIRE), 0);
    qemu_put_byte(u.src_ch, REC_EOF);
    qemu_fflush(u.src_ch);
    g_thread_join(dt);
    assert_int_equal(d.done, 2);
    assert_non_null(strstr(d.error, "1 guest pages missing"));
    assert_false(ram_load_received(&u.l, 9));
    g_free(d.error);
    /* Without preempt every page came on the main stream: one missing
     * at its end is an error at once. */
    u.pc.preempt_expected = false;
    Drainer d2 = { .pc = &u.pc };
    drain(&d2);
    assert_int_equal(d2.done, 2);
    assert_non_null(strstr(d2.error, "1 guest pages missing"));
    g_free(d2.error);
    preempt_cleanup(&u);
}

/* Source's end of a socket: true once it reads the end (the peer shut
 * it down), within a second. */
/* @fd reads its end within a second (past what came before it: the
 * fault thread's heartbeats on a return path). */
static bool reads_end(int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    char buf[256];
    ssize_t n;
    while (poll(&p, 1, 1000) == 1 && (n = read(fd, buf, sizeof(buf))) >= 0) {
        if (n == 0) {
            return true;
        }
    }
    return false;
}

static void test_shutdown(void **state)
{
    (void)state;
    Preempt u;
    if (!preempt_setup(&u)) {
        skip();
    }
    /* The destination pauses: the source reads the end of the return
     * path and of the preempt channel, and nothing is freed.  A vCPU
     * touching a missing page waits (its request cannot go out) until
     * the page is placed, rather than reading zeros. */
    signal(SIGPIPE, SIG_IGN);           /* as ferry's main() */
    postcopy_shutdown(&u.pc);
    assert_true(reads_end(u.rp[1]));
    assert_true(reads_end(u.ch[1]));
    Toucher t = { .addr = u.rb->host + 3 * TARGET_PAGE_SIZE };
    GThread *th = g_thread_new("touch", touch, &t);
    wait_for(&u.pc.requests, 1);
    g_usleep(20000);
    assert_false(ram_load_received(&u.l, 3));
    place(&u.l, &u.b, 3, 0x33);
    g_thread_join(th);
    assert_int_equal(t.seen, 0x33);

    /* A preempt channel accepted only now is shut down as it comes. */
    int late[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, late), 0);
    postcopy_attach_preempt(&u.pc, late[0]);
    assert_true(reads_end(late[1]));
    preempt_cleanup(&u);                 /* closes late[0] */
    close(late[1]);
}

/*
 * Recovery on the destination's fault side: a page asked for before the
 * break and one that faulted while paused are both asked again on the
 * new return path, after RESUME_ACK; the bitmap sent says exactly what is
 * in place (received, or zero left); the waiting threads get their
 * pages.  The fault thread is stopped between begin and resume.
 */
static void test_recover(void **state)
{
    (void)state;
    Faults f;
    if (!faults_setup(&f)) {
        skip();
    }
    RAMBlock *rb = f.rb;
    g_autoptr(GError) err = NULL;
    signal(SIGPIPE, SIG_IGN);
    assert_true(ram_load_zero(&f.l, &f.b, 11 * TARGET_PAGE_SIZE, 1, &err));
    assert_true(postcopy_listen(&f.pc, f.sv[0], false, &err));
    place(&f.l, &f.b, 7, 0x77);
    Toucher t5 = { .addr = rb->host + 5 * TARGET_PAGE_SIZE };
    GThread *th5 = g_thread_new("touch5", touch, &t5);
    QEMUFile *old = qemu_file_new(f.sv[1], false, false);
    RPMessage m;
    assert_true(next_message(old, &m, &err));
    assert_int_equal(m.off, 5 * TARGET_PAGE_SIZE);
    /* The break: its request is lost; page 6 faults while paused. */
    postcopy_shutdown(&f.pc);
    Toucher t6 = { .addr = rb->host + 6 * TARGET_PAGE_SIZE };
    GThread *th6 = g_thread_new("touch6", touch, &t6);
    wait_for(&f.pc.requests, 2);

    int nv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, nv), 0);
    postcopy_recover_begin(&f.pc, nv[0]);
    assert_null(f.pc.shard[0].thread);
    g_autofree unsigned long *in = ram_load_in_place_bitmap(&f.l);
    for (uint64_t p = 0; p < NPAGES; p++) {
        assert_int_equal(test_bit(p, in), p == 7 || p == 11);
    }
    assert_true(postcopy_recover_resume(&f.pc));
    QEMUFile *rp = qemu_file_new(nv[1], false, false);
    assert_true(next_message(rp, &m, &err));
    assert_int_equal(m.type, RP_RESUME_ACK);
    uint64_t asked = 0;
    for (int i = 0; i < 2; i++) {
        assert_true(next_message(rp, &m, &err));
        assert_int_equal(m.type, RP_REQ_PAGES);
        asked |= 1ull << (m.off / TARGET_PAGE_SIZE);
    }
    assert_int_equal(asked, (1ull << 5) | (1ull << 6));
    place(&f.l, &f.b, 5, 0x55);
    place(&f.l, &f.b, 6, 0x66);
    g_thread_join(th5);
    g_thread_join(th6);
    assert_int_equal(t5.seen, 0x55);
    assert_int_equal(t6.seen, 0x66);
    assert_int_equal(postcopy_faults_waiting(&f.pc), 0);
    qemu_file_close(rp);
    qemu_file_close(old);
    postcopy_incoming_cleanup(&f.pc);
    close(nv[0]);
    close(nv[1]);
    close(f.sv[0]);
    close(f.sv[1]);
    loader_cleanup(f.rb, &f.l, &f.b);
}

typedef struct ErrorSeen {
    GMutex lock;
    char *msg;                  /* under lock */
} ErrorSeen;

static void record_error(void *opaque, const char *msg)
{
    ErrorSeen *e = opaque;
    g_mutex_lock(&e->lock);
    g_free(e->msg);
    e->msg = g_strdup(msg);
    g_mutex_unlock(&e->lock);
}

/* The fault thread's error so far (a copy), or NULL. */
static char *error_seen(ErrorSeen *e)
{
    g_mutex_lock(&e->lock);
    char *m = g_strdup(e->msg);
    g_mutex_unlock(&e->lock);
    return m;
}

/*
 * The watch on the source: heartbeats on the return path from LISTEN on;
 * a vCPU that waits stall_ns with no page placed makes the fault thread
 * fail saying so (the load thread and the source then pause); one that
 * waits less does not.
 */
static void test_stall(void **state)
{
    (void)state;
    Faults f;
    if (!faults_setup(&f)) {
        skip();
    }
    RAMBlock *rb = f.rb;
    g_autoptr(GError) err = NULL;
    ErrorSeen seen = { .msg = NULL };
    g_mutex_init(&seen.lock);
    signal(SIGPIPE, SIG_IGN);
    f.pc.on_error = record_error;
    f.pc.on_error_opaque = &seen;
    f.pc.stall_ns = 300 * 1000000LL;
    assert_true(postcopy_listen(&f.pc, f.sv[0], false, &err));
    QEMUFile *src = qemu_file_new(f.sv[1], false, false);
    RPMessage m;
    assert_true(rp_get(src, &m, &err));
    assert_int_equal(m.type, RP_PONG);
    assert_int_equal(m.id, RP_HEARTBEAT_ID);
    /* Answered in time: nothing happens. */
    Toucher t1 = { .addr = rb->host + 1 * TARGET_PAGE_SIZE };
    GThread *th1 = g_thread_new("touch1", touch, &t1);
    assert_true(next_message(src, &m, &err));
    place(&f.l, &f.b, 1, 0x11);
    g_thread_join(th1);
    g_usleep(400000);
    g_autofree char *none = error_seen(&seen);
    assert_null(none);
    /* Never answered: the fault thread gives up, saying why. */
    Toucher t2 = { .addr = rb->host + 2 * TARGET_PAGE_SIZE };
    GThread *th2 = g_thread_new("touch2", touch, &t2);
    g_autofree char *why = NULL;
    for (int i = 0; i < 5000 && !(why = error_seen(&seen)); i++) {
        g_usleep(1000);
    }
    assert_non_null(why);
    assert_non_null(strstr(why, "x-postcopy-stall-timeout"));
    place(&f.l, &f.b, 2, 0x22);
    g_thread_join(th2);
    assert_int_equal(t2.seen, 0x22);
    qemu_file_close(src);
    faults_cleanup(&f, NULL);
    g_free(seen.msg);
    g_mutex_clear(&seen.lock);
}

int main(void)
{
    const struct CMUnitTest all[] = {
        { "/migration/return-path/roundtrip", test_roundtrip, NULL, NULL, NULL },
        { "/migration/return-path/malformed", test_malformed, NULL, NULL, NULL },
        { "/migration/return-path/reason", test_reason, NULL, NULL, NULL },
        { "/migration/return-path/recv-bitmap", test_recv_bitmap, NULL, NULL,
          NULL },
        { "/migration/return-path/check-request", test_check_request, NULL, NULL,
          NULL },
        { "/migration/postcopy/request-dedup", test_dedup, NULL, NULL, NULL },
        { "/migration/postcopy/fault-race", test_fault_race, NULL, NULL, NULL },
        { "/migration/postcopy/fault-shards", test_shards, NULL, NULL, NULL },
        { "/migration/postcopy/stats-bounded", test_stats_bounded, NULL, NULL,
          NULL },
        { "/migration/postcopy/preempt-channel", test_preempt, NULL, NULL, NULL },
        { "/migration/postcopy/drain", test_drain, NULL, NULL, NULL },
        { "/migration/postcopy/drain-broken", test_drain_broken, NULL, NULL,
          NULL },
        { "/migration/postcopy/shutdown", test_shutdown, NULL, NULL, NULL },
        { "/migration/postcopy/recover", test_recover, NULL, NULL, NULL },
        { "/migration/postcopy/stall", test_stall, NULL, NULL, NULL },
    };
    return cmocka_run_group_tests_name("return-path", all, NULL, NULL);
}
