/* SPDX-License-Identifier: GPL-2.0-or-later */
/* mapped-ram's file layout; the contract is in include/migration/mapped-ram.h. */
#include "migration/mapped-ram.h"

#include <gio/gio.h>

#include "migration/qemu-file.h"
#include "migration/stream.h"
#include "system/ramblock.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ALIGN_UP(x, a)  (((x) + (a) - 1) / (a) * (a))

static uint64_t bitmap_bytes(uint64_t npages)
{
    return (npages + 63) / 64 * 8;
}

void mapped_ram_layout(MappedRam *m, uint64_t rec, uint64_t npages)
{
    m->npages = npages;
    m->bitmap_off = ALIGN_UP(rec + MAPPED_RAM_RECORD_LEN, TARGET_PAGE_SIZE);
    m->pages_off = ALIGN_UP(m->bitmap_off + bitmap_bytes(npages),
                            MAPPED_RAM_PAGES_ALIGN);
    m->end_off = m->pages_off + npages * TARGET_PAGE_SIZE;
}

bool mapped_ram_check(const MappedRam *m, uint64_t rec, uint64_t npages,
                      GError **errp)
{
    const char *why = NULL;
    if (m->bitmap_off < rec + MAPPED_RAM_RECORD_LEN) {
        why = "its bitmap overlaps the header";
    } else if (m->bitmap_off % TARGET_PAGE_SIZE ||
               m->pages_off % TARGET_PAGE_SIZE) {
        why = "its bitmap or pages are not aligned to 4 KiB";
    } else if (m->pages_off < m->bitmap_off ||
               m->pages_off - m->bitmap_off < bitmap_bytes(npages)) {
        why = "its pages overlap its bitmap";
    } else if (m->pages_off > UINT64_MAX - npages * TARGET_PAGE_SIZE ||
               m->end_off != m->pages_off + npages * TARGET_PAGE_SIZE) {
        why = "its device state does not follow its pages";
    }
    if (why) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "mapped-ram: the file's layout is wrong: %s (bitmap at "
                    "%" PRIu64 ", pages at %" PRIu64 ", end at %" PRIu64 ")",
                    why, m->bitmap_off, m->pages_off, m->end_off);
        return false;
    }
    return true;
}

static int pwrite_all(int fd, const uint8_t *p, size_t len, int64_t off)
{
    while (len) {
        ssize_t n = pwrite(fd, p, len, off);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return n < 0 ? -errno : -EIO;
        }
        p += n;
        len -= n;
        off += n;
    }
    return 0;
}

static int pread_all(int fd, uint8_t *p, size_t len, int64_t off)
{
    while (len) {
        ssize_t n = pread(fd, p, len, off);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return n < 0 ? -errno : -EIO;       /* 0: the file ends */
        }
        p += n;
        len -= n;
        off += n;
    }
    return 0;
}

static bool io_error(GError **errp, int err, const char *what)
{
    g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(-err),
                "mapped-ram: %s: %s", what, g_strerror(-err));
    return false;
}

bool mapped_ram_writer_start(MappedRam *m, QEMUFile *f, uint64_t npages,
                             bool direct, GError **errp)
{
    memset(m, 0, sizeof(*m));
    m->fd = m->fd_pages = qemu_file_fd(f);
    int64_t at = qemu_file_offset(f);
    if (at < 0) {
        return io_error(errp, (int)at, "the migration file cannot seek");
    }
    m->base = at - (int64_t)qemu_file_transferred(f);
    uint64_t rec = qemu_file_transferred(f);
    mapped_ram_layout(m, rec, npages);
    if (direct) {
        if ((m->base + m->pages_off) % TARGET_PAGE_SIZE) {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                        "direct-io needs the file: offset aligned to 4 KiB");
            return false;
        }
        g_autofree char *self = g_strdup_printf("/proc/self/fd/%d", m->fd);
        m->fd_pages = open(self, O_WRONLY | O_DIRECT | O_CLOEXEC);
        if (m->fd_pages < 0) {
            m->fd_pages = m->fd;
            return io_error(errp, -errno, "opening the file with O_DIRECT "
                            "(direct-io)");
        }
    }
    m->present = bitmap_new(npages);
    qemu_put_byte(f, REC_MAPPED_RAM);
    qemu_put_u64(f, m->bitmap_off);
    qemu_put_u64(f, m->pages_off);
    qemu_put_u64(f, m->end_off);
    qemu_fflush(f);
    if (qemu_file_error(f)) {
        return io_error(errp, qemu_file_error(f), "writing its header");
    }
    return true;
}

