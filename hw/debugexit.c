/* SPDX-License-Identifier: GPL-2.0-or-later */
/* isa-debug-exit; the contract is in include/hw/debugexit.h. */
#include "hw/debugexit.h"

static void debugexit_write(void *opaque, uint16_t off, uint8_t val)
{
    DebugExit *d = opaque;
    /* A wider write reaches us byte by byte: the first byte decides. */
    if (off == 0) {
        d->request_exit(d->opaque, (val << 1) | 1);
    }
}

const PortOps debugexit_ops = { .write = debugexit_write };
