/* SPDX-License-Identifier: GPL-2.0-or-later */
/* KVM device state for migration; the contract is in include/system/kvm-state.h. */
#include "system/kvm-state.h"

#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

/*
 * The MSRs migrated, as QEMU's x86 target does; those KVM does not
 * report in KVM_GET_MSR_INDEX_LIST are left out on both sides.
 */
static const uint32_t msr_list[] = {
    0x00000010,     /* TSC */
    0x0000003b,     /* TSC_ADJUST */
    0x00000174, 0x00000175, 0x00000176,     /* SYSENTER_CS/ESP/EIP */
    0x00000277,     /* PAT */
    0x000001a0,     /* MISC_ENABLE */
    0x000006e0,     /* TSC_DEADLINE */
    0x000002ff,     /* MTRR_DEF_TYPE */
    0x00000250, 0x00000258, 0x00000259,     /* MTRR fixed */
    0x00000268, 0x00000269, 0x0000026a, 0x0000026b,
    0x0000026c, 0x0000026d, 0x0000026e, 0x0000026f,
    0x00000200, 0x00000201, 0x00000202, 0x00000203,     /* MTRR variable */
    0x00000204, 0x00000205, 0x00000206, 0x00000207,
    0x00000208, 0x00000209, 0x0000020a, 0x0000020b,
    0x0000020c, 0x0000020d, 0x0000020e, 0x0000020f,
    0xc0000081, 0xc0000082, 0xc0000083, 0xc0000084,     /* STAR..FMASK */
    0xc0000102,     /* KERNEL_GS_BASE */
    0xc0000103,     /* TSC_AUX */
    0x4b564d00, 0x4b564d01,     /* kvmclock wall clock, system time */
    0x4b564d02, 0x4b564d03, 0x4b564d04,     /* async PF, steal time, PV EOI */
};

static bool fail(GError **errp, const char *what)
{
    int err = errno;
    g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(err),
                "KVM: %s: %s", what, g_strerror(err));
    return false;
}

static void put_group(GByteArray *out, const void *p, uint32_t len)
{
    uint32_t le = GUINT32_TO_LE(len);
    g_byte_array_append(out, (const uint8_t *)&le, 4);
    g_byte_array_append(out, p, len);
}

/* A reader over a blob; the first failure sticks. */
typedef struct Blob {
    const uint8_t *p;
    size_t left;
    GError **errp;
    bool ok;
} Blob;

/* Take the next group, which must be exactly @len bytes, into @dst. */
static bool get_group(Blob *b, void *dst, uint32_t len, const char *name)
{
    uint32_t have;
    if (!b->ok) {
        return false;
    }
    if (b->left < 4) {
        goto bad;
    }
    memcpy(&have, b->p, 4);
    have = GUINT32_FROM_LE(have);
    if (have != len || b->left - 4 < len) {
        goto bad;
    }
    memcpy(dst, b->p + 4, len);
    b->p += 4 + len;
    b->left -= 4 + len;
    return true;
bad:
    g_set_error(b->errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                "device state: group '%s' is truncated or has the wrong size",
                name);
    b->ok = false;
    return false;
}

/* The MSRs of msr_list that this KVM knows. */
static GArray *supported_msrs(KVMState *s)
{
    struct kvm_msr_list probe = { .nmsrs = 0 };
    GArray *out = g_array_new(false, false, sizeof(uint32_t));

    ioctl(s->fd, KVM_GET_MSR_INDEX_LIST, &probe);      /* sets nmsrs (E2BIG) */
    g_autofree struct kvm_msr_list *l =
        g_malloc0(sizeof(*l) + probe.nmsrs * sizeof(uint32_t));
    l->nmsrs = probe.nmsrs;
    if (ioctl(s->fd, KVM_GET_MSR_INDEX_LIST, l) < 0) {
        return out;
    }
    for (size_t i = 0; i < G_N_ELEMENTS(msr_list); i++) {
        for (uint32_t j = 0; j < l->nmsrs; j++) {
            if (l->indices[j] == msr_list[i]) {
                g_array_append_val(out, msr_list[i]);
                break;
            }
        }
    }
    return out;
}

