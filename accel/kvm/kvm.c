/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The KVM accelerator; the contract is in include/system/kvm.h.
 */
#include "system/kvm.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define TSS_ADDR        0xfeffd000      /* 3 pages, below the BIOS area */
#define IDENTITY_ADDR   0xfeffc000
#define MAX_CPUID       256

static bool kvm_fail(GError **errp, const char *what)
{
    int err = errno;
    g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(err),
                "KVM: %s: %s", what, g_strerror(err));
    return false;
}

bool kvm_init(KVMState *s, GError **errp)
{
    memset(s, 0, sizeof(*s));
    s->fd = s->vm_fd = -1;

    s->fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (s->fd < 0) {
        kvm_fail(errp, "could not open /dev/kvm");
        goto fail;
    }
    if (ioctl(s->fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "KVM: unsupported API version");
        goto fail;
    }
    s->run_size = ioctl(s->fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (s->run_size <= 0) {
        kvm_fail(errp, "KVM_GET_VCPU_MMAP_SIZE");
        goto fail;
    }
    s->cpuid = g_malloc0(sizeof(*s->cpuid) +
                         MAX_CPUID * sizeof(struct kvm_cpuid_entry2));
    s->cpuid->nent = MAX_CPUID;
    if (ioctl(s->fd, KVM_GET_SUPPORTED_CPUID, s->cpuid) < 0) {
        kvm_fail(errp, "KVM_GET_SUPPORTED_CPUID");
        goto fail;
    }
    s->vm_fd = ioctl(s->fd, KVM_CREATE_VM, 0);
    if (s->vm_fd < 0) {
        kvm_fail(errp, "KVM_CREATE_VM");
        goto fail;
    }
    /* Intel needs these pages reserved; elsewhere they are harmless. */
    if (ioctl(s->vm_fd, KVM_SET_TSS_ADDR, TSS_ADDR) < 0) {
        kvm_fail(errp, "KVM_SET_TSS_ADDR");
        goto fail;
    }
    uint64_t ident = IDENTITY_ADDR;
    ioctl(s->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &ident);
    if (ioctl(s->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0) {
        kvm_fail(errp, "KVM_CREATE_IRQCHIP");
        goto fail;
    }
    struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
    if (ioctl(s->vm_fd, KVM_CREATE_PIT2, &pit) < 0) {
        kvm_fail(errp, "KVM_CREATE_PIT2");
        goto fail;
    }
    /*
     * Manual dirty-log protection: a sync no longer write-protects all
     * of RAM at once (a stall that grows with the guest); pages are
     * protected again chunk by chunk, just before they are sent.
     */
    int manual = ioctl(s->vm_fd, KVM_CHECK_EXTENSION,
                       KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
    if (manual > 0) {
        struct kvm_enable_cap cap = {
            .cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
            .args[0] = manual & (KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE |
                                 KVM_DIRTY_LOG_INITIALLY_SET),
        };
        s->manual_dirty_log = ioctl(s->vm_fd, KVM_ENABLE_CAP, &cap) == 0;
    }
    return true;

fail:
    kvm_cleanup(s);
    return false;
}

void kvm_cleanup(KVMState *s)
{
    if (s->vm_fd >= 0) {
        close(s->vm_fd);
    }
    if (s->fd >= 0) {
        close(s->fd);
    }
    g_free(s->cpuid);
    memset(s, 0, sizeof(*s));
    s->fd = s->vm_fd = -1;
}

static bool set_slots(KVMState *s, RAMBlock *rb, uint32_t flags, GError **errp)
{
    for (int i = 0; i < rb->nmap; i++) {
        struct kvm_userspace_memory_region r = {
            .slot = s->ram_slot0 + i,
            .flags = flags,
            .guest_phys_addr = rb->map[i].gpa,
            .memory_size = rb->map[i].size,
            .userspace_addr = (uintptr_t)rb->host + rb->map[i].offset,
        };
        if (ioctl(s->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0) {
            return kvm_fail(errp, "KVM_SET_USER_MEMORY_REGION");
        }
    }
    return true;
}

bool kvm_set_dirty_log(KVMState *s, RAMBlock *rb, bool on, GError **errp)
{
    return set_slots(s, rb, on ? KVM_MEM_LOG_DIRTY_PAGES : 0, errp);
}

bool kvm_sync_dirty_log(KVMState *s, RAMBlock *rb, unsigned long *bitmap,
                        GError **errp)
{
    for (int i = 0; i < rb->nmap; i++) {
        uint64_t pages = rb->map[i].size / TARGET_PAGE_SIZE;
        size_t longs = (pages + 63) / 64;
        g_autofree uint64_t *log = g_new0(uint64_t, longs);
        struct kvm_dirty_log d = { .slot = s->ram_slot0 + i, .dirty_bitmap = log };
        if (ioctl(s->vm_fd, KVM_GET_DIRTY_LOG, &d) < 0) {
            return kvm_fail(errp, "KVM_GET_DIRTY_LOG");
        }
        /* The slot's pages start at this bit of the block's bitmap, a
         * whole word in: slots start on 2 MiB boundaries.  Merged word
         * by word, as a busy guest's log is dense. */
        uint64_t base = rb->map[i].offset / TARGET_PAGE_SIZE;
        g_assert(base % 64 == 0);
        for (size_t w = 0; w < longs; w++) {
            if (log[w]) {
                __atomic_fetch_or(&bitmap[base / 64 + w], log[w],
                                  __ATOMIC_RELAXED);
            }
        }
    }
    return true;
}

int kvm_clear_dirty_log(KVMState *s, RAMBlock *rb, const unsigned long *bitmap,
                        uint64_t first, uint64_t n)
{
    if (!s->manual_dirty_log) {
        return 0;
    }
    for (int i = 0; i < rb->nmap; i++) {
        uint64_t base = rb->map[i].offset / TARGET_PAGE_SIZE;
        uint64_t end = base + rb->map[i].size / TARGET_PAGE_SIZE;
        uint64_t lo = MAX(first, base), hi = MIN(first + n, end);
        if (lo >= hi) {
            continue;
        }
        /* Slots start on 2 MiB boundaries, so lo - base stays 64-aligned. */
        uint64_t count = hi - lo;
        size_t longs = (count + 63) / 64;
        g_autofree uint64_t *mask = g_new0(uint64_t, longs);
        bool any = false;
        for (size_t w = 0; w < longs; w++) {
            mask[w] = bitmap[lo / 64 + w];
            if (w == longs - 1 && count % 64) {
                mask[w] &= (1ULL << (count % 64)) - 1;
            }
            any |= mask[w] != 0;
        }
        if (!any) {
            continue;
        }
        struct kvm_clear_dirty_log c = {
            .slot = s->ram_slot0 + i,
            .first_page = lo - base,
            .num_pages = count,
            .dirty_bitmap = mask,
        };
        if (ioctl(s->vm_fd, KVM_CLEAR_DIRTY_LOG, &c) < 0) {
            return -errno;
        }
    }
    return 0;
}

bool kvm_add_ram(KVMState *s, RAMBlock *rb, GError **errp)
{
    s->ram_slot0 = s->nslots;
    for (int i = 0; i < rb->nmap; i++) {
        struct kvm_userspace_memory_region r = {
            .slot = s->nslots,
            .guest_phys_addr = rb->map[i].gpa,
            .memory_size = rb->map[i].size,
            .userspace_addr = (uintptr_t)rb->host + rb->map[i].offset,
        };
        if (ioctl(s->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0) {
            return kvm_fail(errp, "KVM_SET_USER_MEMORY_REGION");
        }
        s->nslots++;
    }
    return true;
}

/* CPUID for one vCPU: the supported set with its own APIC id. */
static struct kvm_cpuid2 *vcpu_cpuid(const KVMState *s, int index, int ncpus)
{
    size_t sz = sizeof(*s->cpuid) + s->cpuid->nent * sizeof(s->cpuid->entries[0]);
    struct kvm_cpuid2 *c = g_memdup2(s->cpuid, sz);

    for (uint32_t i = 0; i < c->nent; i++) {
        struct kvm_cpuid_entry2 *e = &c->entries[i];
        switch (e->function) {
        case 1:
            /* APIC id, and the count of logical CPUs in the package. */
            e->ebx = (e->ebx & 0x0000ffff) | (uint32_t)index << 24 |
                     (uint32_t)MIN(ncpus, 255) << 16;
            e->edx |= 1u << 28;                 /* HTT: the count is valid */
            break;
        case 0xb:
        case 0x1f:
            e->edx = index;                     /* x2APIC id */
            break;
        }
    }
    return c;
}

bool kvm_vcpu_create(KVMState *s, KVMCPU *cpu, int index, int ncpus,
                     GError **errp)
{
    g_autofree struct kvm_cpuid2 *c = NULL;

    cpu->index = index;
    cpu->run = MAP_FAILED;
    cpu->fd = ioctl(s->vm_fd, KVM_CREATE_VCPU, index);
    if (cpu->fd < 0) {
        return kvm_fail(errp, "KVM_CREATE_VCPU");
    }
    cpu->run = mmap(NULL, s->run_size, PROT_READ | PROT_WRITE, MAP_SHARED,
                    cpu->fd, 0);
    if (cpu->run == MAP_FAILED) {
        kvm_fail(errp, "mmap of kvm_run");
        goto fail;
    }
    c = vcpu_cpuid(s, index, ncpus);
    if (ioctl(cpu->fd, KVM_SET_CPUID2, c) < 0) {
        kvm_fail(errp, "KVM_SET_CPUID2");
        goto fail;
    }
    return true;

fail:
    kvm_vcpu_destroy(s, cpu);
    return false;
}

void kvm_vcpu_destroy(KVMState *s, KVMCPU *cpu)
{
    if (cpu->run != MAP_FAILED && cpu->run) {
        munmap(cpu->run, s->run_size);
    }
    if (cpu->fd >= 0) {
        close(cpu->fd);
    }
    cpu->run = NULL;
    cpu->fd = -1;
}

static void flat_segment(struct kvm_segment *seg, uint16_t sel, bool code)
{
    *seg = (struct kvm_segment) {
        .base = 0, .limit = 0xffffffff, .selector = sel,
        .type = code ? 0xb : 0x3,       /* execute/read, or read/write; accessed */
        .present = 1, .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1,
    };
}

bool kvm_vcpu_set_multiboot(KVMCPU *cpu, uint32_t entry, uint32_t mbi,
                            GError **errp)
{
    struct kvm_sregs sregs;
    if (ioctl(cpu->fd, KVM_GET_SREGS, &sregs) < 0) {
        return kvm_fail(errp, "KVM_GET_SREGS");
    }
    flat_segment(&sregs.cs, 0x08, true);
    flat_segment(&sregs.ds, 0x10, false);
    sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
    sregs.cr0 = (sregs.cr0 | 0x1) & ~(1UL << 31);      /* PE on, PG off */
    if (ioctl(cpu->fd, KVM_SET_SREGS, &sregs) < 0) {
        return kvm_fail(errp, "KVM_SET_SREGS");
    }
    struct kvm_regs regs = {
        .rax = 0x2BADB002, .rbx = mbi, .rip = entry, .rflags = 0x2,
    };
    if (ioctl(cpu->fd, KVM_SET_REGS, &regs) < 0) {
        return kvm_fail(errp, "KVM_SET_REGS");
    }
    return true;
}

int kvm_vcpu_run(KVMCPU *cpu)
{
    return ioctl(cpu->fd, KVM_RUN, 0) < 0 ? -errno : 0;
}
