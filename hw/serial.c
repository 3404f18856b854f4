/* SPDX-License-Identifier: GPL-2.0-or-later */
/* 16550 UART, transmit side; the contract is in include/hw/serial.h. */
#include "hw/serial.h"

#include <errno.h>
#include <unistd.h>

#define LCR_DLAB    0x80
#define LSR_THRE    0x20        /* transmit holding register empty */
#define LSR_TEMT    0x40        /* transmitter empty */
#define MSR_DEFAULT 0xb0        /* DCD, DSR, CTS */
#define IIR_NONE    0x01

void serial_init(SerialState *s, int out_fd, bool own_fd)
{
    g_mutex_init(&s->lock);
    s->out_fd = out_fd;
    s->own_fd = own_fd;
    s->ier = s->fcr = s->mcr = s->scr = s->dlm = 0;
    s->lcr = 0x03;              /* 8n1 */
    s->dll = 0x0c;              /* 9600 baud */
}

void serial_cleanup(SerialState *s)
{
    if (s->own_fd && s->out_fd >= 0) {
        close(s->out_fd);
    }
    s->out_fd = -1;
    g_mutex_clear(&s->lock);
}

static void transmit(SerialState *s, uint8_t c)
{
    /* A full pipe or a closed reader must not stop the guest. */
    while (s->out_fd >= 0 && write(s->out_fd, &c, 1) < 0 && errno == EINTR) {
    }
}

static void serial_write(void *opaque, uint16_t off, uint8_t val)
{
    SerialState *s = opaque;
    g_mutex_lock(&s->lock);
    bool dlab = s->lcr & LCR_DLAB;
    switch (off) {
    case 0:
        if (dlab) {
            s->dll = val;
        } else {
            transmit(s, val);
        }
        break;
    case 1:
        if (dlab) {
            s->dlm = val;
        } else {
            s->ier = val & 0x0f;
        }
        break;
    case 2:
        s->fcr = val;
        break;
    case 3:
        s->lcr = val;
        break;
    case 4:
        s->mcr = val & 0x1f;
        break;
    case 7:
        s->scr = val;
        break;
    }
    g_mutex_unlock(&s->lock);
}

static uint8_t serial_read(void *opaque, uint16_t off)
{
    SerialState *s = opaque;
    uint8_t v = 0;
    g_mutex_lock(&s->lock);
    bool dlab = s->lcr & LCR_DLAB;
    switch (off) {
    case 0:
        v = dlab ? s->dll : 0;  /* nothing is ever received */
        break;
    case 1:
        v = dlab ? s->dlm : s->ier;
        break;
    case 2:
        v = IIR_NONE | (s->fcr & 1 ? 0xc0 : 0);
        break;
    case 3:
        v = s->lcr;
        break;
    case 4:
        v = s->mcr;
        break;
    case 5:
        v = LSR_THRE | LSR_TEMT;
        break;
    case 6:
        v = MSR_DEFAULT;
        break;
    case 7:
        v = s->scr;
        break;
    }
    g_mutex_unlock(&s->lock);
    return v;
}

const PortOps serial_ops = { .read = serial_read, .write = serial_write };
