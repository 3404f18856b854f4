/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The migration stream loader on hostile input: the seed corpus, then
 * thousands of mutations of it, each loaded into a real RAM block.
 * make check runs this under AddressSanitizer and
 * UndefinedBehaviorSanitizer too, so an out-of-bounds write or undefined
 * behaviour on any of them fails the build.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <glib.h>

#include "../fuzz/stream-harness.h"

static GPtrArray *corpus(void)
{
    GPtrArray *seeds = g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
    g_autoptr(GDir) dir = g_dir_open(CORPUS_DIR, 0, NULL);
    assert_non_null(dir);
    for (const char *n; (n = g_dir_read_name(dir)); ) {
        g_autofree char *path = g_build_filename(CORPUS_DIR, n, NULL);
        g_autofree char *data = NULL;
        gsize len;
        assert_true(g_file_get_contents(path, &data, &len, NULL));
        g_ptr_array_add(seeds, g_bytes_new(data, len));
    }
    assert_true(seeds->len >= 5);
    return seeds;
}

static void test_seeds(void **state)
{
    (void)state;
    g_autoptr(GPtrArray) seeds = corpus();
    int accepted = 0;
    for (guint i = 0; i < seeds->len; i++) {
        gsize len;
        const uint8_t *d = g_bytes_get_data(seeds->pdata[i], &len);
        g_autofree char *err = NULL;
        if (harness_load(d, len, &err)) {
            accepted++;
        } else {
            assert_non_null(err);
            assert_true(strlen(err) > 10);      /* says what was wrong */
        }
    }
    /* pages-then-eof has no device state: nothing in the corpus loads whole. */
    assert_int_equal(accepted, 0);
}

static void test_mutations(void **state)
{
    (void)state;
    g_autoptr(GPtrArray) seeds = corpus();
    GRand *rand = g_rand_new_with_seed(0x5eed);
    for (int iter = 0; iter < 3000; iter++) {
        gsize len;
        const uint8_t *d = g_bytes_get_data(seeds->pdata[iter % seeds->len], &len);
        /* Room for the appends below: at most 8 flips of 16 bytes. */
        g_autofree uint8_t *m = g_malloc(len + 8 * 16);
        memcpy(m, d, len);
        gsize mlen = len;
        int flips = g_rand_int_range(rand, 1, 8);
        for (int k = 0; k < flips; k++) {
            switch (g_rand_int_range(rand, 0, 4)) {
            case 0:     /* a random byte */
                if (mlen) {
                    m[g_rand_int_range(rand, 0, mlen)] = g_rand_int(rand);
                }
                break;
            case 1:     /* a random 32-bit field */
                if (mlen >= 4) {
                    uint32_t v = g_rand_int(rand);
                    memcpy(m + g_rand_int_range(rand, 0, mlen - 3), &v, 4);
                }
                break;
            case 2:     /* cut short */
                mlen = mlen ? g_rand_int_range(rand, 0, mlen) : 0;
                break;
            case 3:     /* a few random bytes on the end */
                for (int b = 0; b < 16; b++) {
                    m[mlen++] = g_rand_int(rand);
                }
                break;
            }
        }
        harness_load(m, mlen, NULL);    /* must not crash; result is free */
    }
    g_rand_free(rand);
}

typedef struct PingSeen {
    RAMLoader *ram;
    Machine *m;
    int calls;
    uint32_t id;
    bool before_in, after_in;
} PingSeen;

static bool seen_pong(void *opaque, uint32_t id, GError **errp)
{
    PingSeen *p = opaque;
    (void)errp;
    p->calls++;
    p->id = id;
    /* What came before the PING is in RAM, what follows is not read yet. */
    p->before_in = ram_load_received(p->ram, 0) && ((uint8_t *)p->m->ram->host)[0] == 0xab;
    p->after_in = ram_load_received(p->ram, 1);
    return true;
}

