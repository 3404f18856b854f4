/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The source's RAM saver in postcopy: discards at the switchover, the
 * queue of requested pages, and the background push.  The contract and the
 * thread rules are in include/migration/ram.h.
 */
#include "migration/ram.h"

#include "migration/migration.h"
#include "migration/qemu-file.h"
#include "migration/stream.h"
#include "migration/working-set.h"
#include "qemu/bitmap.h"

/* Background run: 128 KiB, so a queued request waits at most one. */
#define BG_RUN          32

typedef struct PageRequest {
    uint64_t first, n;
} PageRequest;

/* A host page with one dirty 4 KiB page goes again whole. */
static void dirty_whole_host_pages(RAMSaver *r)
{
    uint64_t hp = r->hpages;
    if (hp == 1) {
        return;
    }
    for (uint64_t p = find_first_bit(r->dirty, r->npages); p < r->npages;
         p = find_next_bit(r->dirty, r->npages, p + 1)) {
        uint64_t first = p - p % hp;
        bitmap_set(r->dirty, first, hp);
        p = first + hp - 1;
    }
}

uint64_t ram_postcopy_discard(RAMSaver *r)
{
    uint64_t named = 0;
    uint64_t hp = r->hpages;
    dirty_whole_host_pages(r);
    /*
     * Runs of pages both sent and dirty: the destination drops them.  A
     * run takes in whole host pages: it goes on through a dirty host
     * page's sub-pages not sent.  Searched a word at a time: a switch
     * right after `migrate` has a million dirty pages, none of them sent.
     */
    for (uint64_t p = find_next_and_bit(r->dirty, r->sent, r->npages, 0);
         p < r->npages;
         p = find_next_and_bit(r->dirty, r->sent, r->npages, p)) {
        uint64_t first = p - p % hp, end = p;
        for (;;) {
            end = find_next_zero_and_bit(r->dirty, r->sent, r->npages, end);
            if (end >= r->npages || end % hp == 0 || !test_bit(end, r->dirty)) {
                break;
            }
            end++;
        }
        end = MIN((end + hp - 1) / hp * hp, r->npages);
        qemu_put_byte(r->f, REC_POSTCOPY_DISCARD);
        qemu_put_u64(r->f, first * TARGET_PAGE_SIZE);
        qemu_put_u64(r->f, end - first);
        /* Missing there now: a later discard need not name them again. */
        bitmap_clear(r->sent, first, end - first);
        named += end - first;
        p = end;
    }
    return named;
}

/* Claim one host page: whoever clears its first bit owns it. */
static bool claim(RAMSaver *r, uint64_t p)
{
    if (!test_and_clear_bit_atomic(p, r->dirty)) {
        return false;
    }
    if (r->hpages > 1) {
        bitmap_test_and_clear_atomic(r->dirty, p, r->hpages);
    }
    return true;
}

/*
 * Claim and send the host pages of [first, first + n) still dirty, in
 * runs; returns the bytes written.  Never sleeps: the caller keeps the
 * push within max-postcopy-bandwidth (requests are never held back).
 */
static uint64_t serve(RAMSaver *r, QEMUFile *f, uint64_t first, uint64_t n)
{
    uint64_t bytes = 0;
    uint64_t hp = r->hpages;
    uint64_t end = MIN(first + n, r->npages);
    uint64_t p = first - first % hp;

    while (p < end) {
        if (!claim(r, p)) {
            p += hp;
            continue;
        }
        uint64_t run = p + hp;
        while (run < end && run - p < STREAM_MAX_RUN && claim(r, run)) {
            run += hp;
        }
        bytes += ram_send_pages(r, f, p, run - p, false);
        __atomic_fetch_sub(&r->stats->remaining_pages, run - p,
                           __ATOMIC_RELAXED);
        p = run;
    }
    return bytes;
}

bool ram_postcopy_request(RAMSaver *r, uint64_t first, uint64_t n)
{
    __atomic_fetch_add(&r->stats->postcopy_requests, 1, __ATOMIC_RELAXED);
    if (r->preempt) {
        g_mutex_lock(&r->preempt_lock);
        serve(r, r->preempt, first, n);
        qemu_fflush(r->preempt);
        bool ok = !qemu_file_error(r->preempt);
        g_mutex_unlock(&r->preempt_lock);
        __atomic_store_n(&r->seek, first + n + 1, __ATOMIC_RELAXED);
        return ok;
    }
    PageRequest *q = g_new(PageRequest, 1);
    q->first = first;
    q->n = n;
    g_mutex_lock(&r->req_lock);
    g_queue_push_tail(&r->requests, q);
    g_cond_signal(&r->req_cond);
    g_mutex_unlock(&r->req_lock);
    return true;
}

