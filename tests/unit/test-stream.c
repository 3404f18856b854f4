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

int main(void)
{
    const struct CMUnitTest tests[] = {
        { "/migration/stream/seeds", test_seeds, NULL, NULL, NULL },
        { "/migration/stream/mutations", test_mutations, NULL, NULL, NULL },
    };
    return cmocka_run_group_tests_name("stream", tests, NULL, NULL);
}
