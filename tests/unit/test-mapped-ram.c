/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * mapped-ram's layout (migration/mapped-ram.c): offsets and their checks,
 * and a file written and read back through QEMUFile: each page in its
 * slot, zero pages as clear bits, a page saved again in its old slot,
 * the device records after the pages, a short file refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <glib.h>

#include "migration/mapped-ram.h"
#include "migration/qemu-file.h"
#include "migration/stream.h"
#include "system/ramblock.h"

static void test_layout(void **state)
{
    (void)state;
    MappedRam m;
    for (uint64_t np = 1; np < (1 << 22); np = np * 7 + 3) {
        for (uint64_t rec = 25; rec < 20000; rec += 4093) {
            mapped_ram_layout(&m, rec, np);
            assert_true(m.bitmap_off >= rec + MAPPED_RAM_RECORD_LEN);
            assert_int_equal(m.bitmap_off % TARGET_PAGE_SIZE, 0);
            assert_int_equal(m.pages_off % MAPPED_RAM_PAGES_ALIGN, 0);
            assert_true(m.pages_off - m.bitmap_off >= (np + 63) / 64 * 8);
            assert_int_equal(m.end_off, m.pages_off + np * TARGET_PAGE_SIZE);
            assert_true(mapped_ram_check(&m, rec, np, NULL));
        }
    }
}

static void test_check(void **state)
{
    (void)state;
    MappedRam good, m;
    mapped_ram_layout(&good, 60, 1 << 18);
    /* Each field spoiled alone is refused, saying how. */
    const char *why[] = { "overlaps the header", "not aligned",
                          "overlap its bitmap", "does not follow" };
    uint64_t vals[][3] = {
        { 4096 * 0, good.pages_off, good.end_off },     /* bitmap at 0 */
        { good.bitmap_off, good.pages_off + 100, good.end_off + 100 },
        { good.bitmap_off, good.bitmap_off, good.end_off },
        { good.bitmap_off, good.pages_off, good.end_off - 4096 },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(vals); i++) {
        m = good;
        m.bitmap_off = vals[i][0];
        m.pages_off = vals[i][1];
        m.end_off = vals[i][2];
        g_autoptr(GError) err = NULL;
        assert_false(mapped_ram_check(&m, 60, 1 << 18, &err));
        assert_non_null(strstr(err->message, why[i]));
    }
}

static char *tmpfile_path(int *fd)
{
    char *p = g_build_filename(g_get_tmp_dir(), "test-mapped-ram-XXXXXX", NULL);
    *fd = g_mkstemp(p);
    assert_true(*fd >= 0);
    return p;
}

static void fill_page(uint8_t *p, uint64_t n)
{
    for (int i = 0; i < TARGET_PAGE_SIZE; i++) {
        p[i] = (uint8_t)(n * 31 + i + 1);
    }
}

/* Write 64 pages (a stream at @base of the file): every third zero, page
 * 5 saved twice; then read back. */
static void roundtrip(uint64_t base)
{
    int fd;
    g_autofree char *path = tmpfile_path(&fd);
    const uint64_t np = 64;
    g_autofree uint8_t *ram = g_malloc0(np * TARGET_PAGE_SIZE);
    for (uint64_t n = 0; n < np; n++) {
        if (n % 3) {
            fill_page(ram + n * TARGET_PAGE_SIZE, n);
        }
    }
    assert_int_equal(lseek(fd, base, SEEK_SET), (off_t)base);
    QEMUFile *f = qemu_file_new(fd, true, false);
    qemu_put_buffer(f, "HEADER-0123456789", 17);
    MappedRam w;
    assert_true(mapped_ram_writer_start(&w, f, np, false, NULL));
    assert_int_equal(w.base, (int64_t)base);
    for (uint64_t n = 0; n < np; n++) {
        if (n % 3) {
            assert_int_equal(mapped_ram_write_pages(&w, n, 1,
                                                    ram + n * TARGET_PAGE_SIZE), 0);
        } else {
            mapped_ram_mark_zero(&w, n, 1);
        }
    }
    /* Page 5 again, now different: its slot is rewritten. */
    fill_page(ram + 5 * TARGET_PAGE_SIZE, 500);
    assert_int_equal(mapped_ram_write_pages(&w, 5, 1, ram + 5 * TARGET_PAGE_SIZE), 0);
    /* Page 7 saved again as zero: its bit is cleared. */
    memset(ram + 7 * TARGET_PAGE_SIZE, 0, TARGET_PAGE_SIZE);
    mapped_ram_mark_zero(&w, 7, 1);
    assert_true(mapped_ram_writer_finish(&w, f, NULL));
    qemu_put_byte(f, REC_EOF);
    assert_int_equal(qemu_file_close(f), 0);
    mapped_ram_cleanup(&w);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal((uint64_t)st.st_size, base + w.end_off + 1);

    assert_int_equal(lseek(fd, base, SEEK_SET), (off_t)base);
    f = qemu_file_new(fd, false, false);
    char head[17];
    qemu_get_buffer(f, head, 17);
    assert_int_equal(qemu_get_byte(f), REC_MAPPED_RAM);
    MappedRam r;
    assert_true(mapped_ram_reader_open(&r, f, np, NULL));
    uint8_t page[TARGET_PAGE_SIZE];
    for (uint64_t n = 0; n < np; n++) {
        const uint8_t *want = ram + n * TARGET_PAGE_SIZE;
        bool zero = n % 3 == 0 || n == 7;
        assert_int_equal(mapped_ram_has_data(&r, n), !zero);
        if (!zero) {
            assert_int_equal(mapped_ram_read_pages(&r, n, 1, page), 0);
            assert_memory_equal(page, want, TARGET_PAGE_SIZE);
        }
    }
    /* The stream goes on after the pages. */
    assert_int_equal(qemu_get_byte(f), REC_EOF);
    assert_int_equal(qemu_file_error(f), 0);
    qemu_file_close(f);
    mapped_ram_cleanup(&r);

    /* Cut inside the pages: refused when opened, before any page. */
    assert_int_equal(ftruncate(fd, base + w.pages_off + 10 * TARGET_PAGE_SIZE), 0);
    /* As the loader is after the header: 18 bytes of this stream read. */
    assert_int_equal(lseek(fd, base, SEEK_SET), (off_t)base);
    f = qemu_file_new(fd, false, false);
    char skip[18];
    qemu_get_buffer(f, skip, 18);
    g_autoptr(GError) err = NULL;
    assert_false(mapped_ram_reader_open(&r, f, np, &err));
    assert_non_null(strstr(err->message, "truncated"));
    qemu_file_close(f);
    mapped_ram_cleanup(&r);
    close(fd);
    unlink(path);
}

static void test_roundtrip(void **state)
{
    (void)state;
    roundtrip(0);
}

static void test_roundtrip_offset(void **state)
{
    (void)state;
    roundtrip(4096 + 123);      /* file:PATH,offset=N */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_check),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_roundtrip_offset),
    };
    return cmocka_run_group_tests_name("mapped-ram", tests, NULL, NULL);
}