/* A stream: header, [return path], page 0, PING 0x01020304, page 1, EOF. */
static GBytes *ping_stream(bool return_path)
{
    QEMUFile *w = qemu_file_new_mem_writer();
    RAMBlock rb = { .name = (char *)"pc.ram", .size = HARNESS_RAM,
                    .page_size = 4096 };
    stream_put_header(w, &rb, (const uint8_t *)"0123456789abcdef");
    if (return_path) {
        qemu_put_byte(w, REC_OPEN_RETURN_PATH);
    }
    uint8_t page[4096];
    for (uint64_t p = 0; p < 2; p++) {
        memset(page, 0xab, sizeof(page));
        qemu_put_byte(w, REC_RAM_PAGES);
        qemu_put_u64(w, p * 4096);
        qemu_put_u32(w, 1);
        qemu_put_buffer(w, page, sizeof(page));
        if (p == 0) {
            qemu_put_byte(w, REC_PING);
            qemu_put_u32(w, 0x01020304);
        }
    }
    qemu_put_byte(w, REC_EOF);
    return qemu_file_mem_finish(w);
}

static bool load_ping_stream(bool return_path, PingSeen *seen, GError **errp)
{
    Machine m = { .ncpus = 1 };
    m.ram = ram_block_new_anon("pc.ram", HARNESS_RAM, NULL);
    pc_ram_layout(m.ram);
    m.kvm.fd = m.kvm.vm_fd = -1;
    m.vcpus[0].cpu.fd = -1;
    g_autoptr(GBytes) b = ping_stream(return_path);
    gsize len;
    const void *d = g_bytes_get_data(b, &len);
    QEMUFile *f = qemu_file_new_mem(d, len);
    MigrationStats stats = { 0 };
    RAMLoader ram;
    ram_loader_init(&ram, m.ram);
    *seen = (PingSeen) { .ram = &ram, .m = &m };
    StreamLoad l = { .m = &m, .stats = &stats, .ram = &ram,
                     .pong = seen_pong, .opaque = seen };
    bool ok = stream_load(f, &l, errp);
    qemu_file_close(f);
    ram_loader_cleanup(&ram);
    ram_block_free(m.ram);
    return ok;
}

static void test_ping(void **state)
{
    (void)state;
    PingSeen seen;
    g_autoptr(GError) err = NULL, err2 = NULL;
    /* No device state: the load fails at EOF, after the PING. */
    assert_false(load_ping_stream(true, &seen, &err));
    assert_non_null(strstr(err->message, "without the VM"));
    assert_int_equal(seen.calls, 1);
    assert_int_equal(seen.id, 0x01020304);
    assert_true(seen.before_in);
    assert_false(seen.after_in);
    /* No return path to answer on: refused, not ignored. */
    assert_false(load_ping_stream(false, &seen, &err2));
    assert_int_equal(seen.calls, 0);
    assert_non_null(strstr(err2->message, "PING 16909060"));
    assert_non_null(strstr(err2->message, "no return path"));
}

/* Header, return path, then each of @recs (a record type; RUN with an
 * empty package, DISCARD of page 0, ADVISE of 4 KiB pages, RECV_BITMAP
 * of pc.ram, RAM_ZERO of page 0), then EOF unless the last is EOF. */
static GBytes *postcopy_stream(const uint8_t *recs, int n)
{
    QEMUFile *w = qemu_file_new_mem_writer();
    RAMBlock rb = { .name = (char *)"pc.ram", .size = HARNESS_RAM,
                    .page_size = 4096 };
    stream_put_header(w, &rb, (const uint8_t *)"0123456789abcdef");
    qemu_put_byte(w, REC_OPEN_RETURN_PATH);
    for (int i = 0; i < n; i++) {
        qemu_put_byte(w, recs[i]);
        if (recs[i] == REC_POSTCOPY_ADVISE) {
            qemu_put_u64(w, 4096);
        } else if (recs[i] == REC_POSTCOPY_DISCARD) {
            qemu_put_u64(w, 0);
            qemu_put_u64(w, 1);
        } else if (recs[i] == REC_POSTCOPY_RUN) {
            qemu_put_u32(w, 0);
        } else if (recs[i] == REC_RECV_BITMAP) {
            qemu_put_byte(w, 6);
            qemu_put_buffer(w, "pc.ram", 6);
        } else if (recs[i] == REC_RAM_ZERO) {
            qemu_put_u64(w, 0);
            qemu_put_u32(w, 1);
        }
    }
    if (!n || recs[n - 1] != REC_EOF) {
        qemu_put_byte(w, REC_EOF);
    }
    return qemu_file_mem_finish(w);
}

