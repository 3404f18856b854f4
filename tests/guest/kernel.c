/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Kernel mode of the test guest: as little as possible, because kvm_pvm
 * emulates guest kernel mode at about 1.3 us an instruction.  The BSP
 * copies the Multiboot information and maps all RAM; every CPU loads
 * the IDT and its TSS and drops to user mode (CPL 3, IOPL 3), where the
 * workloads run natively.  The only way back is an exception: #GP from
 * user-mode port I/O or HLT is emulated (gp_emulate), any other one
 * reports and exits.
 */
#include "guest.h"

#define PTE_P       0x001ULL
#define PTE_W       0x002ULL
#define PTE_U       0x004ULL
#define PTE_PWT     0x008ULL
#define PTE_PCD     0x010ULL
#define PTE_PS      0x080ULL
#define PTE_USER    (PTE_P | PTE_W | PTE_U)
#define GiB         (1ULL << 30)
#define MAX_GIB     64          /* RAM mapped up to here */

/* Multiboot v1 information, the parts we read. */
struct mb_info {
    uint32_t flags, mem_lower, mem_upper, boot_device, cmdline;
    uint32_t mods_count, mods_addr, syms[4];
    uint32_t mmap_length, mmap_addr;
} __attribute__((packed));

struct mb_mmap {
    uint32_t size;
    uint64_t addr, len;
    uint32_t type;
} __attribute__((packed));

struct tss {
    uint32_t reserved0;
    uint64_t rsp0, rsp1, rsp2, reserved1;
    uint64_t ist[7];
    uint64_t reserved2;
    uint16_t reserved3, iomap_base;
} __attribute__((packed));

struct idt_entry {
    uint16_t off_lo, sel;
    uint8_t ist, type;
    uint16_t off_mid;
    uint32_t off_hi, zero;
} __attribute__((packed));

extern uint64_t pml4[512], pdpt[512], gdt[];
extern uint32_t boot_magic, boot_mbi;
extern char kstacks[], _end[];
extern void (*const exc_stubs[32])(void);

BootInfo boot_info;
static uint64_t pds[MAX_GIB - 1][512] __attribute__((aligned(4096)));
static struct idt_entry idt[256];
static struct tss tss[MAX_CPUS];
static uint8_t ustacks[MAX_CPUS][65536] __attribute__((aligned(16)));

static void kputs(const char *s)
{
    while (*s) {
        outb(SERIAL_PORT, *s++);
    }
}

static void kputx(uint64_t v)
{
    char buf[19] = "0x";
    for (int i = 0; i < 16; i++) {
        buf[2 + i] = "0123456789abcdef"[(v >> (60 - 4 * i)) & 15];
    }
    buf[18] = 0;
    kputs(buf);
}

/* Called by the exception stubs; reports and exits with status 0x7f. */
void exc_handler(uint64_t vector, uint64_t *frame)
{
    kputs("FAIL exception=");
    kputx(vector);
    kputs(" word0=");
    kputx(frame[0]);
    kputs(" word1=");
    kputx(frame[1]);
    kputs(" word2=");
    kputx(frame[2]);
    kputs(" word3=");
    kputx(frame[3]);
    kputs("\n");
    outb(DEBUG_EXIT_PORT, 0x7f);
    for (;;) {
        __asm__ volatile("cli; hlt");
    }
}

/* What stub_13 saved, then what the CPU pushed. */
struct gp_frame {
    uint64_t r11, r10, r9, r8, rdi, rsi, rdx, rcx, rax;
    uint64_t error, rip, cs, rflags, rsp, ss;
};

/*
 * Emulate a user-mode byte IN or OUT that faulted for want of IOPL:
 * E4 ib (in al, imm8), E6 ib (out imm8, al), EC (in al, dx), EE (out
 * dx, al).  Returns 1 when done, 0 for a genuine #GP.  A user-mode HLT
 * (always #GP) is how the workloads stop a CPU: it halts here for good,
 * interrupts off, so the vCPU sleeps instead of spinning.
 */
int gp_emulate(struct gp_frame *f)
{
    const uint8_t *ip = (const uint8_t *)f->rip;

    if ((f->cs & 3) != 3 || f->error != 0) {
        return 0;
    }
    switch (ip[0]) {
    case 0xe4:
        f->rax = (f->rax & ~0xffULL) | inb(ip[1]);
        f->rip += 2;
        return 1;
    case 0xe6:
        outb(ip[1], f->rax);
        f->rip += 2;
        return 1;
    case 0xec:
        f->rax = (f->rax & ~0xffULL) | inb(f->rdx);
        f->rip += 1;
        return 1;
    case 0xee:
        outb(f->rdx, f->rax);
        f->rip += 1;
        return 1;
    case 0xf4:
        for (;;) {
            __asm__ volatile("cli; hlt");
        }
    }
    return 0;
}

