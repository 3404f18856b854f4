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
#include "system/runstate.h"

typedef struct Machine Machine;

typedef struct VCPUThread {
    Machine *m;
    KVMCPU cpu;
    pthread_t thread;
    int tid;                    /* its kernel thread id, once running (atomic) */
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
    const char *exit_cause;     /* under exit_lock: SHUTDOWN reason, or NULL */
    bool exit_by_guest;         /* under exit_lock */
    int exit_fd;                /* eventfd, wakes the main loop */
    GMainLoop *loop;

    /* Pausing: vCPU threads park on pause_cond while pause_req is set. */
    GMutex pause_lock;
    GCond pause_cond;
    int pause_req;              /* atomic; written under pause_lock */
    int parked;                 /* under pause_lock */

    int throttle_pct;           /* atomic: share of time vCPUs sleep, 0..99 */
    guint throttle_src;         /* main thread: the 10 ms kicker */

    /* Main thread: a guest's shutdown (@cause, QEMU's ShutdownCause)
     * under -no-shutdown, which stops the guest instead of the process. */
    void (*guest_shutdown)(void *opaque, const char *cause);
    void *guest_shutdown_opaque;

    RunState state;             /* main thread only */
    /* Called in the main thread on every run-state change. */
    void (*state_changed)(void *opaque, RunState old, RunState now);
    void *state_opaque;
};

bool machine_init(Machine *m, MachineOptions *opts, GError **errp);

/*
 * machine_start: start every vCPU thread.  With -S they start parked and
 * the state is prelaunch; otherwise running.
 */
bool machine_start(Machine *m, GError **errp);

/* machine_run: the main loop, until an exit is requested; the status. */
int machine_run(Machine *m);

/*
 * machine_request_exit: from any thread; the first request wins.
 * @cause: QEMU's ShutdownCause for the SHUTDOWN event, or NULL for an
 * exit without one (isa-debug-exit, as QEMU).  @guest: the guest asked.
 */
void machine_request_exit(Machine *m, int status, const char *cause,
                          bool guest);

/*
 * machine_pause / machine_resume: main thread.  Pause returns once every
 * vCPU is out of KVM_RUN and parked; both are no-ops when already so.
 */
void machine_pause(Machine *m);
void machine_resume(Machine *m);

/*
 * machine_set_throttle: make every vCPU sleep @pct percent of each 10 ms
 * slice (0 stops throttling), as QEMU's auto-converge does.  Main thread.
 */
void machine_set_throttle(Machine *m, int pct);

/* machine_set_state: record @s and tell state_changed (main thread). */
void machine_set_state(Machine *m, RunState s);

/* machine_cleanup: stop and join the vCPU threads, free everything. */
void machine_cleanup(Machine *m);

#endif
