/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The ferry machine: KVM, guest RAM, the Multiboot kernel, the devices
 * and one thread per vCPU.
 *
 * Threads: machine_init, machine_start, machine_run and machine_cleanup
 * run in the main thread.  Each vCPU thread ("CPU n/KVM", as QEMU
 * names them) runs its vCPU until told to quit.  A vCPU thread that
 * needs the process to end (isa-debug-exit, a triple fault, a KVM
 * error) records the status once, under exit_lock, and wakes the main
 * loop through exit_fd.
 *
 * Error contract: GError **errp last, bool result.
 */
#ifndef SYSTEM_MACHINE_H
#define SYSTEM_MACHINE_H

#include <pthread.h>
#include <stdbool.h>

#include <glib.h>

#include "hw/debugexit.h"
#include "hw/iobus.h"
#include "hw/serial.h"
#include "system/kvm.h"
#include "system/options.h"
#include "system/ramblock.h"

typedef struct Machine Machine;

typedef struct VCPUThread {
    Machine *m;
    KVMCPU cpu;
    pthread_t thread;
    bool started;               /* thread created; joined at cleanup */
} VCPUThread;

struct Machine {
    MachineOptions *opts;       /* owned by the caller */
    KVMState kvm;
    RAMBlock *ram;              /* "pc.ram" */
    IoBus io;
    SerialState serial;
    bool have_serial;
    DebugExit debug_exit;
    VCPUThread vcpus[MAX_VCPUS];
    int ncpus;

    int quit;                   /* atomic: vCPU threads stop when set */
    GMutex exit_lock;
    bool exit_requested;        /* under exit_lock */
    int exit_status;            /* under exit_lock */
    int exit_fd;                /* eventfd, wakes the main loop */
    GMainLoop *loop;
};

bool machine_init(Machine *m, MachineOptions *opts, GError **errp);

/* machine_start: start every vCPU thread; returns once all have started. */
bool machine_start(Machine *m, GError **errp);

/* machine_run: the main loop, until an exit is requested; the status. */
int machine_run(Machine *m);

/* machine_request_exit: from any thread; the first status wins. */
void machine_request_exit(Machine *m, int status);

/* machine_cleanup: stop and join the vCPU threads, free everything. */
void machine_cleanup(Machine *m);

#endif