bool kvm_vcpu_state_save(KVMState *s, KVMCPU *cpu, GByteArray *out,
                         GError **errp)
{
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    struct kvm_xsave xsave;
    struct kvm_xcrs xcrs;
    struct kvm_lapic_state lapic;
    struct kvm_vcpu_events events;
    struct kvm_mp_state mp;
    struct kvm_debugregs dbg;

    if (ioctl(cpu->fd, KVM_GET_REGS, &regs) < 0) {
        return fail(errp, "KVM_GET_REGS");
    }
    if (ioctl(cpu->fd, KVM_GET_SREGS, &sregs) < 0) {
        return fail(errp, "KVM_GET_SREGS");
    }
    if (ioctl(cpu->fd, KVM_GET_XSAVE, &xsave) < 0) {
        return fail(errp, "KVM_GET_XSAVE");
    }
    if (ioctl(cpu->fd, KVM_GET_XCRS, &xcrs) < 0) {
        memset(&xcrs, 0, sizeof(xcrs));         /* no XSAVE features: none */
    }
    if (ioctl(cpu->fd, KVM_GET_LAPIC, &lapic) < 0) {
        return fail(errp, "KVM_GET_LAPIC");
    }
    if (ioctl(cpu->fd, KVM_GET_VCPU_EVENTS, &events) < 0) {
        return fail(errp, "KVM_GET_VCPU_EVENTS");
    }
    if (ioctl(cpu->fd, KVM_GET_MP_STATE, &mp) < 0) {
        return fail(errp, "KVM_GET_MP_STATE");
    }
    if (ioctl(cpu->fd, KVM_GET_DEBUGREGS, &dbg) < 0) {
        return fail(errp, "KVM_GET_DEBUGREGS");
    }

    g_autoptr(GArray) idx = supported_msrs(s);
    g_autofree struct kvm_msrs *msrs =
        g_malloc0(sizeof(*msrs) + idx->len * sizeof(struct kvm_msr_entry));
    msrs->nmsrs = idx->len;
    for (guint i = 0; i < idx->len; i++) {
        msrs->entries[i].index = g_array_index(idx, uint32_t, i);
    }
    int n = ioctl(cpu->fd, KVM_GET_MSRS, msrs);
    if (n < 0 || (guint)n != idx->len) {
        errno = n < 0 ? errno : EINVAL;
        return fail(errp, "KVM_GET_MSRS");
    }

    put_group(out, &regs, sizeof(regs));
    put_group(out, &sregs, sizeof(sregs));
    put_group(out, &xsave, sizeof(xsave));
    put_group(out, &xcrs, sizeof(xcrs));
    put_group(out, &msrs->nmsrs, sizeof(msrs->nmsrs));
    put_group(out, msrs->entries, idx->len * sizeof(struct kvm_msr_entry));
    put_group(out, &lapic, sizeof(lapic));
    put_group(out, &events, sizeof(events));
    put_group(out, &mp, sizeof(mp));
    put_group(out, &dbg, sizeof(dbg));
    return true;
}

bool kvm_vcpu_state_load(KVMState *s, KVMCPU *cpu, const uint8_t *data,
                         size_t len, GError **errp)
{
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    struct kvm_xsave xsave;
    struct kvm_xcrs xcrs;
    struct kvm_lapic_state lapic;
    struct kvm_vcpu_events events;
    struct kvm_mp_state mp;
    struct kvm_debugregs dbg;
    uint32_t nmsrs;
    Blob b = { data, len, errp, true };

    get_group(&b, &regs, sizeof(regs), "regs");
    get_group(&b, &sregs, sizeof(sregs), "sregs");
    get_group(&b, &xsave, sizeof(xsave), "xsave");
    get_group(&b, &xcrs, sizeof(xcrs), "xcrs");
    if (!get_group(&b, &nmsrs, sizeof(nmsrs), "msr count")) {
        return false;
    }
    g_autoptr(GArray) idx = supported_msrs(s);
    if (nmsrs != idx->len) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "device state: %u MSRs in the stream, this host migrates %u",
                    nmsrs, idx->len);
        return false;
    }
    g_autofree struct kvm_msrs *msrs =
        g_malloc0(sizeof(*msrs) + nmsrs * sizeof(struct kvm_msr_entry));
    msrs->nmsrs = nmsrs;
    get_group(&b, msrs->entries, nmsrs * sizeof(struct kvm_msr_entry), "msrs");
    get_group(&b, &lapic, sizeof(lapic), "lapic");
    get_group(&b, &events, sizeof(events), "events");
    get_group(&b, &mp, sizeof(mp), "mp_state");
    get_group(&b, &dbg, sizeof(dbg), "debugregs");
    if (!b.ok) {
        return false;
    }
    if (b.left) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "device state: %zu bytes left over for vCPU %d", b.left,
                    cpu->index);
        return false;
    }
    for (uint32_t i = 0; i < nmsrs; i++) {
        if (msrs->entries[i].index != g_array_index(idx, uint32_t, i)) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                        "device state: unexpected MSR 0x%x",
                        msrs->entries[i].index);
            return false;
        }
    }
    /* Special registers first: the others are interpreted in their mode. */
    if (ioctl(cpu->fd, KVM_SET_SREGS, &sregs) < 0) {
        return fail(errp, "KVM_SET_SREGS");
    }
    if (ioctl(cpu->fd, KVM_SET_REGS, &regs) < 0) {
        return fail(errp, "KVM_SET_REGS");
    }
    if (ioctl(cpu->fd, KVM_SET_XSAVE, &xsave) < 0) {
        return fail(errp, "KVM_SET_XSAVE");
    }
    if (xcrs.nr_xcrs && ioctl(cpu->fd, KVM_SET_XCRS, &xcrs) < 0) {
        return fail(errp, "KVM_SET_XCRS");
    }
    int n = ioctl(cpu->fd, KVM_SET_MSRS, msrs);
    if (n < 0 || (uint32_t)n != nmsrs) {
        if (n >= 0) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                        "KVM: KVM_SET_MSRS refused MSR 0x%x",
                        msrs->entries[n].index);
            return false;
        }
        return fail(errp, "KVM_SET_MSRS");
    }
    if (ioctl(cpu->fd, KVM_SET_LAPIC, &lapic) < 0) {
        return fail(errp, "KVM_SET_LAPIC");
    }
    if (ioctl(cpu->fd, KVM_SET_VCPU_EVENTS, &events) < 0) {
        return fail(errp, "KVM_SET_VCPU_EVENTS");
    }
    if (ioctl(cpu->fd, KVM_SET_MP_STATE, &mp) < 0) {
        return fail(errp, "KVM_SET_MP_STATE");
    }
    if (ioctl(cpu->fd, KVM_SET_DEBUGREGS, &dbg) < 0) {
        return fail(errp, "KVM_SET_DEBUGREGS");
    }
    return true;
}

