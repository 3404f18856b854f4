/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The source's RAM saver; the contract is in include/migration/ram.h. */
#include "migration/ram.h"

#include "migration/mapped-ram.h"
#include "migration/migration.h"
#include "migration/qemu-file.h"
#include "migration/stream.h"
#include "migration/working-set.h"
#include "qemu/bitmap.h"
#include "qemu/pagemap.h"

#include <string.h>
#include <unistd.h>

#define MAX_RUN         256     /* pages in one RAM_PAGES record: 1 MiB */
#define PM_BATCH        256     /* pagemap entries read at once: 2 KiB */

void ram_saver_init(RAMSaver *r, RAMBlock *rb, KVMState *kvm, QEMUFile *f,
                    MigrationStats *stats, int *cancel)
{
    memset(r, 0, sizeof(*r));
    r->rb = rb;
    r->kvm = kvm;
    r->f = f;
    r->stats = stats;
    r->cancel = cancel;
    r->npages = rb->size / TARGET_PAGE_SIZE;
    r->hpages = rb->page_size / TARGET_PAGE_SIZE;
    r->dirty = bitmap_new(r->npages);
    r->sent = bitmap_new(r->npages);
    g_mutex_init(&r->req_lock);
    g_mutex_init(&r->preempt_lock);
    g_cond_init(&r->req_cond);
    g_queue_init(&r->requests);
    bitmap_set(r->dirty, 0, r->npages);     /* the first pass sends all */
    /* KVM's log starts all set (INITIALLY_SET) or empty: clear either way. */
    uint64_t chunks = ((r->npages + RAM_CLEAR_CHUNK_PAGES - 1) / RAM_CLEAR_CHUNK_PAGES);
    r->clear_pending = bitmap_new(chunks);
    bitmap_set(r->clear_pending, 0, chunks);
    /*
     * Private anonymous RAM: pages the guest never wrote have no frame,
     * and pagemap says so without the read faults that looking at them
     * would cost (an idle guest's first pass is mostly such pages).
     */
    r->pagemap_fd = -1;
    if (rb->fd < 0 && !rb->shared && rb->page_size == TARGET_PAGE_SIZE) {
        int fd = pagemap_open();
        r->pagemap_fd = fd < 0 ? -1 : fd;
    }
}

bool ram_sync_dirty(RAMSaver *r, GError **errp)
{
    if (!kvm_sync_dirty_log(r->kvm, r->rb, r->dirty, errp)) {
        return false;
    }
    bitmap_set(r->clear_pending, 0,
               ((r->npages + RAM_CLEAR_CHUNK_PAGES - 1) / RAM_CLEAR_CHUNK_PAGES));
    /* QEMU's dirty-sync-count: every sync, the ones at a switch to
     * postcopy and at the stop too (libvirt's "Iteration"). */
    __atomic_fetch_add(&r->stats->dirty_sync_count, 1, __ATOMIC_RELAXED);
    return true;
}

/*
 * Before reading page @page to send it: clear KVM's log for its chunk,
 * so that the guest's next write to any page of it is logged again.
 */
static bool clear_chunk(RAMSaver *r, uint64_t page)
{
    uint64_t chunk = page / RAM_CLEAR_CHUNK_PAGES;
    if (!test_bit(chunk, r->clear_pending)) {
        return true;
    }
    clear_bit(chunk, r->clear_pending);
    uint64_t first = chunk * RAM_CLEAR_CHUNK_PAGES;
    uint64_t n = MIN(RAM_CLEAR_CHUNK_PAGES, r->npages - first);
    int ret = kvm_clear_dirty_log(r->kvm, r->rb, r->dirty, first, n);
    if (ret < 0) {
        qemu_file_set_error(r->f, ret);
        return false;
    }
    return true;
}

void ram_saver_cleanup(RAMSaver *r)
{
    bitmap_free(r->dirty);
    bitmap_free(r->clear_pending);
    bitmap_free(r->sent);
    r->dirty = r->clear_pending = r->sent = NULL;
    if (r->pagemap_fd >= 0) {
        close(r->pagemap_fd);
        r->pagemap_fd = -1;
    }
    g_queue_clear_full(&r->requests, g_free);
    g_mutex_clear(&r->req_lock);
    g_mutex_clear(&r->preempt_lock);
    g_cond_clear(&r->req_cond);
    if (r->ws) {
        working_set_cleanup(r->ws);
        g_free(r->ws);
        r->ws = NULL;
    }
}

