/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The ferry machine; the contract is in include/system/machine.h. */
#include "system/machine.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib-unix.h>

#include "hw/multiboot.h"

/* Kicks a vCPU thread out of KVM_RUN; the handler does nothing. */
#define SIG_KICK SIGUSR1

static void kick_handler(int sig)
{
    (void)sig;
}

void machine_request_exit(Machine *m, int status, const char *cause,
                          bool guest)
{
    g_mutex_lock(&m->exit_lock);
    if (!m->exit_requested) {
        m->exit_requested = true;
        m->exit_status = status;
        m->exit_cause = cause;
        m->exit_by_guest = guest;
        uint64_t one = 1;
        if (write(m->exit_fd, &one, sizeof(one)) < 0) {
            /* The counter cannot overflow with one write; nothing to do. */
        }
    }
    g_mutex_unlock(&m->exit_lock);
}

static void debug_exit_cb(void *opaque, int status)
{
    machine_request_exit(opaque, status, NULL, true);
}

/*
 * Load the -kernel image.  An incoming machine gets its RAM from the
 * migration, so the image is loaded into a scratch copy of the RAM's
 * layout instead, which checks it as thoroughly and is thrown away, as
 * QEMU keeps ROM images out of RAM in inmigrate: a page of the image
 * that the source's guest has since zeroed comes as a zero page, which
 * the destination leaves as it finds it when the block reads zero
 * (RAMBlock.zeroed).
 */
static bool load_kernel(Machine *m, KVMCPU *bsp, GError **errp)
{
    g_autofree char *image = NULL;
    gsize len;
    MultibootEntry entry;
    RAMBlock scratch = *m->ram;

    g_autoptr(GError) err = NULL;
    struct stat st;
    /* Not /dev/zero or a pipe read until memory runs out: a file that
     * fits in guest RAM. */
    if (stat(m->opts->kernel, &st) == 0 &&
        (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > m->ram->size)) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "could not load kernel '%s': %s", m->opts->kernel,
                    !S_ISREG(st.st_mode) ? "not a regular file"
                                         : "larger than guest RAM");
        return false;
    }
    if (!g_file_get_contents(m->opts->kernel, &image, &len, &err)) {
        g_set_error(errp, G_FILE_ERROR, err->code,
                    "could not load kernel '%s': %s", m->opts->kernel,
                    err->code == G_FILE_ERROR_NOENT ?
                    "No such file or directory" : err->message);
        return false;
    }
    if (!m->opts->incoming) {
        m->ram->zeroed = false;     /* the image is in it now */
        return multiboot_load(m->ram, m->opts->kernel, (uint8_t *)image, len,
                              m->opts->append, &entry, errp) &&
               kvm_vcpu_set_multiboot(bsp, entry.entry, entry.mbi, errp);
    }
    /* Only the pages the loader writes are ever allocated. */
    scratch.host = mmap(NULL, scratch.size, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (scratch.host == MAP_FAILED) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(errno),
                    "could not load kernel '%s': %s", m->opts->kernel,
                    g_strerror(errno));
        return false;
    }
    bool ok = multiboot_load(&scratch, m->opts->kernel, (uint8_t *)image, len,
                             m->opts->append, &entry, errp);
    munmap(scratch.host, scratch.size);
    return ok;
}

static bool init_devices(Machine *m, GError **errp)
{
    MachineOptions *o = m->opts;

    int fd = o->serial == SERIAL_STDIO ? STDOUT_FILENO : -1;
    if (o->serial == SERIAL_CHARDEV &&
        !chardev_open_output(&o->chardevs,
                             chardev_find(&o->chardevs, o->serial_chardev),
                             &fd, errp)) {
        return false;
    }
    if (o->serial == SERIAL_FILE) {
        fd = open(o->serial_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                  0644);
        if (fd < 0) {
            g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(errno),
                        "-serial file:%s: %s", o->serial_path,
                        g_strerror(errno));
            return false;
        }
    }
    if (fd >= 0) {
        serial_init(&m->serial, fd, fd != STDOUT_FILENO);
        m->have_serial = true;
        if (!iobus_add(&m->io, SERIAL_COM1, 8, "serial", &serial_ops,
                       &m->serial, errp)) {
            return false;
        }
    }
    if (o->debug_exit) {
        m->debug_exit = (DebugExit) {
            o->debug_exit_iobase, o->debug_exit_iosize, debug_exit_cb, m,
        };
        if (!iobus_add(&m->io, o->debug_exit_iobase, o->debug_exit_iosize,
                       "isa-debug-exit", &debugexit_ops, &m->debug_exit,
                       errp)) {
            return false;
        }
    }
    return true;
}

