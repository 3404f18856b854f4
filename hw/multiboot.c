/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Multiboot v1 loader; the contract is in include/hw/multiboot.h.
 */
#include "hw/multiboot.h"

#include <elf.h>
#include <inttypes.h>
#include <string.h>

#define MB_SEARCH           8192        /* header within the first 8 KiB */
#define MB_FLAG_PAGE_ALIGN  (1u << 0)
#define MB_FLAG_MEMINFO     (1u << 1)
#define MB_FLAG_VIDEO       (1u << 2)
#define MB_FLAG_AOUT_KLUDGE (1u << 16)
#define MB_SUPPORTED        (MB_FLAG_PAGE_ALIGN | MB_FLAG_MEMINFO | MB_FLAG_VIDEO)

/* Info flags we provide. */
#define MBI_MEM             (1u << 0)
#define MBI_CMDLINE         (1u << 2)
#define MBI_MMAP            (1u << 6)
#define MBI_LOADER_NAME     (1u << 9)

/* Layout of our low-memory area, all below the 639 KiB of low RAM. */
#define MBI_MMAP_ADDR       (MULTIBOOT_INFO_ADDR + 0x100)
#define MBI_NAME_ADDR       (MULTIBOOT_INFO_ADDR + 0x300)
#define MBI_CMDLINE_ADDR    (MULTIBOOT_INFO_ADDR + 0x400)
#define LOW_RAM_END         0x9fc00
#define MAX_MMAP            8

typedef struct MbHeader {
    uint32_t magic, flags, checksum;
    uint32_t header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr;
} MbHeader;

static void *guest_ptr(RAMBlock *rb, uint64_t gpa, uint64_t len,
                       const char *what, GError **errp)
{
    void *p = ram_block_gpa_to_host(rb, gpa, len);
    if (!p) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "%s at 0x%" PRIx64 "+0x%" PRIx64 " is outside guest RAM",
                    what, gpa, len);
    }
    return p;
}

/* Copy @filesz bytes of the image at @off to @gpa and zero up to @memsz. */
static bool load_segment(RAMBlock *rb, const uint8_t *image, size_t len,
                         uint64_t off, uint64_t filesz, uint64_t gpa,
                         uint64_t memsz, GError **errp)
{
    if (filesz > memsz || off > len || filesz > len - off) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "segment for 0x%" PRIx64 " lies outside the file", gpa);
        return false;
    }
    uint8_t *dst = guest_ptr(rb, gpa, memsz, "kernel segment", errp);
    if (!dst) {
        return false;
    }
    memcpy(dst, image + off, filesz);
    memset(dst + filesz, 0, memsz - filesz);
    return true;
}

static bool load_elf(RAMBlock *rb, const uint8_t *image, size_t len,
                     uint32_t *entry, GError **errp)
{
    if (len < sizeof(Elf32_Ehdr) || memcmp(image, ELFMAG, SELFMAG) != 0) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "not an ELF file, and no a.out kludge in the header");
        return false;
    }
    bool is64 = image[EI_CLASS] == ELFCLASS64;
    if ((!is64 && image[EI_CLASS] != ELFCLASS32) ||
        image[EI_DATA] != ELFDATA2LSB) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "unsupported ELF class or byte order");
        return false;
    }
    uint64_t phoff, e_entry;
    unsigned phnum, phentsize;
    if (is64) {
        const Elf64_Ehdr *eh = (const Elf64_Ehdr *)image;
        if (len < sizeof(*eh)) {
            goto truncated;
        }
        phoff = eh->e_phoff, phnum = eh->e_phnum;
        phentsize = eh->e_phentsize, e_entry = eh->e_entry;
    } else {
        const Elf32_Ehdr *eh = (const Elf32_Ehdr *)image;
        phoff = eh->e_phoff, phnum = eh->e_phnum;
        phentsize = eh->e_phentsize, e_entry = eh->e_entry;
    }
    if (phentsize != (is64 ? sizeof(Elf64_Phdr) : sizeof(Elf32_Phdr)) ||
        phoff > len || (uint64_t)phnum * phentsize > len - phoff) {
        goto truncated;
    }
    if (e_entry > UINT32_MAX) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "entry point 0x%" PRIx64 " is above 4 GiB", e_entry);
        return false;
    }
    int loaded = 0;
    for (unsigned i = 0; i < phnum; i++) {
        const uint8_t *ph = image + phoff + (uint64_t)i * phentsize;
        uint64_t type, off, paddr, filesz, memsz;
        if (is64) {
            const Elf64_Phdr *p = (const Elf64_Phdr *)ph;
            type = p->p_type, off = p->p_offset, paddr = p->p_paddr;
            filesz = p->p_filesz, memsz = p->p_memsz;
        } else {
            const Elf32_Phdr *p = (const Elf32_Phdr *)ph;
            type = p->p_type, off = p->p_offset, paddr = p->p_paddr;
            filesz = p->p_filesz, memsz = p->p_memsz;
        }
        if (type != PT_LOAD || memsz == 0) {
            continue;
        }
        if (!load_segment(rb, image, len, off, filesz, paddr, memsz, errp)) {
            return false;
        }
        loaded++;
    }
    if (!loaded) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "ELF file has no loadable segment");
        return false;
    }
    *entry = e_entry;
    return true;

