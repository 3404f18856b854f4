/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A 16550 UART (COM1 at 0x3f8) that sends what the guest transmits to a
 * file descriptor.  No receive path and no interrupts yet: the test
 * guest only transmits, polling the line status.
 */
#ifndef HW_SERIAL_H
#define HW_SERIAL_H

#include <stdint.h>

#include <glib.h>

#include "hw/iobus.h"

#define SERIAL_COM1     0x3f8

typedef struct SerialState {
    GMutex lock;                /* registers; taken in vCPU threads */
    int out_fd;                 /* transmit to, -1 to drop */
    bool own_fd;                /* close out_fd at cleanup */
    uint8_t ier, fcr, lcr, mcr, scr, dll, dlm;
} SerialState;

extern const PortOps serial_ops;

/* serial_init: registers at reset values; takes @out_fd, closed if @own_fd. */
void serial_init(SerialState *s, int out_fd, bool own_fd);
void serial_cleanup(SerialState *s);

#endif