bool machine_init(Machine *m, MachineOptions *opts, GError **errp)
{
    memset(m, 0, sizeof(*m));
    m->opts = opts;
    m->exit_fd = -1;
    g_mutex_init(&m->exit_lock);
    g_mutex_init(&m->pause_lock);
    g_cond_init(&m->pause_cond);
    for (int i = 0; i < MAX_VCPUS; i++) {
        m->vcpus[i].cpu.fd = -1;
    }
    m->kvm.fd = m->kvm.vm_fd = -1;

    m->exit_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (m->exit_fd < 0) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(errno),
                    "eventfd: %s", g_strerror(errno));
        return false;
    }
    if (!kvm_init(&m->kvm, errp)) {
        return false;
    }
    if (opts->machine_none) {
        /* QEMU's none machine: no RAM, no CPU, no device; the monitors
         * answer (a management layer probing what this binary offers). */
        return true;
    }
    MemBackendOptions *backend = opts->memory_backend ?
        options_find_backend(opts, opts->memory_backend) : NULL;
    m->ram = backend ? ram_block_new("pc.ram", backend, errp)
                     : ram_block_new_anon("pc.ram", opts->ram_size, errp);
    if (!m->ram) {
        return false;
    }
    pc_ram_layout(m->ram);
    if (!opts->dump_guest_core) {
        /* -machine dump-guest-core=off: RAM stays out of core dumps. */
        madvise(m->ram->host, m->ram->size, MADV_DONTDUMP);
    }
    if (!kvm_add_ram(&m->kvm, m->ram, errp)) {
        return false;
    }
    for (int i = 0; i < opts->smp; i++) {
        m->vcpus[i].m = m;
        if (!kvm_vcpu_create(&m->kvm, &m->vcpus[i].cpu, i, opts->smp, errp)) {
            return false;
        }
        m->ncpus++;
    }
    if (opts->kernel && !load_kernel(m, &m->vcpus[0].cpu, errp)) {
        return false;
    }
    return init_devices(m, errp);
}

/*
 * A vCPU that cannot run again (no reset) while the process stays: it
 * counts as parked, so that machine_pause of the others returns, until
 * the machine quits.
 */
static void halt_for_good(Machine *m)
{
    g_mutex_lock(&m->pause_lock);
    m->parked++;
    g_cond_broadcast(&m->pause_cond);
    while (!__atomic_load_n(&m->quit, __ATOMIC_SEQ_CST)) {
        g_cond_wait(&m->pause_cond, &m->pause_lock);
    }
    m->parked--;
    g_mutex_unlock(&m->pause_lock);
}