static void copy_boot_info(void)
{
    struct mb_info *mbi = (struct mb_info *)(uintptr_t)boot_mbi;

    boot_info.magic = boot_magic;
    boot_info.image_end = ((uintptr_t)_end + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1);
    if (mbi->flags & (1 << 2)) {
        const char *c = (const char *)(uintptr_t)mbi->cmdline;
        for (size_t i = 0; c[i] && i < sizeof(boot_info.cmdline) - 1; i++) {
            boot_info.cmdline[i] = c[i];
        }
    }
    if (mbi->flags & (1 << 6)) {
        uint64_t p = mbi->mmap_addr, end = p + mbi->mmap_length;
        while (p < end && boot_info.nram < MAX_RANGES) {
            struct mb_mmap *m = (struct mb_mmap *)(uintptr_t)p;
            uint64_t s = (m->addr + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1);
            uint64_t e = (m->addr + m->len) & ~(PAGE_SIZE - 1);
            if (m->type == 1 && e > s) {
                boot_info.ram[boot_info.nram++] = (RamRange) { s, e };
            }
            p += m->size + 4;
        }
    } else if (mbi->flags & 1) {
        boot_info.ram[0] = (RamRange) { 1 << 20,
                                        (1 << 20) + mbi->mem_upper * 1024ULL };
        boot_info.nram = 1;
    }
}

/* Map [1 GiB, top of RAM) and the 3-4 GiB MMIO hole, user-accessible. */
static void map_ram(void)
{
    uint64_t top = 4 * GiB;
    uint32_t r[4];

    for (int i = 0; i < boot_info.nram; i++) {
        if (boot_info.ram[i].end > top) {
            top = boot_info.ram[i].end;
        }
    }
    uint64_t ngib = (top + GiB - 1) / GiB;
    if (ngib > MAX_GIB) {
        ngib = MAX_GIB;
    }
    cpuid(0x80000001, 0, r);
    bool gib_pages = r[3] & (1u << 26);

    for (uint64_t g = 1; g < ngib; g++) {
        uint64_t flags = PTE_USER | PTE_PS | (g == 3 ? PTE_PCD | PTE_PWT : 0);
        if (gib_pages) {
            pdpt[g] = g * GiB | flags;
            continue;
        }
        for (uint64_t i = 0; i < 512; i++) {
            pds[g - 1][i] = (g * GiB + (i << 21)) | flags;
        }
        pdpt[g] = (uintptr_t)pds[g - 1] | PTE_USER;
    }
    __asm__ volatile("mov %%cr3, %%rax; mov %%rax, %%cr3" ::: "rax", "memory");
}

static void set_gate(int vec, void (*fn)(void), int dpl)
{
    uintptr_t a = (uintptr_t)fn;
    idt[vec] = (struct idt_entry) {
        .off_lo = a, .sel = 0x08, .type = 0x8e | (dpl << 5),
        .off_mid = a >> 16, .off_hi = a >> 32,
    };
}

static void load_tss(int cpu)
{
    uintptr_t base = (uintptr_t)&tss[cpu];
    uint64_t limit = sizeof(struct tss) - 1;

    tss[cpu].rsp0 = (uintptr_t)kstacks + ((uint64_t)(cpu + 1) << KSTACK_SHIFT);
    tss[cpu].iomap_base = sizeof(struct tss);   /* no bitmap: IOPL rules */
    gdt[TSS_SEL(cpu) / 8] = (limit & 0xffff) | (base & 0xffffff) << 16 |
                            0x89ULL << 40 | ((limit >> 16) & 0xf) << 48 |
                            ((base >> 24) & 0xff) << 56;
    gdt[TSS_SEL(cpu) / 8 + 1] = base >> 32;
    __asm__ volatile("ltr %w0" : : "r"(TSS_SEL(cpu)));
}

void kernel_main(int cpu)
{
    if (cpu == 0) {
        copy_boot_info();
        map_ram();
        for (int v = 0; v < 32; v++) {
            set_gate(v, exc_stubs[v], 0);
        }
    }
    struct { uint16_t limit; uint64_t base; } __attribute__((packed)) idtr = {
        sizeof(idt) - 1, (uintptr_t)idt,
    };
    __asm__ volatile("lidt %0" : : "m"(idtr));
    load_tss(cpu);

    /* To user mode, IOPL 3, interrupts off; as if called (rsp % 16 == 8). */
    uint64_t rsp = (uintptr_t)ustacks[cpu + 1] - 8;
    __asm__ volatile(
        "pushq $0x3002\n\t"
        "popfq\n\t"
        "pushq %[ss]\n\t"
        "pushq %[rsp]\n\t"
        "pushq $0x3002\n\t"
        "pushq %[cs]\n\t"
        "pushq %[rip]\n\t"
        "iretq"
        : : [ss]"i"(USER_DS), [rsp]"r"(rsp), [cs]"i"(USER_CS),
            [rip]"r"(user_main), "D"(cpu) : "memory");
    __builtin_unreachable();
}