truncated:
    g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                "ELF program headers are truncated or malformed");
    return false;
}

static bool load_aout(RAMBlock *rb, const uint8_t *image, size_t len,
                      size_t hdr_off, const MbHeader *h, uint32_t *entry,
                      GError **errp)
{
    if (h->header_addr < h->load_addr || h->header_addr - h->load_addr > hdr_off) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "Multiboot header addresses are inconsistent");
        return false;
    }
    uint64_t off = hdr_off - (h->header_addr - h->load_addr);
    uint64_t end = h->load_end_addr ? h->load_end_addr :
                   h->load_addr + (len - off);
    uint64_t bss = h->bss_end_addr ? h->bss_end_addr : end;
    if (end < h->load_addr || bss < end) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "Multiboot load or bss end below the load address");
        return false;
    }
    *entry = h->entry_addr;
    return load_segment(rb, image, len, off, end - h->load_addr,
                        h->load_addr, bss - h->load_addr, errp);
}

/* Write the Multiboot information: memory, map, command line, name. */
static bool write_info(RAMBlock *rb, const char *cmdline, GError **errp)
{
    size_t clen = strlen(cmdline) + 1;
    MbInfo *mbi = guest_ptr(rb, MULTIBOOT_INFO_ADDR, sizeof(MbInfo),
                            "Multiboot information", errp);
    MbMmap *mm = mbi ? guest_ptr(rb, MBI_MMAP_ADDR, MAX_MMAP * sizeof(MbMmap),
                                 "memory map", errp) : NULL;
    char *name = mm ? guest_ptr(rb, MBI_NAME_ADDR, 8, "loader name", errp) : NULL;
    if (!name) {
        return false;
    }
    if (clen > LOW_RAM_END - MBI_CMDLINE_ADDR) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "kernel command line is too long (%zu bytes)", clen - 1);
        return false;
    }
    char *cl = guest_ptr(rb, MBI_CMDLINE_ADDR, clen, "command line", errp);
    if (!cl) {
        return false;
    }
    memcpy(cl, cmdline, clen);
    strcpy(name, "ferry");

    /* The map QEMU's BIOS gives, less the BIOS area at the top of 4 GiB. */
    int n = 0;
    uint64_t low = rb->map[0].size;
    mm[n++] = (MbMmap) { 20, 0, LOW_RAM_END, 1 };
    mm[n++] = (MbMmap) { 20, LOW_RAM_END, 0xa0000 - LOW_RAM_END, 2 };
    mm[n++] = (MbMmap) { 20, 0xf0000, 0x10000, 2 };
    if (low > 0x100000) {
        mm[n++] = (MbMmap) { 20, 0x100000, low - 0x100000, 1 };
    }
    for (int i = 1; i < rb->nmap; i++) {
        mm[n++] = (MbMmap) { 20, rb->map[i].gpa, rb->map[i].size, 1 };
    }

    memset(mbi, 0, sizeof(*mbi));
    mbi->flags = MBI_MEM | MBI_CMDLINE | MBI_MMAP | MBI_LOADER_NAME;
    mbi->mem_lower = 640;
    mbi->mem_upper = low > 0x100000 ? (low - 0x100000) / 1024 : 0;
    mbi->cmdline = MBI_CMDLINE_ADDR;
    mbi->mmap_addr = MBI_MMAP_ADDR;
    mbi->mmap_length = n * sizeof(MbMmap);
    mbi->boot_loader_name = MBI_NAME_ADDR;
    return true;
}

bool multiboot_load(RAMBlock *rb, const char *path, const uint8_t *image,
                    size_t len, const char *append, MultibootEntry *entry,
                    GError **errp)
{
    MbHeader h;
    size_t off;

    for (off = 0; off + 12 <= MIN(len, MB_SEARCH); off += 4) {
        memcpy(&h, image + off, MIN(sizeof(h), len - off));
        if (h.magic == MULTIBOOT_MAGIC &&
            (uint32_t)(h.magic + h.flags + h.checksum) == 0) {
            break;
        }
    }
    if (off + 12 > MIN(len, MB_SEARCH)) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "%s: no Multiboot header in the first 8 KiB", path);
        return false;
    }
    uint32_t unknown = h.flags & 0xffff & ~MB_SUPPORTED;
    if (unknown) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "%s: Multiboot header requires unsupported features 0x%x",
                    path, unknown);
        return false;
    }
    bool aout = h.flags & MB_FLAG_AOUT_KLUDGE;
    if (aout && len - off < sizeof(h)) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "%s: Multiboot header is truncated", path);
        return false;
    }
    g_autoptr(GError) err = NULL;
    bool ok = aout ? load_aout(rb, image, len, off, &h, &entry->entry, &err)
                   : load_elf(rb, image, len, &entry->entry, &err);
    if (!ok) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL, "%s: %s", path,
                    err->message);
        return false;
    }
    g_autofree char *cmdline = g_strdup_printf("%s %s", path,
                                               append ? append : "");
    entry->mbi = MULTIBOOT_INFO_ADDR;
    return write_info(rb, cmdline, errp);
}
