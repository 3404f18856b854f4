/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Scheduling class of the calling thread.  Policy-free: thin wrappers
 * that return 0 or -errno (-EPERM without CAP_SYS_NICE or an RLIMIT_RTPRIO).
 */
#ifndef QEMU_THREAD_PRIO_H
#define QEMU_THREAD_PRIO_H

/*
 * thread_set_fifo: SCHED_FIFO at @prio (1-99) for the calling thread,
 * so that it runs as soon as it wakes, ahead of every normal thread.
 * Only for threads that block between short bursts of work.
 */
int thread_set_fifo(int prio);

/* thread_set_normal: back to SCHED_OTHER. */
int thread_set_normal(void);

/*
 * thread_probe_fifo: whether thread_set_fifo(@prio) would succeed for
 * the calling thread (0 or its -errno), found by switching and back: the
 * thread's class and priority are as before on return.
 */
int thread_probe_fifo(int prio);

#endif
