/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Tests of system/ramblock.c: QEMU's x86 layout and address lookup. */
#include "system/ramblock.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#define MiB (1024ULL * 1024)
#define GiB (1024 * MiB)

static void check_layout(uint64_t size, uint64_t below)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(RAMBlock) rb = ram_block_new_anon("pc.ram", size, &err);
    assert_non_null(rb);
    pc_ram_layout(rb);
    assert_int_equal(rb->map[0].gpa, 0);
    assert_int_equal(rb->map[0].size, below);
    if (size == below) {
        assert_int_equal(rb->nmap, 1);
        return;
    }
    assert_int_equal(rb->nmap, 2);
    assert_int_equal(rb->map[1].gpa, 4 * GiB);
    assert_int_equal(rb->map[1].offset, below);
    assert_int_equal(rb->map[1].size, size - below);
}

static void test_layout(void **state)
{
    (void)state;
    check_layout(128 * MiB, 128 * MiB);
    check_layout(3 * GiB, 3 * GiB);
    check_layout(3 * GiB + 256 * MiB, 3 * GiB + 256 * MiB);  /* < 3.5 GiB */
    check_layout(3 * GiB + 512 * MiB, 3 * GiB);
    check_layout(6 * GiB, 3 * GiB);
    check_layout(16 * GiB, 3 * GiB);
}

static void test_lookup(void **state)
{
    (void)state;
    g_autoptr(GError) err = NULL;
    g_autoptr(RAMBlock) rb = ram_block_new_anon("pc.ram", 5 * GiB, &err);
    pc_ram_layout(rb);

    assert_ptr_equal(ram_block_gpa_to_host(rb, 0, 4096), rb->host);
    assert_ptr_equal(ram_block_gpa_to_host(rb, 3 * GiB - 4096, 4096),
                     rb->host + 3 * GiB - 4096);
    assert_null(ram_block_gpa_to_host(rb, 3 * GiB - 4096, 8192));  /* crosses */
    assert_null(ram_block_gpa_to_host(rb, 3 * GiB, 1));            /* the hole */
    assert_ptr_equal(ram_block_gpa_to_host(rb, 4 * GiB, 1), rb->host + 3 * GiB);
    assert_ptr_equal(ram_block_gpa_to_host(rb, 6 * GiB - 1, 1),
                     rb->host + 5 * GiB - 1);
    assert_null(ram_block_gpa_to_host(rb, 6 * GiB, 1));
    assert_null(ram_block_gpa_to_host(rb, 4 * GiB, UINT64_MAX));    /* no wrap */
    assert_int_equal(rb->page_size, 4096);
    assert_int_equal(rb->fd, -1);
    assert_string_equal(rb->name, "pc.ram");
}

static void test_bad_size(void **state)
{
    (void)state;
    g_autoptr(GError) err = NULL;
    assert_null(ram_block_new_anon("pc.ram", 0, &err));
    assert_non_null(err);
    g_clear_error(&err);
    assert_null(ram_block_new_anon("pc.ram", 4097, &err));
    assert_non_null(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        { "/system/ramblock/layout", test_layout, NULL, NULL, NULL },
        { "/system/ramblock/lookup", test_lookup, NULL, NULL, NULL },
        { "/system/ramblock/bad-size", test_bad_size, NULL, NULL, NULL },
    };
    return cmocka_run_group_tests_name("ramblock", tests, NULL, NULL);
}
