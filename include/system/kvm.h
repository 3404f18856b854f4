/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The KVM accelerator: one VM with an in-kernel irqchip and PIT, its
 * memory slots, and its vCPUs.
 *
 * Threads: kvm_init, kvm_add_ram and kvm_vcpu_create run in the main
 * thread before any vCPU runs; kvm_vcpu_run runs only in that vCPU's
 * own thread.  Error contract: GError **errp last, bool result;
 * kvm_vcpu_run returns -errno (it is a thin wrapper called in a loop).
 */
#ifndef SYSTEM_KVM_H
#define SYSTEM_KVM_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>
#include <linux/kvm.h>

#include "system/ramblock.h"

typedef struct KVMState {
    int fd;                     /* /dev/kvm */
    int vm_fd;
    int run_size;               /* bytes of each vCPU's kvm_run mapping */
    int nslots;
    int ram_slot0;              /* slot of the RAM block's first mapping */
    /*
     * KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 is on: KVM_GET_DIRTY_LOG leaves
     * the log set and the pages writable until kvm_clear_dirty_log(), and
     * turning logging on sets every bit instead of write-protecting all
     * of RAM at once (KVM_DIRTY_LOG_INITIALLY_SET).
     */
    bool manual_dirty_log;
    struct kvm_cpuid2 *cpuid;   /* what KVM supports, the template of every vCPU */
} KVMState;

typedef struct KVMCPU {
    int index;                  /* also the vCPU id and the APIC id */
    int fd;
    struct kvm_run *run;        /* shared with the kernel */
} KVMCPU;

/* kvm_init: open /dev/kvm and create a VM with irqchip and PIT. */
bool kvm_init(KVMState *s, GError **errp);
void kvm_cleanup(KVMState *s);

/* kvm_add_ram: one memory slot per guest-physical mapping of @rb. */
bool kvm_add_ram(KVMState *s, RAMBlock *rb, GError **errp);

/*
 * kvm_set_dirty_log: turn KVM's dirty logging of @rb's slots on or off.
 * Any thread, while no other thread changes the slots.
 */
bool kvm_set_dirty_log(KVMState *s, RAMBlock *rb, bool on, GError **errp);

/*
 * kvm_sync_dirty_log: fetch KVM's dirty log of @rb and OR it into
 * @bitmap (one bit per 4 KiB page of the block, by block offset).
 * Without manual protection this also clears the log and write-protects
 * the pages; with it, the caller clears with kvm_clear_dirty_log().
 */
bool kvm_sync_dirty_log(KVMState *s, RAMBlock *rb, unsigned long *bitmap,
                        GError **errp);

/*
 * kvm_clear_dirty_log: with manual protection, clear KVM's log for the
 * pages of [@first, @first + @n) whose bit is set in @bitmap (block
 * page numbers; @first and @n multiples of 64) and write-protect them
 * again, so that the next write is logged.  Call it before reading
 * those pages to send them: a write after the clear is caught, and the
 * bits not set in @bitmap (written since the last sync) are kept.  A
 * no-op without manual protection.  Any thread; -errno on failure.
 */
int kvm_clear_dirty_log(KVMState *s, RAMBlock *rb, const unsigned long *bitmap,
                        uint64_t first, uint64_t n);

/*
 * kvm_vcpu_create: vCPU @index with the supported CPUID, its APIC id
 * set to @index.  vCPU 0 is the bootstrap processor; the others wait
 * for INIT/SIPI in the in-kernel local APIC.
 */
bool kvm_vcpu_create(KVMState *s, KVMCPU *cpu, int index, int ncpus,
                     GError **errp);
void kvm_vcpu_destroy(KVMState *s, KVMCPU *cpu);

/*
 * kvm_vcpu_set_multiboot: 32-bit protected mode, flat segments, paging
 * off, interrupts off, EAX = Multiboot magic, EBX = @mbi, EIP = @entry.
 */
bool kvm_vcpu_set_multiboot(KVMCPU *cpu, uint32_t entry, uint32_t mbi,
                            GError **errp);

/* kvm_vcpu_run: one KVM_RUN; 0, or -errno (-EINTR when kicked). */
int kvm_vcpu_run(KVMCPU *cpu);

#endif
