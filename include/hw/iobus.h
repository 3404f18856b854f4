/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The x86 I/O port space: devices claim port ranges; vCPU exits are
 * dispatched to them byte by byte.
 *
 * Threads: ranges are added in the main thread before any vCPU runs;
 * iobus_access runs in vCPU threads, and each device's callbacks take
 * that device's own lock.
 */
#ifndef HW_IOBUS_H
#define HW_IOBUS_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#define IOBUS_MAX_RANGES 16

typedef struct PortOps {
    /* @off is the offset within the device's range.  vCPU thread. */
    uint8_t (*read)(void *opaque, uint16_t off);
    void (*write)(void *opaque, uint16_t off, uint8_t val);
} PortOps;

typedef struct IoRange {
    uint16_t base, len;
    const char *name;
    const PortOps *ops;
    void *opaque;
} IoRange;

typedef struct IoBus {
    IoRange r[IOBUS_MAX_RANGES];
    int n;
} IoBus;

/* iobus_add: claim [base, base + len); fails if it overlaps a claim. */
bool iobus_add(IoBus *bus, uint16_t base, uint16_t len, const char *name,
               const PortOps *ops, void *opaque, GError **errp);

/*
 * iobus_access: @size bytes at @port, one byte per port as ISA does.
 * Reads of unclaimed ports give 0xff; writes to them are dropped.
 */
void iobus_access(IoBus *bus, uint16_t port, bool write, uint8_t *data,
                  int size);

#endif
