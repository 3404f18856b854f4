/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Migration stream I/O; the contract is in include/migration/qemu-file.h. */
#include "migration/qemu-file.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <sys/types.h>

#include "crypto/tls.h"
#include "migration/channel.h"

#define IO_BUF_SIZE (256 * 1024)
/*
 * A reader refills with at most this much.  A record's header comes
 * through the buffer, and whatever of its pages came with it is copied
 * once more from there; the rest is read straight into guest RAM.  With
 * 256 KiB fills a quarter of each 1 MiB run was copied twice.
 */
#define FILL_SIZE   (32 * 1024)

struct QEMUFile {
    int fd;
    bool writable, own;
    uint8_t *buf;
    size_t len;                 /* bytes in buf: to write, or readable */
    size_t pos;                 /* reader: next byte */
    uint64_t transferred;
    int error;
    GByteArray *out;            /* a memory writer's contents */
    TlsSession *tls;            /* the socket's TLS session, or NULL */
};

/* One read or write of the fd, through its TLS session if it has one. */
static ssize_t fd_read(QEMUFile *f, void *p, size_t len)
{
    if (f->tls) {
        ssize_t n = tls_session_read(f->tls, p, len, false);
        errno = n < 0 ? (int)-n : 0;
        return n < 0 ? -1 : n;
    }
    return read(f->fd, p, len);
}

static ssize_t fd_write(QEMUFile *f, const void *p, size_t len)
{
    if (f->tls) {
        ssize_t n = tls_session_write(f->tls, p, len);
        errno = n < 0 ? (int)-n : 0;
        return n < 0 ? -1 : n;
    }
    return write(f->fd, p, len);
}

QEMUFile *qemu_file_new(int fd, bool writable, bool own)
{
    QEMUFile *f = g_new0(QEMUFile, 1);
    f->fd = fd;
    f->writable = writable;
    f->own = own;
    f->buf = g_malloc(IO_BUF_SIZE);
    f->tls = tls_session_lookup(fd);
    return f;
}

QEMUFile *qemu_file_new_prefixed(int fd, const void *prefix, size_t len)
{
    g_assert(len <= 4096);
    QEMUFile *f = qemu_file_new(fd, false, true);
    memcpy(f->buf, prefix, len);
    f->len = len;
    return f;
}

QEMUFile *qemu_file_new_mem(const void *data, size_t len)
{
    QEMUFile *f = g_new0(QEMUFile, 1);
    f->fd = -1;
    f->buf = g_memdup2(data, len ? len : 1);
    f->len = len;
    return f;
}

QEMUFile *qemu_file_new_mem_writer(void)
{
    QEMUFile *f = qemu_file_new(-1, true, false);
    f->out = g_byte_array_new();
    return f;
}

GBytes *qemu_file_mem_finish(QEMUFile *f)
{
    qemu_fflush(f);
    GBytes *b = g_byte_array_free_to_bytes(f->out);
    f->out = NULL;
    qemu_file_close(f);
    return b;
}

int qemu_file_error(const QEMUFile *f)
{
    return f->error;
}

void qemu_file_set_error(QEMUFile *f, int err)
{
    if (!f->error) {
        f->error = err;
    }
}

uint64_t qemu_file_transferred(const QEMUFile *f)
{
    return f->transferred;
}

int qemu_file_fd(const QEMUFile *f)
{
    return f->fd;
}

void qemu_file_shutdown(QEMUFile *f)
{
    if (shutdown(f->fd, SHUT_RDWR) < 0 && errno == ENOTSOCK) {
        /* Pipes and files: nothing blocks for long; the error flag does. */
    }
}

static void write_all(QEMUFile *f, const uint8_t *p, size_t len)
{
    if (f->out) {
        g_byte_array_append(f->out, p, len);
        return;
    }
    while (len && !f->error) {
        ssize_t n = fd_write(f, p, len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            qemu_file_set_error(f, n < 0 ? -errno : -EIO);
            return;
        }
        p += n;
        len -= n;
    }
}

void qemu_fflush(QEMUFile *f)
{
    if (f->writable && f->len) {
        write_all(f, f->buf, f->len);
        f->len = 0;
    }
}

void qemu_put_buffer(QEMUFile *f, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    if (f->error) {
        return;
    }
    f->transferred += len;
    if (len >= IO_BUF_SIZE / 2) {
        /* Large runs of pages go straight out, without a copy. */
        qemu_fflush(f);
        write_all(f, p, len);
        return;
    }
    if (f->len + len > IO_BUF_SIZE) {
        qemu_fflush(f);
    }
    memcpy(f->buf + f->len, p, len);
    f->len += len;
}

void qemu_put_byte(QEMUFile *f, uint8_t v)
{
    qemu_put_buffer(f, &v, 1);
}

