/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Tests of hw/multiboot.c: images built here byte by byte, loaded into
 * a real RAM block, and every field the guest will read checked.
 */
#include "hw/multiboot.h"

#include <elf.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#define MiB (1024ULL * 1024)
#define GiB (1024 * MiB)

/* An ELF32 image: one PT_LOAD of @filesz bytes (+ bss) at @paddr. */
static uint8_t *make_elf(size_t *len, uint32_t paddr, uint32_t filesz,
                         uint32_t memsz, uint32_t mb_flags)
{
    size_t off = 0x100;
    uint8_t *img = g_malloc0(off + filesz);
    Elf32_Ehdr *eh = (Elf32_Ehdr *)img;
    Elf32_Phdr *ph = (Elf32_Phdr *)(img + sizeof(*eh));

    memcpy(eh->e_ident, ELFMAG, SELFMAG);
    eh->e_ident[EI_CLASS] = ELFCLASS32;
    eh->e_ident[EI_DATA] = ELFDATA2LSB;
    eh->e_type = ET_EXEC;
    eh->e_machine = EM_386;
    eh->e_entry = paddr + 0x10;
    eh->e_phoff = sizeof(*eh);
    eh->e_phentsize = sizeof(*ph);
    eh->e_phnum = 1;
    ph->p_type = PT_LOAD;
    ph->p_offset = off;
    ph->p_paddr = ph->p_vaddr = paddr;
    ph->p_filesz = filesz;
    ph->p_memsz = memsz;
    uint32_t *mb = (uint32_t *)(img + off);
    mb[0] = MULTIBOOT_MAGIC;
    mb[1] = mb_flags;
    mb[2] = -(MULTIBOOT_MAGIC + mb_flags);
    for (uint32_t i = 12; i < filesz; i++) {
        img[off + i] = (uint8_t)i;
    }
    *len = off + filesz;
    return img;
}

static RAMBlock *ram(uint64_t size)
{
    g_autoptr(GError) err = NULL;
    RAMBlock *rb = ram_block_new_anon("pc.ram", size, &err);
    assert_non_null(rb);
    pc_ram_layout(rb);
    return rb;
}

static void *at(RAMBlock *rb, uint64_t gpa)
{
    return ram_block_gpa_to_host(rb, gpa, 1);
}

static void test_elf(void **state)
{
    (void)state;
    g_autoptr(RAMBlock) rb = ram(4 * MiB);
    size_t len;
    g_autofree uint8_t *img = make_elf(&len, 0x100000, 0x40, 0x2000, 3);
    MultibootEntry e;
    g_autoptr(GError) err = NULL;

    memset(at(rb, 0x100000), 0xaa, 0x3000);     /* bss must be zeroed */
    assert_true(multiboot_load(rb, "/boot/k.elf", img, len, "verify rounds=2",
                               &e, &err));
    assert_int_equal(e.entry, 0x100010);
    assert_int_equal(e.mbi, MULTIBOOT_INFO_ADDR);
    assert_memory_equal(at(rb, 0x100000), img + 0x100, 0x40);
    for (int i = 0x40; i < 0x2000; i++) {
        assert_int_equal(*(uint8_t *)at(rb, 0x100000 + i), 0);
    }
    assert_int_equal(*(uint8_t *)at(rb, 0x102000), 0xaa);   /* past memsz */

    MbInfo *mbi = at(rb, e.mbi);
    assert_int_equal(mbi->flags, (1 << 0) | (1 << 2) | (1 << 6) | (1 << 9));
    assert_int_equal(mbi->mem_lower, 640);
    assert_int_equal(mbi->mem_upper, 3 * 1024);
    /* QEMU's command line: the kernel's path, then -append. */
    assert_string_equal((char *)at(rb, mbi->cmdline), "/boot/k.elf verify rounds=2");
    assert_string_equal((char *)at(rb, mbi->boot_loader_name), "ferry");
    assert_int_equal(mbi->mmap_length, 4 * sizeof(MbMmap));
    MbMmap *mm = at(rb, mbi->mmap_addr);
    assert_int_equal(mm[0].addr, 0);
    assert_int_equal(mm[0].len, 0x9fc00);
    assert_int_equal(mm[0].type, 1);
    assert_int_equal(mm[1].type, 2);
    assert_int_equal(mm[2].addr, 0xf0000);
    assert_int_equal(mm[3].addr, 0x100000);
    assert_int_equal(mm[3].len, 3 * MiB);
    assert_int_equal(mm[3].size, 20);
}