void ram_postcopy_end_preempt(RAMSaver *r)
{
    if (!r->preempt) {
        return;
    }
    g_mutex_lock(&r->preempt_lock);
    qemu_put_byte(r->preempt, REC_EOF);
    qemu_fflush(r->preempt);
    g_mutex_unlock(&r->preempt_lock);
}

void ram_postcopy_wake(RAMSaver *r)
{
    g_mutex_lock(&r->req_lock);
    g_cond_broadcast(&r->req_cond);
    g_mutex_unlock(&r->req_lock);
}

void ram_postcopy_acked(RAMSaver *r, uint32_t id)
{
    g_mutex_lock(&r->req_lock);
    __atomic_store_n(&r->acked_id, id, __ATOMIC_RELEASE);
    g_cond_broadcast(&r->req_cond);
    g_mutex_unlock(&r->req_lock);
}

uint64_t ram_push_marked_at(uint64_t pos, uint32_t id)
{
    uint64_t cur = pos >> 12;
    return (cur - ((cur - (id & 0x3fffffff)) & 0x3fffffff)) << 12;
}

/* Whether the push may send more: at most push_window bytes written past
 * the last mark answered (ram.h). */
static bool window_open(RAMSaver *r)
{
    if (!r->push_window) {
        return true;
    }
    uint64_t pos = qemu_file_transferred(r->f);
    uint32_t id = __atomic_load_n(&r->acked_id, __ATOMIC_ACQUIRE);
    return pos - ram_push_marked_at(pos, id) <= r->push_window;
}

/* Mark the stream every quarter window (ram.h), or now with @now. */
static void mark(RAMSaver *r, bool now)
{
    uint64_t pos = qemu_file_transferred(r->f);
    if (r->push_window && pos > r->mark_pos &&
        (now || pos - r->mark_pos >= MAX(r->push_window / 4, PUSH_MARK_MIN))) {
        qemu_put_byte(r->f, REC_PING);
        qemu_put_u32(r->f, PUSH_MARK_ID(pos));
        r->mark_pos = pos;
    }
}

/*
 * The window is shut: mark where the push is (its answer opens the
 * window whatever its size) and sleep until the destination answers a
 * mark, a request comes, or 100 ms pass (to look at cancel).
 */
static void wait_window(RAMSaver *r)
{
    mark(r, true);
    qemu_fflush(r->f);
    g_mutex_lock(&r->req_lock);
    if (g_queue_is_empty(&r->requests) && !window_open(r)) {
        g_cond_wait_until(&r->req_cond, &r->req_lock,
                          g_get_monotonic_time() + 100000);
    }
    g_mutex_unlock(&r->req_lock);
}

static PageRequest *pop(RAMSaver *r)
{
    g_mutex_lock(&r->req_lock);
    PageRequest *q = g_queue_pop_head(&r->requests);
    g_mutex_unlock(&r->req_lock);
    return q;
}

uint64_t ram_postcopy_rebuild(RAMSaver *r, const unsigned long *in_place)
{
    size_t words = (r->npages + 8 * sizeof(long) - 1) / (8 * sizeof(long));
    for (size_t w = 0; w < words; w++) {
        r->dirty[w] = ~in_place[w];
    }
    if (r->npages % (8 * sizeof(long))) {
        r->dirty[words - 1] &= (1UL << (r->npages % (8 * sizeof(long)))) - 1;
    }
    /* A host page missing any 4 KiB page there goes again whole. */
    dirty_whole_host_pages(r);
    PageRequest *q;
    while ((q = pop(r))) {
        g_free(q);
    }
    __atomic_store_n(&r->rp_ended, 0, __ATOMIC_RELEASE);
    r->last = 0;
    __atomic_store_n(&r->seek, 0, __ATOMIC_RELAXED);
    uint64_t left = bitmap_count_one(r->dirty, r->npages);
    __atomic_store_n(&r->stats->remaining_pages, left, __ATOMIC_RELAXED);
    return left;
}

/*
 * How far behind its schedule the push may be and still make the time
 * up, sending back to back.  Without it, every wake-up that came late
 * (a niced thread on busy CPUs) was time lost for good, and the push
 * fell well short of max-postcopy-bandwidth (docs/benchmarks.md,
 * "Switching to postcopy on its own").  Making up is bounded by this
 * long's worth, and the socket's backlog bound (PUSH_BACKLOG) still
 * keeps it from queueing ahead of requested pages.
 */