void qemu_put_u16(QEMUFile *f, uint16_t v)
{
    v = GUINT16_TO_LE(v);
    qemu_put_buffer(f, &v, 2);
}

void qemu_put_u32(QEMUFile *f, uint32_t v)
{
    v = GUINT32_TO_LE(v);
    qemu_put_buffer(f, &v, 4);
}

void qemu_put_u64(QEMUFile *f, uint64_t v)
{
    v = GUINT64_TO_LE(v);
    qemu_put_buffer(f, &v, 8);
}

/* Refill the buffer; false at end of stream or on error. */
static bool fill(QEMUFile *f)
{
    f->pos = f->len = 0;
    if (f->fd < 0) {
        qemu_file_set_error(f, -EIO);       /* a memory file's end */
        return false;
    }
    for (;;) {
        ssize_t n = fd_read(f, f->buf, FILL_SIZE);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            qemu_file_set_error(f, n < 0 ? -errno : -EIO);
            return false;
        }
        f->len = n;
        return true;
    }
}

size_t qemu_file_pending(const QEMUFile *f)
{
    if (f->writable) {
        return 0;
    }
    return f->len - f->pos + (f->tls ? tls_session_pending(f->tls) : 0);
}

bool qemu_file_ready(QEMUFile *f)
{
    if (f->len - f->pos || f->error) {
        return true;
    }
    struct pollfd p = { .fd = f->fd, .events = POLLIN };
    if (f->fd < 0 || ((!f->tls || !tls_session_pending(f->tls)) &&
                      poll(&p, 1, 0) <= 0)) {
        return false;
    }
    if (!f->tls) {
        return true;
    }
    /* What came may be a partial record, or one that is not data (a key
     * update): only plaintext counts. */
    ssize_t n = tls_session_read(f->tls, f->buf, FILL_SIZE, true);
    if (n == -EAGAIN) {
        return false;
    }
    f->pos = 0;
    f->len = n > 0 ? n : 0;
    if (n <= 0) {
        qemu_file_set_error(f, n < 0 ? (int)n : -EIO);
    }
    return true;
}

void qemu_get_buffer(QEMUFile *f, void *buf, size_t len)
{
    uint8_t *p = buf;
    while (len) {
        if (f->error) {
            memset(p, 0, len);
            return;
        }
        if (f->pos == f->len) {
            /* Large reads go straight into the caller's memory. */
            if (len >= FILL_SIZE && f->fd >= 0) {
                ssize_t n = fd_read(f, p, len);
                if (n < 0 && errno == EINTR) {
                    continue;
                }
                if (n <= 0) {
                    qemu_file_set_error(f, n < 0 ? -errno : -EIO);
                    continue;
                }
                p += n;
                len -= n;
                f->transferred += n;
                continue;
            }
            if (!fill(f)) {
                continue;
            }
        }
        size_t n = MIN(len, f->len - f->pos);
        memcpy(p, f->buf + f->pos, n);
        f->pos += n;
        p += n;
        len -= n;
        f->transferred += n;
    }
}

uint8_t qemu_get_byte(QEMUFile *f)
{
    uint8_t v;
    qemu_get_buffer(f, &v, 1);
    return v;
}

uint16_t qemu_get_u16(QEMUFile *f)
{
    uint16_t v;
    qemu_get_buffer(f, &v, 2);
    return GUINT16_FROM_LE(v);
}

uint32_t qemu_get_u32(QEMUFile *f)
{
    uint32_t v;
    qemu_get_buffer(f, &v, 4);
    return GUINT32_FROM_LE(v);
}

uint64_t qemu_get_u64(QEMUFile *f)
{
    uint64_t v;
    qemu_get_buffer(f, &v, 8);
    return GUINT64_FROM_LE(v);
}

int64_t qemu_file_offset(QEMUFile *f)
{
    off_t cur = lseek(f->fd, 0, SEEK_CUR);
    if (cur < 0) {
        return -errno;
    }
    return f->writable ? cur + (int64_t)f->len : cur - (int64_t)(f->len - f->pos);
}

int qemu_file_seek(QEMUFile *f, int64_t off)
{
    qemu_fflush(f);
    if (f->error) {
        return f->error;
    }
    if (lseek(f->fd, off, SEEK_SET) < 0) {
        qemu_file_set_error(f, -errno);
        return f->error;
    }
    if (!f->writable) {
        f->pos = f->len = 0;
    }
    return 0;
}

int qemu_file_close(QEMUFile *f)
{
    qemu_fflush(f);
    int err = f->error;
    tls_session_unref(f->tls);
    if (f->own) {
        channel_close(f->fd);
    }
    if (f->out) {
        g_byte_array_unref(f->out);     /* a memory writer not finished */
    }
    g_free(f->buf);
    g_free(f);
    return err;
}