bool kvm_vm_state_save(KVMState *s, GByteArray *out, GError **errp)
{
    struct kvm_irqchip chips[3];
    struct kvm_pit_state2 pit;
    struct kvm_clock_data clock = { 0 };

    for (int i = 0; i < 3; i++) {
        memset(&chips[i], 0, sizeof(chips[i]));
        chips[i].chip_id = i;                   /* PIC master, slave, IOAPIC */
        if (ioctl(s->vm_fd, KVM_GET_IRQCHIP, &chips[i]) < 0) {
            return fail(errp, "KVM_GET_IRQCHIP");
        }
    }
    if (ioctl(s->vm_fd, KVM_GET_PIT2, &pit) < 0) {
        return fail(errp, "KVM_GET_PIT2");
    }
    if (ioctl(s->vm_fd, KVM_GET_CLOCK, &clock) < 0) {
        return fail(errp, "KVM_GET_CLOCK");
    }
    for (int i = 0; i < 3; i++) {
        put_group(out, &chips[i], sizeof(chips[i]));
    }
    put_group(out, &pit, sizeof(pit));
    put_group(out, &clock, sizeof(clock));
    return true;
}

bool kvm_vm_state_load(KVMState *s, const uint8_t *data, size_t len,
                       GError **errp)
{
    struct kvm_irqchip chips[3];
    struct kvm_pit_state2 pit;
    struct kvm_clock_data clock;
    Blob b = { data, len, errp, true };
    static const char *const names[] = { "pic master", "pic slave", "ioapic" };

    for (int i = 0; i < 3; i++) {
        get_group(&b, &chips[i], sizeof(chips[i]), names[i]);
        if (b.ok && chips[i].chip_id != (uint32_t)i) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                        "device state: irqchip %d has id %u", i,
                        chips[i].chip_id);
            return false;
        }
    }
    get_group(&b, &pit, sizeof(pit), "pit");
    get_group(&b, &clock, sizeof(clock), "kvmclock");
    if (!b.ok) {
        return false;
    }
    if (b.left) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "device state: %zu bytes left over for the VM", b.left);
        return false;
    }
    for (int i = 0; i < 3; i++) {
        if (ioctl(s->vm_fd, KVM_SET_IRQCHIP, &chips[i]) < 0) {
            return fail(errp, "KVM_SET_IRQCHIP");
        }
    }
    if (ioctl(s->vm_fd, KVM_SET_PIT2, &pit) < 0) {
        return fail(errp, "KVM_SET_PIT2");
    }
    /* The guest's clock goes on from where it stopped. */
    clock.flags = 0;
    if (ioctl(s->vm_fd, KVM_SET_CLOCK, &clock) < 0) {
        return fail(errp, "KVM_SET_CLOCK");
    }
    return true;
}