/* Handle one exit; false when the vCPU must stop. */
static bool handle_exit(Machine *m, KVMCPU *cpu)
{
    struct kvm_run *run = cpu->run;

    switch (run->exit_reason) {
    case KVM_EXIT_IO: {
        uint8_t *data = (uint8_t *)run + run->io.data_offset;
        for (uint32_t i = 0; i < run->io.count; i++) {
            iobus_access(&m->io, run->io.port,
                         run->io.direction == KVM_EXIT_IO_OUT,
                         data + i * run->io.size, run->io.size);
        }
        return true;
    }
    case KVM_EXIT_MMIO:
        /* No MMIO devices but the in-kernel ones: reads float high. */
        if (!run->mmio.is_write) {
            memset(run->mmio.data, 0xff, sizeof(run->mmio.data));
        }
        return true;
    case KVM_EXIT_HLT:
    case KVM_EXIT_IRQ_WINDOW_OPEN:
    case KVM_EXIT_INTR:
        return true;
    case KVM_EXIT_SHUTDOWN:
        /* A triple fault.  QEMU would reset; ferry has no reset yet, so
         * it stops, as QEMU does with -no-reboot. */
        if (!m->opts->no_reboot) {
            fprintf(stderr, "ferry: vCPU %d: triple fault; reset is not "
                    "supported, stopping\n", cpu->index);
        }
        machine_request_exit(m, 0, "guest-reset", true);
        if (m->opts->no_shutdown) {
            halt_for_good(m);   /* the process stays (-no-shutdown) */
        }
        return false;
    case KVM_EXIT_FAIL_ENTRY:
        fprintf(stderr, "ferry: vCPU %d: KVM entry failed, hardware reason "
                "0x%llx\n", cpu->index,
                (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
        machine_request_exit(m, 1, "host-error", false);
        return false;
    case KVM_EXIT_INTERNAL_ERROR:
        fprintf(stderr, "ferry: vCPU %d: KVM internal error. Suberror: %u\n",
                cpu->index, run->internal.suberror);
        machine_request_exit(m, 1, "host-error", false);
        return false;
    default:
        fprintf(stderr, "ferry: vCPU %d: unhandled KVM exit %u\n", cpu->index,
                run->exit_reason);
        machine_request_exit(m, 1, "host-error", false);
        return false;
    }
}

/* Sit out a pause; the pauser counts us in parked. */
static void park(Machine *m)
{
    g_mutex_lock(&m->pause_lock);
    m->parked++;
    g_cond_broadcast(&m->pause_cond);
    while (__atomic_load_n(&m->pause_req, __ATOMIC_SEQ_CST) &&
           !__atomic_load_n(&m->quit, __ATOMIC_SEQ_CST)) {
        g_cond_wait(&m->pause_cond, &m->pause_lock);
    }
    m->parked--;
    g_mutex_unlock(&m->pause_lock);
}

/*
 * Get every vCPU out of KVM_RUN.  The caller has set the flag the
 * threads test before entering KVM_RUN (seq_cst, before this store):
 * immediate_exit catches a thread about to enter, the signal one inside.
 */
static void kick_all(Machine *m)
{
    for (int i = 0; i < m->ncpus; i++) {
        VCPUThread *t = &m->vcpus[i];
        if (t->started) {
            __atomic_store_n(&t->cpu.run->immediate_exit, 1, __ATOMIC_SEQ_CST);
            pthread_kill(t->thread, SIG_KICK);
        }
    }
}

void machine_pause(Machine *m)
{
    g_mutex_lock(&m->pause_lock);
    if (__atomic_load_n(&m->pause_req, __ATOMIC_SEQ_CST)) {
        g_mutex_unlock(&m->pause_lock);
        return;
    }
    __atomic_store_n(&m->pause_req, 1, __ATOMIC_SEQ_CST);
    g_mutex_unlock(&m->pause_lock);
    kick_all(m);
    g_mutex_lock(&m->pause_lock);
    while (m->parked < m->ncpus) {
        g_cond_wait(&m->pause_cond, &m->pause_lock);
    }
    g_mutex_unlock(&m->pause_lock);
}

void machine_resume(Machine *m)
{
    g_mutex_lock(&m->pause_lock);
    __atomic_store_n(&m->pause_req, 0, __ATOMIC_SEQ_CST);
    g_cond_broadcast(&m->pause_cond);
    g_mutex_unlock(&m->pause_lock);
}

#define THROTTLE_SLICE_US 10000

/* Every slice, kick the vCPUs: each then sleeps its share (vcpu_thread). */
static gboolean throttle_tick(gpointer opaque)
{
    kick_all(opaque);
    return G_SOURCE_CONTINUE;
}

void machine_set_throttle(Machine *m, int pct)
{
    pct = CLAMP(pct, 0, 99);
    __atomic_store_n(&m->throttle_pct, pct, __ATOMIC_SEQ_CST);
    if (pct && !m->throttle_src) {
        m->throttle_src = g_timeout_add(THROTTLE_SLICE_US / 1000, throttle_tick, m);
    } else if (!pct && m->throttle_src) {
        g_source_remove(m->throttle_src);
        m->throttle_src = 0;
    }
}

/* A throttled vCPU sleeps pct/(100-pct) of a slice for each slice it ran. */
static void throttle_sleep(Machine *m)
{
    int pct = __atomic_load_n(&m->throttle_pct, __ATOMIC_SEQ_CST);
    if (pct > 0) {
        g_usleep((uint64_t)THROTTLE_SLICE_US * pct / (100 - pct));
    }
}

void machine_set_state(Machine *m, RunState s)
{
    RunState old = m->state;
    m->state = s;
    if (old != s && m->state_changed) {
        m->state_changed(m->state_opaque, old, s);
    }
}

static void *vcpu_thread(void *opaque)
{
    VCPUThread *t = opaque;
    Machine *m = t->m;
    KVMCPU *cpu = &t->cpu;

    __atomic_store_n(&t->tid, (int)gettid(), __ATOMIC_RELEASE);
    while (!__atomic_load_n(&m->quit, __ATOMIC_ACQUIRE)) {
        if (__atomic_load_n(&m->pause_req, __ATOMIC_SEQ_CST)) {
            park(m);
            continue;
        }
        int ret = kvm_vcpu_run(cpu);
        if (ret == -EINTR || ret == -EAGAIN) {
            __atomic_store_n(&cpu->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
            throttle_sleep(m);
            continue;
        }
        if (ret < 0) {
            fprintf(stderr, "ferry: vCPU %d: KVM_RUN: %s\n", cpu->index,
                    g_strerror(-ret));
            machine_request_exit(m, 1, "host-error", false);
            break;
        }
        if (!handle_exit(m, cpu)) {
            break;
        }
    }
    return NULL;
}

bool machine_start(Machine *m, GError **errp)
{
    struct sigaction sa = { .sa_handler = kick_handler };

    /* With -S or -incoming, every vCPU parks before its first KVM_RUN. */
    m->pause_req = m->opts->start_paused || m->opts->incoming;
    sigemptyset(&sa.sa_mask);
    sigaction(SIG_KICK, &sa, NULL);

    for (int i = 0; i < m->ncpus; i++) {
        VCPUThread *t = &m->vcpus[i];
        g_autofree char *name = g_strdup_printf("CPU %d/KVM", i);
        int err = pthread_create(&t->thread, NULL, vcpu_thread, t);
        if (err) {
            g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(err),
                        "cannot start vCPU %d: %s", i, g_strerror(err));
            return false;
        }
        pthread_setname_np(t->thread, name);
        t->started = true;
    }
    machine_set_state(m, m->opts->incoming ? RUN_STATE_INMIGRATE :
                         m->opts->start_paused ? RUN_STATE_PRELAUNCH :
                         RUN_STATE_RUNNING);
    return true;
}

static gboolean exit_ready(gint fd, GIOCondition cond, gpointer opaque)
{
    Machine *m = opaque;
    uint64_t v;
    (void)cond;
    if (read(fd, &v, sizeof(v)) != sizeof(v)) {
        return G_SOURCE_CONTINUE;
    }
    g_mutex_lock(&m->exit_lock);
    const char *cause = m->exit_cause;
    bool stay = m->opts->no_shutdown && m->exit_by_guest && cause &&
                m->guest_shutdown;
    if (stay) {
        /* -no-shutdown: a guest's shutdown stops it, and the process
         * stays for its management (QEMU's words: state shutdown,
         * SHUTDOWN, STOP).  isa-debug-exit (no cause) still exits. */
        m->exit_requested = false;
        m->exit_cause = NULL;
    }
    g_mutex_unlock(&m->exit_lock);
    if (stay) {
        m->guest_shutdown(m->guest_shutdown_opaque, cause);
    } else {
        g_main_loop_quit(m->loop);
    }
    return G_SOURCE_CONTINUE;
}

int machine_run(Machine *m)
{
    m->loop = g_main_loop_new(NULL, false);
    guint src = g_unix_fd_add(m->exit_fd, G_IO_IN, exit_ready, m);
    g_main_loop_run(m->loop);
    g_source_remove(src);
    g_main_loop_unref(m->loop);
    m->loop = NULL;

    g_mutex_lock(&m->exit_lock);
    int status = m->exit_status;
    g_mutex_unlock(&m->exit_lock);
    return status;
}

void machine_cleanup(Machine *m)
{
    if (m->throttle_src) {
        g_source_remove(m->throttle_src);
        m->throttle_src = 0;
    }
    __atomic_store_n(&m->throttle_pct, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&m->quit, 1, __ATOMIC_SEQ_CST);
    g_mutex_lock(&m->pause_lock);
    g_cond_broadcast(&m->pause_cond);       /* parked threads see quit */
    g_mutex_unlock(&m->pause_lock);
    kick_all(m);
    for (int i = 0; i < m->ncpus; i++) {
        if (m->vcpus[i].started) {
            pthread_join(m->vcpus[i].thread, NULL);
        }
    }
    for (int i = 0; i < MAX_VCPUS; i++) {
        if (m->vcpus[i].cpu.fd >= 0) {
            kvm_vcpu_destroy(&m->kvm, &m->vcpus[i].cpu);
        }
    }
    if (m->have_serial) {
        serial_cleanup(&m->serial);
    }
    ram_block_free(m->ram);
    m->ram = NULL;
    if (m->kvm.fd >= 0) {
        kvm_cleanup(&m->kvm);
    }
    if (m->exit_fd >= 0) {
        close(m->exit_fd);
    }
    g_mutex_clear(&m->exit_lock);
    g_mutex_clear(&m->pause_lock);
    g_cond_clear(&m->pause_cond);
}