uint64_t ram_dirty_count(const RAMSaver *r)
{
    return bitmap_count_one(r->dirty, r->npages);
}

static bool page_is_zero(const uint8_t *p);

bool ram_page_is_zero(const uint8_t *p)
{
    return page_is_zero(p);
}

static bool page_is_zero(const uint8_t *p)
{
    const uint64_t *w = (const uint64_t *)p;
    for (int i = 0; i < TARGET_PAGE_SIZE / 8; i += 4) {
        if (w[i] | w[i + 1] | w[i + 2] | w[i + 3]) {
            return false;
        }
    }
    return true;
}

uint64_t ram_rate_limit(const RAMSaver *r)
{
    return r->max_bandwidth ? __atomic_load_n(r->max_bandwidth, __ATOMIC_RELAXED)
                            : 0;
}

/* How long to wait before more fits in the 100 ms window (0: go on). */
static int64_t rate_wait_us(RAMSaver *r)
{
    uint64_t limit = ram_rate_limit(r);
    if (!limit) {
        return 0;
    }
    int64_t now = g_get_monotonic_time();
    int64_t left = r->window_start_us + 100000 - now;
    if (left <= 0) {
        r->window_start_us = now;
        r->window_bytes = 0;
        return 0;
    }
    return r->window_bytes >= limit / 10 ? left : 0;
}

/* Precopy: sleep out the rest of a 100 ms window once it has its share. */
static void rate_limit(RAMSaver *r, uint64_t bytes)
{
    r->window_bytes += bytes;
    int64_t left = rate_wait_us(r);
    if (left > 0) {
        g_usleep(left);
        rate_wait_us(r);
    }
}

void ram_rate_wait(RAMSaver *r, uint64_t bytes)
{
    rate_limit(r, bytes);
}

static void add(uint64_t *stat, uint64_t n)
{
    __atomic_fetch_add(stat, n, __ATOMIC_RELAXED);
}

/*
 * Whether page @i reads as zero.  @pm holds the pagemap entries of the
 * pages from @pm_first, or is NULL.  A page the guest writes after
 * this look is logged dirty (its chunk's log was cleared before), and
 * goes again in a later pass, as with a read of its contents.
 */
static bool zero_page(const RAMSaver *r, const uint64_t *pm,
                      uint64_t pm_first, uint64_t i)
{
    if (pm && pagemap_never_touched(pm[i - pm_first])) {
        return true;
    }
    return page_is_zero(r->rb->host + i * TARGET_PAGE_SIZE);
}

/*
 * Pages [first, first + n), all zero (@data NULL) or with their data at
 * @data: into their slots (mapped-ram) or as one record, and counted;
 * the bytes written, or 0 with @f's error set.
 */
static uint64_t send_run(RAMSaver *r, QEMUFile *f, uint64_t first, uint64_t n,
                         const uint8_t *data)
{
    add(data ? &r->stats->normal_pages : &r->stats->zero_pages, n);
    uint64_t sent;
    if (r->mapped) {
        if (!data) {
            mapped_ram_mark_zero(r->mapped, first, n);
            return 0;
        }
        int ret = mapped_ram_write_pages(r->mapped, first, n, data);
        if (ret < 0) {
            qemu_file_set_error(f, ret);
            return 0;
        }
        sent = n * TARGET_PAGE_SIZE;
    } else {
        uint64_t before = qemu_file_transferred(f);
        qemu_put_byte(f, data ? REC_RAM_PAGES : REC_RAM_ZERO);
        qemu_put_u64(f, first * TARGET_PAGE_SIZE);
        qemu_put_u32(f, n);
        if (data) {
            qemu_put_buffer(f, data, n * TARGET_PAGE_SIZE);
        }
        sent = qemu_file_transferred(f) - before;
    }
    add(&r->stats->transferred, sent);
    return sent;
}

