/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Return-path messages; the contract is in include/migration/return-path.h. */
#include "migration/return-path.h"

#include <string.h>

#include <gio/gio.h>

#include "migration/qemu-file.h"
#include "migration/stream.h"

void rp_put(QEMUFile *f, const RPMessage *m)
{
    qemu_put_byte(f, m->type);
    if (m->type == RP_REQ_PAGES) {
        qemu_put_u64(f, m->off);
        qemu_put_u32(f, m->count);
    } else if (m->type == RP_SHUT) {
        qemu_put_u32(f, m->status);
    } else if (m->type == RP_PONG) {
        qemu_put_u32(f, m->id);
    } else if (m->type == RP_REASON) {
        size_t n = strnlen(m->text, RP_REASON_MAX);
        qemu_put_u16(f, n);
        qemu_put_buffer(f, m->text, n);
    }
}

bool rp_get(QEMUFile *f, RPMessage *m, GError **errp)
{
    *m = (RPMessage) { .type = qemu_get_byte(f) };
    if (qemu_file_error(f)) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "return path: %s", g_strerror(-qemu_file_error(f)));
        return false;
    }
    switch (m->type) {
    case RP_REQ_PAGES:
        m->off = qemu_get_u64(f);
        m->count = qemu_get_u32(f);
        break;
    case RP_SHUT:
        m->status = qemu_get_u32(f);
        break;
    case RP_PONG:
        m->id = qemu_get_u32(f);
        break;
    case RP_RUNNING:
        break;
    case RP_REASON: {
        uint16_t n = qemu_get_u16(f);
        if (n > RP_REASON_MAX) {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                        "return path: a reason of %u bytes (at most %u)", n,
                        RP_REASON_MAX);
            return false;
        }
        qemu_get_buffer(f, m->text, n);
        m->text[n] = '\0';
        break;
    }
    default:
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "return path: unknown message 0x%02x", m->type);
        return false;
    }
    if (qemu_file_error(f)) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "return path: message 0x%02x cut short: %s", m->type,
                    g_strerror(-qemu_file_error(f)));
        return false;
    }
    return true;
}

bool rp_check_request(const RAMBlock *rb, uint64_t off, uint32_t count,
                      GError **errp)
{
    if (!stream_run_fits(rb, off, count)) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "return path: refused a request for %u pages at 0x%"
                    G_GINT64_MODIFIER "x (block '%s' has 0x%"
                    G_GINT64_MODIFIER "x bytes)", count, off, rb->name,
                    rb->size);
        return false;
    }
    return true;
}