/* RAM above 4 GiB appears in the map, as QEMU gives it. */
static void test_high_ram_map(void **state)
{
    (void)state;
    g_autoptr(RAMBlock) rb = ram(5 * GiB);      /* never touched: cheap */
    size_t len;
    g_autofree uint8_t *img = make_elf(&len, 0x100000, 0x40, 0x40, 2);
    MultibootEntry e;
    g_autoptr(GError) err = NULL;

    assert_true(multiboot_load(rb, "k", img, len, NULL, &e, &err));
    MbInfo *mbi = at(rb, e.mbi);
    assert_int_equal(mbi->mem_upper, (3 * GiB - MiB) / 1024);
    assert_int_equal(mbi->mmap_length, 5 * sizeof(MbMmap));
    MbMmap *mm = at(rb, mbi->mmap_addr);
    assert_int_equal(mm[3].addr + mm[3].len, 3 * GiB);
    assert_int_equal(mm[4].addr, 4 * GiB);
    assert_int_equal(mm[4].len, 2 * GiB);
    assert_string_equal((char *)at(rb, mbi->cmdline), "k ");
}

/* The a.out kludge: addresses from the header, the file loaded raw. */
static void test_aout_kludge(void **state)
{
    (void)state;
    g_autoptr(RAMBlock) rb = ram(4 * MiB);
    uint8_t img[0x200] = { 0 };
    uint32_t *h = (uint32_t *)(img + 0x40);
    uint32_t flags = (1u << 16) | 2;
    MultibootEntry e;
    g_autoptr(GError) err = NULL;

    h[0] = MULTIBOOT_MAGIC;
    h[1] = flags;
    h[2] = -(MULTIBOOT_MAGIC + flags);
    h[3] = 0x200040;            /* header_addr: the file is loaded at 0x200000 */
    h[4] = 0x200000;            /* load_addr */
    h[5] = 0x200100;            /* load_end_addr: 0x100 bytes from the file */
    h[6] = 0x201000;            /* bss_end_addr */
    h[7] = 0x200080;            /* entry */
    img[0x80] = 0xf4;
    img[0x150] = 0x77;          /* past load_end: not loaded */
    memset(at(rb, 0x200000), 0xaa, 0x2000);
    assert_true(multiboot_load(rb, "k", img, sizeof(img), "", &e, &err));
    assert_int_equal(e.entry, 0x200080);
    assert_int_equal(*(uint8_t *)at(rb, 0x200080), 0xf4);
    assert_int_equal(*(uint8_t *)at(rb, 0x200150), 0);
    assert_int_equal(*(uint8_t *)at(rb, 0x200fff), 0);
    assert_int_equal(*(uint8_t *)at(rb, 0x201000), 0xaa);
}

static void expect_error(RAMBlock *rb, const uint8_t *img, size_t len,
                         const char *append, const char *needle)
{
    MultibootEntry e;
    g_autoptr(GError) err = NULL;
    assert_false(multiboot_load(rb, "k", img, len, append, &e, &err));
    assert_non_null(err);
    if (!strstr(err->message, needle)) {
        fail_msg("error '%s' lacks '%s'", err->message, needle);
    }
}

static void test_errors(void **state)
{
    (void)state;
    g_autoptr(RAMBlock) rb = ram(4 * MiB);
    size_t len;
    g_autofree uint8_t *img = make_elf(&len, 0x100000, 0x40, 0x40, 2);
    g_autofree uint8_t *copy = g_memdup2(img, len);

    expect_error(rb, (const uint8_t *)"hello", 5, "", "no Multiboot header");
    /* A wrong checksum hides the header. */
    copy[0x108] ^= 1;
    expect_error(rb, copy, len, "", "no Multiboot header");

    g_autofree uint8_t *video = make_elf(&len, 0x100000, 0x40, 0x40, 1 << 3);
    expect_error(rb, video, len, "", "unsupported features 0x8");

    g_autofree uint8_t *far = make_elf(&len, 0x10000000, 0x40, 0x40, 2);
    expect_error(rb, far, len, "", "outside guest RAM");

    g_autofree uint8_t *big = make_elf(&len, 0x100000, 0x40, 0x40, 2);
    ((Elf32_Ehdr *)big)->e_phnum = 60000;
    expect_error(rb, big, len, "", "program headers are truncated");

    g_autofree uint8_t *off = make_elf(&len, 0x100000, 0x40, 0x40, 2);
    ((Elf32_Phdr *)(off + sizeof(Elf32_Ehdr)))->p_offset = 0x7fffffff;
    expect_error(rb, off, len, "", "outside the file");

    g_autofree uint8_t *noelf = make_elf(&len, 0x100000, 0x40, 0x40, 2);
    noelf[0] = 0;
    expect_error(rb, noelf, len, "", "not an ELF file");

    g_autofree char *huge = g_strnfill(700 * 1024, 'x');
    expect_error(rb, img, len, huge, "command line is too long");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        { "/hw/multiboot/elf", test_elf, NULL, NULL, NULL },
        { "/hw/multiboot/high-ram-map", test_high_ram_map, NULL, NULL, NULL },
        { "/hw/multiboot/aout-kludge", test_aout_kludge, NULL, NULL, NULL },
        { "/hw/multiboot/errors", test_errors, NULL, NULL, NULL },
    };
    return cmocka_run_group_tests_name("multiboot", tests, NULL, NULL);
}