uint64_t ram_send_pages(RAMSaver *r, QEMUFile *f, uint64_t first, uint64_t n,
                        bool limit)
{
    uint64_t total = 0;
    uint8_t *base = r->rb->host;
    uint64_t i = first, end = first + n;
    uint64_t pm_buf[PM_BATCH];

    while (i < end && !qemu_file_error(f)) {
        /* Runs end at a batch's end, where the pagemap entries do. */
        uint64_t batch_end = MIN(end, i + PM_BATCH);
        const uint64_t *pm = NULL;
        if (r->pagemap_fd >= 0 &&
            pagemap_read(r->pagemap_fd, base + i * TARGET_PAGE_SIZE, batch_end - i,
                         pm_buf) == 0) {
            pm = pm_buf;
        }
        uint64_t pm_first = i;
        while (i < batch_end) {
            /* A stretch of zero pages, or of pages with data. */
            bool zero = zero_page(r, pm, pm_first, i);
            uint64_t j = i + 1;
            while (j < batch_end && zero_page(r, pm, pm_first, j) == zero) {
                j++;
            }
            uint64_t sent = send_run(r, f, i, j - i,
                                     zero ? NULL : base + i * TARGET_PAGE_SIZE);
            total += sent;
            if (limit) {
                rate_limit(r, sent);
            }
            i = j;
        }
    }
    bitmap_set_atomic(r->sent, first, n);
    return total;
}

uint64_t ram_send_copy(RAMSaver *r, QEMUFile *f, uint64_t first, uint64_t n,
                       const uint8_t *data)
{
    uint64_t total = 0;
    for (uint64_t i = 0; i < n && !qemu_file_error(f);) {
        bool zero = page_is_zero(data + i * TARGET_PAGE_SIZE);
        uint64_t j = i + 1;
        while (j < n && j - i < STREAM_MAX_RUN &&
               page_is_zero(data + j * TARGET_PAGE_SIZE) == zero) {
            j++;
        }
        total += send_run(r, f, first + i, j - i,
                          zero ? NULL : data + i * TARGET_PAGE_SIZE);
        i = j;
    }
    bitmap_set_atomic(r->sent, first, n);
    return total;
}

bool ram_save_pass(RAMSaver *r)
{
    uint64_t page = find_first_bit(r->dirty, r->npages);
    /* During a pass only this thread touches the bitmap, and only to
     * clear bits: one count, then decrements, keeps remaining exact. */
    uint64_t left = ram_dirty_count(r);
    uint64_t open_end = 0;      /* end of the host page the last run ended in */

    while (page < r->npages) {
        if (__atomic_load_n(r->cancel, __ATOMIC_RELAXED) ||
            qemu_file_error(r->f)) {
            return false;
        }
        /*
         * Postcopy takes over from here, but not inside a host page
         * begun: the destination gathers a missing huge page whole
         * before placing it, and would wait for the rest forever.
         */
        if (r->stop_pass && __atomic_load_n(r->stop_pass, __ATOMIC_RELAXED) &&
            page >= open_end) {
            break;
        }
        if (r->deadline_us && page >= open_end &&
            g_get_monotonic_time() >= r->deadline_us) {
            r->deadline_hit = true;
            break;
        }
        if (!clear_chunk(r, page)) {
            return false;
        }
        /* A run stops at a chunk's end, whose log may still need clearing. */
        uint64_t chunk_end = (page / RAM_CLEAR_CHUNK_PAGES + 1) *
                             RAM_CLEAR_CHUNK_PAGES;
        uint64_t n = 0;
        while (page + n < chunk_end && page + n < r->npages && n < MAX_RUN &&
               test_and_clear_bit_atomic(page + n, r->dirty)) {
            n++;
        }
        ram_send_pages(r, r->f, page, n, true);
        open_end = (page + n + r->hpages - 1) / r->hpages * r->hpages;
        left -= n;
        __atomic_store_n(&r->stats->remaining_pages, left, __ATOMIC_RELAXED);
        page = find_next_bit(r->dirty, r->npages, page + n);
    }
    return !qemu_file_error(r->f);
}
