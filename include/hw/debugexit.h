/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * isa-debug-exit: a guest write of V to the port ends the process with
 * status (V << 1) | 1, as QEMU's device does.
 */
#ifndef HW_DEBUGEXIT_H
#define HW_DEBUGEXIT_H

#include <stdint.h>

#include "hw/iobus.h"

typedef struct DebugExit {
    uint16_t iobase, iosize;
    /* Called in the vCPU thread that wrote; must not return to the guest. */
    void (*request_exit)(void *opaque, int status);
    void *opaque;
} DebugExit;

extern const PortOps debugexit_ops;

#endif