#define PUSH_CATCHUP_US     20000

int64_t ram_push_pace(int64_t now_us, int64_t next_us, uint64_t bytes,
                      uint64_t limit)
{
    return MAX(now_us - PUSH_CATCHUP_US, next_us) +
           (int64_t)(bytes * G_USEC_PER_SEC / limit);
}

/*
 * Sleep until a request comes or @us pass (at most 100 ms, to look at
 * cancel): demand only, or the push has used its bandwidth share.
 */
static void wait_request(RAMSaver *r, int64_t us)
{
    g_mutex_lock(&r->req_lock);
    if (g_queue_is_empty(&r->requests)) {
        g_cond_wait_until(&r->req_cond, &r->req_lock,
                          g_get_monotonic_time() + MIN(us, 100000));
    }
    g_mutex_unlock(&r->req_lock);
}

/*
 * x-postcopy-working-set: one run's worth of the pages a fault walk or
 * the order names, paced as the address-order push is.  False when both
 * are spent: the push goes on in address order.
 */
static bool push_working_set(RAMSaver *r, int64_t now, uint64_t limit)
{
    WsRange rg[BG_RUN];
    size_t k = working_set_next(r->ws, r->dirty, rg,
                                MAX(1, BG_RUN / r->hpages));
    if (!k) {
        return false;
    }
    uint64_t bytes = 0;
    for (size_t i = 0; i < k; i++) {
        bytes += serve(r, r->f, rg[i].first, rg[i].n);
    }
    __atomic_store_n(&r->stats->ws_hot_pushed, r->ws->hot_pushed,
                     __ATOMIC_RELAXED);
    __atomic_store_n(&r->stats->ws_near_pushed, r->ws->near_pushed,
                     __ATOMIC_RELAXED);
    if (limit) {
        r->push_next_us = ram_push_pace(now, r->push_next_us, bytes, limit);
    }
    return true;
}

bool ram_postcopy_send(RAMSaver *r, bool background)
{
    /* The destination has loaded about everything before the push (the
     * switch's drain rounds, or a resume's handshake): the window opens
     * here. */
    r->mark_pos = qemu_file_transferred(r->f);
    ram_postcopy_acked(r, PUSH_MARK_ID(r->mark_pos));
    for (;;) {
        if (__atomic_load_n(r->cancel, __ATOMIC_RELAXED) ||
            __atomic_load_n(&r->rp_ended, __ATOMIC_ACQUIRE) ||
            qemu_file_error(r->f)) {
            return false;
        }
        PageRequest *q;
        bool served = false;
        while ((q = pop(r))) {
            serve(r, r->f, q->first, q->n);
            /* Locality: the guest will likely touch what follows. */
            r->last = q->first + q->n;
            if (r->ws) {
                working_set_fault(r->ws, q->first, q->n);
            }
            g_free(q);
            served = true;
        }
        if (served) {
            mark(r, false);
            qemu_fflush(r->f);
        }
        uint64_t seek = __atomic_exchange_n(&r->seek, 0, __ATOMIC_RELAXED);
        if (seek) {
            r->last = seek - 1;     /* locality, as above */
            if (r->ws) {            /* the last request, about */
                uint64_t n = MIN(r->hpages, r->last);
                working_set_fault(r->ws, r->last - n, n);
            }
        }
        uint64_t p = find_next_bit(r->dirty, r->npages,
                                   r->last < r->npages ? r->last : 0);
        if (p >= r->npages) {
            p = find_first_bit(r->dirty, r->npages);
        }
        if (p >= r->npages) {
            return true;        /* every page is sent */
        }
        if (!background) {
            wait_request(r, 100000);
            continue;
        }
        if (!window_open(r)) {
            wait_window(r);
            continue;
        }
        int64_t now = g_get_monotonic_time();
        uint64_t limit = ram_rate_limit(r);
        if (limit && now < r->push_next_us) {
            wait_request(r, r->push_next_us - now);
            continue;
        }
        if (r->ws && push_working_set(r, now, limit)) {
            mark(r, false);
            continue;
        }
        p -= p % r->hpages;
        uint64_t bytes = serve(r, r->f, p, MAX(BG_RUN, r->hpages));
        if (limit) {
            /*
             * Paced run by run, not in 100 ms bursts: a burst sits in the
             * stream ahead of the next requested page (tens of ms here).
             */
            r->push_next_us = ram_push_pace(now, r->push_next_us, bytes, limit);
        }
        r->last = p + MAX(BG_RUN, r->hpages);
        mark(r, false);
    }
}
