/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The freestanding test guest: what kernel mode (kernel.c) hands to the
 * user-mode workloads (guest.c).
 */
#ifndef GUEST_H
#define GUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "layout.h"

#define PAGE_SIZE       4096UL
#define MAX_RANGES      16

typedef struct RamRange {
    uint64_t start, end;        /* [start, end), page-aligned */
} RamRange;

/* Filled by the BSP in kernel mode before any user code runs. */
typedef struct BootInfo {
    char cmdline[256];
    RamRange ram[MAX_RANGES];   /* usable RAM from the Multiboot map */
    int nram;
    uint64_t image_end;         /* first byte after the guest image */
    uint32_t magic;             /* EAX at entry: 0x2BADB002 */
} BootInfo;

extern BootInfo boot_info;
extern char ap_trampoline[], ap_trampoline_end[];
extern volatile uint32_t ap_next_cpu;

/* User-mode entry of every CPU, from kernel.c. */
void user_main(int cpu) __attribute__((noreturn));

static inline void outb(uint16_t port, uint8_t v)
{
    __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

static inline void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4])
{
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3])
                     : "a"(leaf), "c"(sub));
}

static inline void cpu_relax(void)
{
    __asm__ volatile("pause" ::: "memory");
}

#endif
