/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Tests of system/ramblock.c: QEMU's x86 layout and address lookup. */
#include "system/ramblock.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>

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

/* The VmFlags of the mapping at @addr in /proc/self/smaps, or NULL. */
static char *vm_flags(const void *addr)
{
    g_autofree char *smaps = NULL;
    assert_true(g_file_get_contents("/proc/self/smaps", &smaps, NULL, NULL));
    g_auto(GStrv) lines = g_strsplit(smaps, "\n", -1);
    bool in = false;
    for (char **l = lines; *l; l++) {
        unsigned long lo, hi;
        if (sscanf(*l, "%lx-%lx ", &lo, &hi) == 2 && strchr(*l, '-') < strchr(*l, ' ')) {
            in = (uintptr_t)addr >= lo && (uintptr_t)addr < hi;
        } else if (in && g_str_has_prefix(*l, "VmFlags:")) {
            return g_strdup(*l + 8);
        }
    }
    return NULL;
}

/*
 * Guest RAM is not copied into a child: the exec: transport forks, and a
 * fork would share the guest's pages copy-on-write with the child (for
 * preallocated RAM moved page by page into place, UFFDIO_MOVE refuses
 * shared pages), as QEMU marks its RAM.
 */
static void test_dontfork(void **state)
{
    (void)state;
    static const MemBackendType types[] = { MEM_BACKEND_RAM, MEM_BACKEND_MEMFD };
    for (size_t i = 0; i < G_N_ELEMENTS(types); i++) {
        MemBackendOptions o = { .type = types[i], .id = (char *)"m",
                                .size = 16 * MiB };
        g_autoptr(RAMBlock) rb = ram_block_new("pc.ram", &o, NULL);
        assert_non_null(rb);
        g_autofree char *flags = vm_flags(rb->host);
        assert_non_null(flags);
        g_auto(GStrv) f = g_strsplit(g_strstrip(flags), " ", -1);
        assert_true(g_strv_contains((const char *const *)f, "dc"));
    }
}

/*
 * Guest RAM is reserved, as QEMU's is: on a host that refuses obvious
 * overcommit (vm.overcommit_memory 0, or 2), RAM larger than the host can
 * ever give is an error at start, not a machine that fills the host
 * later.  reserve=off (QEMU's property) maps it without reserving.
 */
static void test_reserve(void **state)
{
    (void)state;
    g_autofree char *mode = NULL;
    if (!g_file_get_contents("/proc/sys/vm/overcommit_memory", &mode, NULL,
                             NULL) || atoi(mode) == 1) {
        print_message("# SKIP: this host overcommits any allocation "
                      "(vm.overcommit_memory 1)\n");
        skip();
    }
    /* More than the host's memory and swap together: what the kernel's
     * heuristic refuses in one go. */
    struct sysinfo si;
    assert_int_equal(sysinfo(&si), 0);
    uint64_t size = ((uint64_t)(si.totalram + si.totalswap) * si.mem_unit +
                     GiB) & ~(GiB - 1);
    g_autoptr(GError) err = NULL;
    assert_null(ram_block_new_anon("pc.ram", size, &err));
    assert_non_null(err);
    assert_string_equal(err->message, "cannot set up guest memory 'pc.ram': "
                        "Cannot allocate memory");
    MemBackendOptions o = { .type = MEM_BACKEND_RAM, .id = (char *)"m",
                            .size = size, .noreserve = true };
    g_autoptr(RAMBlock) rb = ram_block_new("pc.ram", &o, NULL);
    assert_non_null(rb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        { "/system/ramblock/layout", test_layout, NULL, NULL, NULL },
        { "/system/ramblock/dontfork", test_dontfork, NULL, NULL, NULL },
        { "/system/ramblock/reserve", test_reserve, NULL, NULL, NULL },
        { "/system/ramblock/lookup", test_lookup, NULL, NULL, NULL },
        { "/system/ramblock/bad-size", test_bad_size, NULL, NULL, NULL },
    };
    return cmocka_run_group_tests_name("ramblock", tests, NULL, NULL);
}
