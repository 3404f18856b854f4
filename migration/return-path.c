/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Return-path messages; the contract is in include/migration/return-path.h. */
#include "migration/return-path.h"

#include <string.h>

#include <gio/gio.h>

#include "migration/qemu-file.h"
#include "migration/stream.h"
#include "qemu/bitmap.h"

#define BITS_PER_WORD   (8 * sizeof(unsigned long))
G_STATIC_ASSERT(sizeof(unsigned long) == sizeof(uint64_t));

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
    } else if (m->type == RP_RECV_BITMAP) {
        size_t n = strnlen(m->text, 255);
        qemu_put_byte(f, n);
        qemu_put_buffer(f, m->text, n);
        qemu_put_u64(f, m->npages);
        for (uint64_t w = 0; w < (m->npages + BITS_PER_WORD - 1) / BITS_PER_WORD;
             w++) {
            qemu_put_u64(f, m->bitmap[w]);
        }
        qemu_put_u64(f, RP_BITMAP_END);
    } else if (m->type == RP_RESUME_ACK) {
        qemu_put_u32(f, 1);
    }
}

/* RP_RECV_BITMAP's body into @m (its bitmap allocated). */
static bool get_bitmap(QEMUFile *f, RPMessage *m, GError **errp)
{
    uint8_t n = qemu_get_byte(f);
    qemu_get_buffer(f, m->text, n);
    m->text[n] = '\0';
    m->npages = qemu_get_u64(f);
    if (qemu_file_error(f)) {
        return true;            /* said by the caller */
    }
    if (m->npages == 0 || m->npages > RP_BITMAP_MAX_PAGES) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "return path: a received-pages bitmap of %" G_GUINT64_FORMAT
                    " pages", m->npages);
        return false;
    }
    m->bitmap = bitmap_new(m->npages);
    uint64_t words = (m->npages + BITS_PER_WORD - 1) / BITS_PER_WORD;
    for (uint64_t w = 0; w < words && !qemu_file_error(f); w++) {
        m->bitmap[w] = qemu_get_u64(f);
    }
    if (m->npages % BITS_PER_WORD) {
        /* Bits past the last page are not pages. */
        m->bitmap[words - 1] &= (1UL << (m->npages % BITS_PER_WORD)) - 1;
    }
    uint64_t end = qemu_get_u64(f);
    if (!qemu_file_error(f) && end != RP_BITMAP_END) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "return path: the received-pages bitmap of '%s' ends "
                    "with 0x%" G_GINT64_MODIFIER "x, not its marker", m->text,
                    end);
        g_clear_pointer(&m->bitmap, bitmap_free);
        return false;
    }
    return true;
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
    case RP_RESUME_ACK:
        m->status = qemu_get_u32(f);
        break;
    case RP_RECV_BITMAP:
        if (!get_bitmap(f, m, errp)) {
            return false;
        }
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
        g_clear_pointer(&m->bitmap, bitmap_free);
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
