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
 * kvm_sync_dirty_log: fetch and clear KVM's dirty log of @rb and OR it
 * into @bitmap (one bit per 4 KiB page of the block, by block offset).
 */
bool kvm_sync_dirty_log(KVMState *s, RAMBlock *rb, unsigned long *bitmap,
                        GError **errp);

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