int mapped_ram_write_pages(MappedRam *m, uint64_t first, uint64_t n,
                           const void *data)
{
    int ret = pwrite_all(m->fd_pages, data, n * TARGET_PAGE_SIZE,
                         m->base + m->pages_off + first * TARGET_PAGE_SIZE);
    if (ret == 0) {
        bitmap_set_atomic(m->present, first, n);
    }
    return ret;
}

void mapped_ram_mark_zero(MappedRam *m, uint64_t first, uint64_t n)
{
    bitmap_test_and_clear_atomic(m->present, first, n);
}

bool mapped_ram_writer_finish(MappedRam *m, QEMUFile *f, GError **errp)
{
    size_t words = bitmap_bytes(m->npages) / 8;
    g_autofree uint64_t *le = g_new0(uint64_t, words);
    for (size_t w = 0; w < words; w++) {
        uint64_t v = 0;
        for (unsigned b = 0; b < 64 && w * 64 + b < m->npages; b++) {
            v |= (uint64_t)test_bit(w * 64 + b, m->present) << b;
        }
        le[w] = GUINT64_TO_LE(v);
    }
    int ret = pwrite_all(m->fd, (const uint8_t *)le, words * 8,
                         m->base + m->bitmap_off);
    if (ret < 0) {
        return io_error(errp, ret, "writing its bitmap");
    }
    ret = qemu_file_seek(f, m->base + m->end_off);
    if (ret < 0) {
        return io_error(errp, ret, "seeking to its device state");
    }
    return true;
}

bool mapped_ram_reader_open(MappedRam *m, QEMUFile *f, uint64_t npages,
                            GError **errp)
{
    memset(m, 0, sizeof(*m));
    m->fd = m->fd_pages = qemu_file_fd(f);
    uint64_t rec = qemu_file_transferred(f) - 1;    /* its type is read */
    int64_t at = qemu_file_offset(f);
    if (at < 0) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                    "mapped-ram: the stream is not a file (%s): use file:",
                    g_strerror((int)-at));
        return false;
    }
    m->base = at - (int64_t)qemu_file_transferred(f);
    m->bitmap_off = qemu_get_u64(f);
    m->pages_off = qemu_get_u64(f);
    m->end_off = qemu_get_u64(f);
    m->npages = npages;
    if (qemu_file_error(f)) {
        return io_error(errp, qemu_file_error(f), "reading its header");
    }
    if (!mapped_ram_check(m, rec, npages, errp)) {
        return false;
    }
    struct stat st;
    if (fstat(m->fd, &st) < 0) {
        return io_error(errp, -errno, "fstat");
    }
    /* The device records and EOF follow the pages: at least a byte. */
    if ((uint64_t)st.st_size <= m->base + m->end_off) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "mapped-ram: the file is truncated: %" PRIu64 " bytes, "
                    "but its pages end at %" PRIu64 " and its device state "
                    "follows", (uint64_t)st.st_size, m->base + m->end_off);
        return false;
    }
    size_t words = bitmap_bytes(npages) / 8;
    g_autofree uint64_t *le = g_new(uint64_t, words);
    int ret = pread_all(m->fd, (uint8_t *)le, words * 8,
                        m->base + m->bitmap_off);
    if (ret < 0) {
        return io_error(errp, ret, "reading its bitmap");
    }
    m->present = bitmap_new(npages);
    for (size_t w = 0; w < words; w++) {
        uint64_t v = GUINT64_FROM_LE(le[w]);
        for (unsigned b = 0; b < 64; b++) {
            if (!(v >> b & 1)) {
                continue;
            }
            if (w * 64 + b >= npages) {
                g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                            "mapped-ram: the bitmap names page %" PRIu64
                            ", past the block's %" PRIu64, w * 64 + b, npages);
                return false;
            }
            set_bit(w * 64 + b, m->present);
        }
    }
    ret = qemu_file_seek(f, m->base + m->end_off);
    if (ret < 0) {
        return io_error(errp, ret, "seeking to its device state");
    }
    return true;
}

