/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The device state KVM holds, as migration carries it: each vCPU's
 * registers, special registers, FPU/XSAVE, XCRs, MSRs, local APIC,
 * pending events, MP state and debug registers; the VM's PIC, IOAPIC,
 * PIT and kvmclock.
 *
 * A blob is a sequence of (u32 length, bytes) groups in a fixed order;
 * the loader checks each length against what this build expects and
 * fails with the group's name otherwise.  Threads: save and load run
 * while the vCPUs are parked (migration thread or main thread).  Error
 * contract: GError **errp last, bool.
 */
#ifndef SYSTEM_KVM_STATE_H
#define SYSTEM_KVM_STATE_H

#include <stdbool.h>

#include <glib.h>

#include "system/kvm.h"

bool kvm_vcpu_state_save(KVMState *s, KVMCPU *cpu, GByteArray *out,
                         GError **errp);
bool kvm_vcpu_state_load(KVMState *s, KVMCPU *cpu, const uint8_t *data,
                         size_t len, GError **errp);

bool kvm_vm_state_save(KVMState *s, GByteArray *out, GError **errp);
bool kvm_vm_state_load(KVMState *s, const uint8_t *data, size_t len,
                       GError **errp);

#endif
