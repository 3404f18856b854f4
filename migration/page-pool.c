/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Pages backed ahead of need; the contract is in include/migration/page-pool.h. */
#include "migration/page-pool.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <gio/gio.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define SLOT_SIZE   4096
/* The filler backs at most this many slots a call: one madvise, 2 MiB. */
#define FILL_RUN    512

/* Slots emptied before the filler is woken (one eventfd write per run,
 * not per page), smaller for a small pool. */
static uint64_t wake_at(const PagePool *p)
{
    return MAX(1, MIN(FILL_RUN, p->nslots / 4));
}

/* Back [@first, @first + @n): populate, or where the kernel cannot
 * (before 5.14), touch each page. */
static void back(PagePool *p, uint64_t first, uint64_t n)
{
    uint8_t *start = p->base + first * SLOT_SIZE;
    if (madvise(start, n * SLOT_SIZE, MADV_POPULATE_WRITE) == 0) {
        return;
    }
    for (uint64_t i = 0; i < n; i++) {
        ((volatile uint8_t *)start)[i * SLOT_SIZE] = 0;
    }
}

/* Under lock: claim the next run of empty slots for backing; 0 if none. */
static uint64_t next_empty(PagePool *p, uint64_t *first)
{
    if (!p->empty) {
        return 0;
    }
    uint64_t s = p->fill;
    for (uint64_t seen = 0; p->state[s] != PAGE_SLOT_EMPTY; seen++) {
        g_assert(seen < p->nslots);     /* empty counts one at least */
        s = (s + 1) % p->nslots;
    }
    uint64_t n = 0;
    while (n < FILL_RUN && s + n < p->nslots &&
           p->state[s + n] == PAGE_SLOT_EMPTY) {
        p->state[s + n] = PAGE_SLOT_BACKING;
        n++;
    }
    p->empty -= n;
    *first = s;
    return n;
}

static gpointer filler(gpointer opaque)
{
    PagePool *p = opaque;
    struct pollfd pfd = { .fd = p->wake_fd, .events = POLLIN };
    while (!__atomic_load_n(&p->quit, __ATOMIC_ACQUIRE)) {
        uint64_t first = 0;
        g_mutex_lock(&p->lock);
        uint64_t n = next_empty(p, &first);
        /* Set under the lock that page_pool_done reads it under: a slot
         * emptied after this look wakes the poll below. */
        __atomic_store_n(&p->idle, !n, __ATOMIC_RELAXED);
        g_mutex_unlock(&p->lock);
        if (!n) {
            if (poll(&pfd, 1, -1) > 0) {
                uint64_t v;
                if (read(p->wake_fd, &v, sizeof(v)) < 0) {
                    /* EAGAIN: nothing to take; the flags are what count. */
                }
            }
            continue;
        }
        back(p, first, n);
        g_mutex_lock(&p->lock);
        for (uint64_t i = 0; i < n; i++) {
            p->state[first + i] = PAGE_SLOT_READY;
        }
        p->ready += n;
        g_mutex_unlock(&p->lock);
        p->fill = (first + n) % p->nslots;
        __atomic_fetch_add(&p->backed, n, __ATOMIC_RELAXED);
    }
    return NULL;
}

bool page_pool_init(PagePool *p, uint64_t bytes, GError **errp)
{
    memset(p, 0, sizeof(*p));
    p->wake_fd = -1;
    p->nslots = MAX(1, bytes / SLOT_SIZE);
    void *base = mmap(NULL, p->nslots * SLOT_SIZE, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) {
        g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(errno),
                    "x-postcopy-page-pool: mapping %" G_GUINT64_FORMAT
                    " MiB: %s", (p->nslots * SLOT_SIZE) >> 20, g_strerror(errno));
        goto fail;
    }
    p->base = base;
    /* A page moves alone: a transparent huge page would be split first. */
    madvise(p->base, p->nslots * SLOT_SIZE, MADV_NOHUGEPAGE);
    p->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (p->wake_fd < 0) {
        g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(errno),
                    "x-postcopy-page-pool: eventfd: %s", g_strerror(errno));
        goto fail_unmap;
    }
    g_mutex_init(&p->lock);
    p->state = g_malloc0(p->nslots);       /* PAGE_SLOT_EMPTY */
    p->empty = p->nslots;
    p->thread = g_thread_new("mig/dst/pool", filler, p);
    return true;

fail_unmap:
    munmap(p->base, p->nslots * SLOT_SIZE);
    p->base = NULL;
fail:
    p->nslots = 0;              /* none: query-migrate shows no pool */
    return false;
}

void page_pool_cleanup(PagePool *p)
{
    if (!p->base) {
        return;
    }
    __atomic_store_n(&p->quit, 1, __ATOMIC_RELEASE);
    uint64_t one = 1;
    if (write(p->wake_fd, &one, sizeof(one)) < 0) {
        /* It cannot overflow; the quit flag is what matters. */
    }
    g_thread_join(p->thread);
    p->thread = NULL;
    close(p->wake_fd);
    p->wake_fd = -1;
    g_mutex_clear(&p->lock);
    g_clear_pointer(&p->state, g_free);
    munmap(p->base, p->nslots * SLOT_SIZE);
    p->base = NULL;             /* stopped; nslots and the counts stay */
}

uint8_t *page_pool_take(PagePool *p, uint64_t n, bool urgent, uint64_t *slot,
                        uint64_t *got)
{
    g_mutex_lock(&p->lock);
    uint64_t s = p->head, k = 0;
    uint64_t keep = urgent ? 0 : p->nslots / 2;
    while (k < n && s + k < p->nslots && p->ready > keep &&
           p->state[s + k] == PAGE_SLOT_READY) {
        p->state[s + k] = PAGE_SLOT_TAKEN;
        p->ready--;
        k++;
    }
    if (k) {
        p->head = (s + k) % p->nslots;
    }
    g_mutex_unlock(&p->lock);
    if (!k) {
        __atomic_fetch_add(&p->missed, n, __ATOMIC_RELAXED);
        return NULL;
    }
    *slot = s;
    *got = k;
    return p->base + s * SLOT_SIZE;
}

void page_pool_done(PagePool *p, uint64_t slot, uint64_t n)
{
    bool wake = false;
    g_mutex_lock(&p->lock);
    for (uint64_t i = 0; i < n; i++) {
        g_assert(p->state[slot + i] == PAGE_SLOT_TAKEN);
        p->state[slot + i] = PAGE_SLOT_EMPTY;
    }
    p->empty += n;
    if (__atomic_load_n(&p->idle, __ATOMIC_RELAXED) && p->empty >= wake_at(p)) {
        __atomic_store_n(&p->idle, 0, __ATOMIC_RELAXED);
        wake = true;
    }
    g_mutex_unlock(&p->lock);
    if (wake) {
        uint64_t one = 1;
        if (write(p->wake_fd, &one, sizeof(one)) < 0) {
            /* It cannot overflow. */
        }
    }
}
