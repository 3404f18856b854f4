/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Multiboot v1 loader with QEMU's semantics for -kernel: load the
 * image (ELF, or the a.out kludge of header flag 16) into guest RAM,
 * write the Multiboot information, and say where to enter.
 *
 * Error contract: GError **errp last, bool result.  Nothing is written
 * to guest RAM outside the block's mappings.
 */
#ifndef HW_MULTIBOOT_H
#define HW_MULTIBOOT_H

#include <stdbool.h>
#include <stdint.h>

#include "system/ramblock.h"

#define MULTIBOOT_MAGIC         0x1BADB002
#define MULTIBOOT_BOOT_MAGIC    0x2BADB002      /* in EAX at entry */
#define MULTIBOOT_INFO_ADDR     0x9000          /* where the info goes */

/* The Multiboot information the loader writes at MULTIBOOT_INFO_ADDR. */
typedef struct MbInfo {
    uint32_t flags, mem_lower, mem_upper, boot_device, cmdline;
    uint32_t mods_count, mods_addr, syms[4];
    uint32_t mmap_length, mmap_addr;
    uint32_t drives_length, drives_addr, config_table, boot_loader_name;
} __attribute__((packed)) MbInfo;

typedef struct MbMmap {
    uint32_t size;
    uint64_t addr, len;
    uint32_t type;
} __attribute__((packed)) MbMmap;

typedef struct MultibootEntry {
    uint32_t entry;             /* EIP, 32-bit protected mode, paging off */
    uint32_t mbi;               /* EBX */
} MultibootEntry;

/*
 * multiboot_load: load the image held in @image (@len bytes, from the
 * file @path) into @rb, with command line "@path @append" as QEMU
 * builds it.
 */
bool multiboot_load(RAMBlock *rb, const char *path, const uint8_t *image,
                    size_t len, const char *append, MultibootEntry *entry,
                    GError **errp);

#endif