/*
 * QEMU's order of the postcopy commands: ADVISE once, DISCARDs, LISTEN
 * once, RUN once.  Anything else is refused before it is acted on (a
 * second LISTEN started a second fault thread).
 */
static void test_postcopy_order(void **state)
{
    (void)state;
    enum { A = REC_POSTCOPY_ADVISE, D = REC_POSTCOPY_DISCARD,
           L = REC_POSTCOPY_LISTEN, R = REC_POSTCOPY_RUN };
    static const struct {
        uint8_t recs[6];
        int n;
        bool ok;
        int listens, runs;      /* hooks called */
    } t[] = {
        { { A, D, D, L, R }, 5, true, 1, 1 },
        { { A, L, R }, 3, true, 1, 1 },
        { { L }, 1, false, 0, 0 },
        { { D }, 1, false, 0, 0 },
        { { R }, 1, false, 0, 0 },
        { { A, A }, 2, false, 0, 0 },
        { { A, R }, 2, false, 0, 0 },
        { { A, L, L }, 3, false, 1, 0 },
        { { A, L, D }, 3, false, 1, 0 },
        { { A, L, A }, 3, false, 1, 0 },
        { { A, L, R, R }, 4, false, 1, 1 },
        { { A, L, R, L }, 4, false, 1, 1 },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(t); i++) {
        g_autoptr(GBytes) b = postcopy_stream(t[i].recs, t[i].n);
        gsize len;
        const uint8_t *d = g_bytes_get_data(b, &len);
        HarnessPostcopy h = { 0 };
        g_autofree char *err = NULL;
        bool ok = harness_load_into(harness_machine(), d, len, &h, &err);
        if (ok != t[i].ok || h.listen != t[i].listens || h.run != t[i].runs) {
            print_message("# case %zu: ok %d listen %d run %d: %s\n", i, ok,
                          h.listen, h.run, err ? err : "");
        }
        assert_int_equal(ok, t[i].ok);
        assert_int_equal(h.listen, t[i].listens);
        assert_int_equal(h.run, t[i].runs);
        if (!ok) {
            assert_non_null(strstr(err, "out of order"));
        }
    }
}

/*
 * A resumed stream (recovery): RECV_BITMAP (any number), then
 * POSTCOPY_RESUME, then pages; nothing of the switch again, no page
 * before RESUME, not another migration's, and not ended before RESUME
 * (it loaded "whole", and the destination stayed in postcopy-recover
 * with its fault thread stopped).  A stream that is not a resumed one
 * takes neither record.
 */
