/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Thread scheduling class; the contract is in include/qemu/thread-prio.h. */
#include "qemu/thread-prio.h"

#include <errno.h>
#include <sched.h>

int thread_set_fifo(int prio)
{
    struct sched_param p = { .sched_priority = prio };
    /* 0: the calling thread (sched_setscheduler works per thread). */
    return sched_setscheduler(0, SCHED_FIFO, &p) < 0 ? -errno : 0;
}

int thread_set_normal(void)
{
    struct sched_param p = { .sched_priority = 0 };
    return sched_setscheduler(0, SCHED_OTHER, &p) < 0 ? -errno : 0;
}

int thread_probe_fifo(int prio)
{
    int policy = sched_getscheduler(0);
    struct sched_param old;
    if (policy < 0 || sched_getparam(0, &old) < 0) {
        return -errno;
    }
    int ret = thread_set_fifo(prio);
    if (ret == 0 && sched_setscheduler(0, policy, &old) < 0) {
        return -errno;      /* cannot happen: going back needs no privilege */
    }
    return ret;
}