int mapped_ram_read_pages(const MappedRam *m, uint64_t first, uint64_t n,
                          void *buf)
{
    return pread_all(m->fd_pages, buf, n * TARGET_PAGE_SIZE,
                     m->base + m->pages_off + first * TARGET_PAGE_SIZE);
}

void mapped_ram_cleanup(MappedRam *m)
{
    if (m->fd_pages >= 0 && m->fd_pages != m->fd) {
        close(m->fd_pages);
    }
    m->fd_pages = m->fd = -1;
    g_clear_pointer(&m->present, bitmap_free);
}

/* ---- io_uring ---------------------------------------------------------------------- */

typedef struct RingOp {
    bool write;
    uint64_t first, n;
    uint8_t *buf;
    void *tag;
} RingOp;

struct MappedRamRing {
    struct io_uring ring;
    MappedRam *m;
    unsigned depth, inflight;
};

MappedRamRing *mapped_ram_ring_new(MappedRam *m, unsigned depth, GError **errp)
{
    MappedRamRing *r = g_new0(MappedRamRing, 1);
    int ret = io_uring_queue_init(depth, &r->ring, 0);
    if (ret < 0) {
        g_free(r);
        io_error(errp, ret, "io_uring_queue_init");
        return NULL;
    }
    r->m = m;
    r->depth = depth;
    return r;
}

void mapped_ram_ring_free(MappedRamRing *r)
{
    if (!r) {
        return;
    }
    while (r->inflight) {
        void *tag;
        mapped_ram_ring_wait(r, &tag);
    }
    io_uring_queue_exit(&r->ring);
    g_free(r);
}

bool mapped_ram_ring_full(const MappedRamRing *r)
{
    return r->inflight >= r->depth;
}

unsigned mapped_ram_ring_inflight(const MappedRamRing *r)
{
    return r->inflight;
}

static int ring_queue(MappedRamRing *r, bool write, uint64_t first, uint64_t n,
                      void *buf, void *tag)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
    if (!sqe) {
        return -EBUSY;
    }
    RingOp *op = g_new(RingOp, 1);
    *op = (RingOp) { write, first, n, buf, tag };
    int64_t off = r->m->base + r->m->pages_off + first * TARGET_PAGE_SIZE;
    if (write) {
        io_uring_prep_write(sqe, r->m->fd_pages, buf, n * TARGET_PAGE_SIZE, off);
    } else {
        io_uring_prep_read(sqe, r->m->fd_pages, buf, n * TARGET_PAGE_SIZE, off);
    }
    io_uring_sqe_set_data(sqe, op);
    int ret = io_uring_submit(&r->ring);
    if (ret < 0) {
        g_free(op);
        return ret;
    }
    r->inflight++;
    return 0;
}

int mapped_ram_ring_read(MappedRamRing *r, uint64_t first, uint64_t n,
                         void *buf, void *tag)
{
    return ring_queue(r, false, first, n, buf, tag);
}

int mapped_ram_ring_write(MappedRamRing *r, uint64_t first, uint64_t n,
                          const void *buf, void *tag)
{
    return ring_queue(r, true, first, n, (void *)buf, tag);
}

int mapped_ram_ring_wait(MappedRamRing *r, void **tag)
{
    if (!r->inflight) {
        return -EAGAIN;
    }
    struct io_uring_cqe *cqe;
    int ret;
    do {
        ret = io_uring_wait_cqe(&r->ring, &cqe);
    } while (ret == -EINTR);
    if (ret < 0) {
        return ret;
    }
    RingOp *op = io_uring_cqe_get_data(cqe);
    int res = cqe->res;
    io_uring_cqe_seen(&r->ring, cqe);
    r->inflight--;
    *tag = op->tag;
    size_t len = op->n * TARGET_PAGE_SIZE;
    int64_t off = r->m->base + r->m->pages_off + op->first * TARGET_PAGE_SIZE;
    if (res >= 0 && (size_t)res < len) {
        /* Short: the rest the plain way (a read at the end: -EIO). */
        res = op->write ? pwrite_all(r->m->fd_pages, op->buf + res, len - res,
                                     off + res)
                        : pread_all(r->m->fd_pages, op->buf + res, len - res,
                                    off + res);
    } else if (res > 0) {
        res = 0;
    }
    if (res == 0 && op->write) {
        bitmap_set_atomic(r->m->present, op->first, op->n);
    }
    g_free(op);
    return res;
}