static void test_resume_order(void **state)
{
    (void)state;
    enum { B = REC_RECV_BITMAP, S = REC_POSTCOPY_RESUME, Z = REC_RAM_ZERO,
           A = REC_POSTCOPY_ADVISE, L = REC_POSTCOPY_LISTEN, E = REC_EOF };
    static const struct {
        bool resume;
        uint8_t recs[6];
        int n;
        const char *err;        /* NULL: loads whole */
        int bitmaps, resumes;
    } t[] = {
        { true, { B, S, Z }, 3, NULL, 1, 1 },
        { true, { B, B, S }, 3, NULL, 2, 1 },
        { true, { S, Z }, 2, NULL, 0, 1 },
        { true, { Z }, 1, "RAM before POSTCOPY_RESUME", 0, 0 },
        { true, { B, Z, S }, 3, "RAM before POSTCOPY_RESUME", 1, 0 },
        { true, { B, S, B }, 3, "out of order", 1, 1 },
        { true, { S, S }, 2, "out of order", 0, 1 },
        { true, { A }, 1, "out of order", 0, 0 },
        { true, { L }, 1, "out of order", 0, 0 },
        { true, { B, E }, 2, "before POSTCOPY_RESUME", 1, 0 },
        { true, { E }, 1, "before POSTCOPY_RESUME", 0, 0 },
        { false, { B }, 1, "out of order", 0, 0 },
        { false, { S }, 1, "out of order", 0, 0 },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(t); i++) {
        g_autoptr(GBytes) b = postcopy_stream(t[i].recs, t[i].n);
        gsize len;
        const uint8_t *d = g_bytes_get_data(b, &len);
        HarnessPostcopy h = { .resume = t[i].resume };
        memcpy(h.resume_id, "0123456789abcdef", STREAM_ID_LEN);
        g_autofree char *err = NULL;
        bool ok = harness_load_into(harness_machine(), d, len, &h, &err);
        if (ok != !t[i].err || h.recv_bitmap != t[i].bitmaps ||
            h.resumed != t[i].resumes) {
            print_message("# case %zu: ok %d bitmaps %d resumes %d: %s\n", i,
                          ok, h.recv_bitmap, h.resumed, err ? err : "");
        }
        assert_int_equal(ok, !t[i].err);
        assert_int_equal(h.recv_bitmap, t[i].bitmaps);
        assert_int_equal(h.resumed, t[i].resumes);
        if (t[i].err) {
            assert_non_null(strstr(err, t[i].err));
        }
    }
    /* Another migration's stream, however well formed. */
    static const uint8_t ok_recs[] = { B, S };
    g_autoptr(GBytes) b = postcopy_stream(ok_recs, 2);
    HarnessPostcopy h = { .resume = true };
    memcpy(h.resume_id, "fedcba9876543210", STREAM_ID_LEN);
    g_autofree char *err = NULL;
    assert_false(harness_load_into(harness_machine(), g_bytes_get_data(b, NULL),
                                   g_bytes_get_size(b), &h, &err));
    assert_non_null(strstr(err, "another migration"));
    assert_int_equal(h.recv_bitmap, 0);
}

/* The channel header: what a destination reads before giving a
 * connection its role. */
static void test_channel_header(void **state)
{
    (void)state;
    QEMUFile *w = qemu_file_new_mem_writer();
    stream_put_channel(w, STREAM_CHANNEL_PREEMPT,
                       (const uint8_t *)"0123456789abcdef");
    g_autoptr(GBytes) b = qemu_file_mem_finish(w);
    gsize len;
    const uint8_t *d = g_bytes_get_data(b, &len);
    assert_int_equal(len, STREAM_CHANNEL_HEADER_LEN);
    StreamChannel c;
    assert_int_equal(stream_parse_channel(d, len, &c, NULL), 1);
    assert_int_equal(c.role, STREAM_CHANNEL_PREEMPT);
    assert_memory_equal(c.id, "0123456789abcdef", STREAM_ID_LEN);
    /* Checked as far as it goes: a good beginning asks for more. */
    for (size_t n = 0; n < len; n++) {
        assert_int_equal(stream_parse_channel(d, n, &c, NULL), 0);
    }
    assert_int_equal(stream_parse_channel((const uint8_t *)"GET", 3, &c, NULL), -1);
    static const struct { int at; uint8_t v; const char *want; } bad[] = {
        { 0, 'Q', "not a ferry migration channel" },
        { 4, 1, "unsupported migration stream version 1" },
        { 8, 9, "unknown migration channel role 9" },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        uint8_t h[STREAM_CHANNEL_HEADER_LEN];
        memcpy(h, d, sizeof(h));
        h[bad[i].at] = bad[i].v;
        g_autoptr(GError) err = NULL;
        assert_int_equal(stream_parse_channel(h, sizeof(h), &c, &err), -1);
        assert_non_null(strstr(err->message, bad[i].want));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        { "/migration/stream/seeds", test_seeds, NULL, NULL, NULL },
        { "/migration/stream/mutations", test_mutations, NULL, NULL, NULL },
        { "/migration/stream/ping", test_ping, NULL, NULL, NULL },
        { "/migration/stream/postcopy-order", test_postcopy_order, NULL, NULL,
          NULL },
        { "/migration/stream/channel-header", test_channel_header, NULL, NULL,
          NULL },
        { "/migration/stream/resume-order", test_resume_order, NULL, NULL,
          NULL },
    };
    return cmocka_run_group_tests_name("stream", tests, NULL, NULL);
}
