/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The x86 I/O port space; the contract is in include/hw/iobus.h. */
#include "hw/iobus.h"

bool iobus_add(IoBus *bus, uint16_t base, uint16_t len, const char *name,
               const PortOps *ops, void *opaque, GError **errp)
{
    if (len == 0 || (uint32_t)base + len > 0x10000) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "%s: invalid I/O range 0x%x+%u", name, base, len);
        return false;
    }
    for (int i = 0; i < bus->n; i++) {
        IoRange *r = &bus->r[i];
        if (base < r->base + r->len && r->base < base + len) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_EXIST,
                        "%s: I/O ports 0x%x+%u overlap %s", name, base, len,
                        r->name);
            return false;
        }
    }
    if (bus->n == IOBUS_MAX_RANGES) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_NOSPC,
                    "%s: too many I/O devices", name);
        return false;
    }
    bus->r[bus->n++] = (IoRange) { base, len, name, ops, opaque };
    return true;
}

void iobus_access(IoBus *bus, uint16_t port, bool write, uint8_t *data,
                  int size)
{
    for (int b = 0; b < size; b++) {
        uint16_t p = port + b;
        IoRange *hit = NULL;
        for (int i = 0; i < bus->n; i++) {
            if (p >= bus->r[i].base && p - bus->r[i].base < bus->r[i].len) {
                hit = &bus->r[i];
                break;
            }
        }
        if (write) {
            if (hit && hit->ops->write) {
                hit->ops->write(hit->opaque, p - hit->base, data[b]);
            }
        } else {
            data[b] = hit && hit->ops->read ?
                      hit->ops->read(hit->opaque, p - hit->base) : 0xff;
        }
    }
}
