/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * User mode of the test guest (CPL 3, IOPL 3): start the other CPUs,
 * then run the workload named on the command line.  Output lines are
 * documented in docs/test-guest.md; tests and benchmarks parse them.
 *
 * Every serial byte costs a VM exit (about 100 us on kvm_pvm), so the
 * guest prints little: one line per round or window.
 */
#include "guest.h"

#include <stdarg.h>

#define APIC_BASE       0xfee00000UL
#define APIC_ICR_LO     0x300
#define APIC_ICR_HI     0x310
#define ICR_INIT_ALL    0x000c4500      /* INIT, assert, all but self */
#define ICR_SIPI_ALL    0x000c4600      /* start-up, all but self */

#define EXIT_OK         0               /* QEMU exit status 1 */
#define EXIT_FAIL       1               /* QEMU exit status 3 */

/* ---- State shared between CPUs (user memory) ---------------------------- */

static volatile int print_lock;
static volatile int cpus_online = 1;    /* the BSP */
static volatile int go;                 /* set by the BSP: workload starts */
static int ncpus;
static uint64_t tsc_khz;

/* ---- Output ---------------------------------------------------------------- */

static void lock(volatile int *l)
{
    while (__atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE)) {
        cpu_relax();
    }
}

static void unlock(volatile int *l)
{
    __atomic_store_n(l, 0, __ATOMIC_RELEASE);
}

static void put_u64(char **p, uint64_t v, int base)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    while (n) {
        *(*p)++ = tmp[--n];
    }
}

/* A printf for %s, %d, %u, %lu, %x, %lx only; one line at a time. */
static void print(const char *fmt, ...)
{
    char buf[256], *p = buf, *end = buf + sizeof(buf) - 24;
    va_list ap;

    va_start(ap, fmt);
    for (; *fmt && p < end; fmt++) {
        if (*fmt != '%') {
            *p++ = *fmt;
            continue;
        }
        bool l = false;
        if (*++fmt == 'l') {
            l = true;
            fmt++;
        }
        switch (*fmt) {
        case 's': {
            const char *s = va_arg(ap, const char *);
            while (*s && p < end) {
                *p++ = *s++;
            }
            break;
        }
        case 'd': {
            int64_t v = l ? va_arg(ap, int64_t) : va_arg(ap, int);
            if (v < 0) {
                *p++ = '-';
                v = -v;
            }
            put_u64(&p, v, 10);
            break;
        }
        case 'u':
            put_u64(&p, l ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 10);
            break;
        case 'x':
            put_u64(&p, l ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 16);
            break;
        default:
            *p++ = *fmt;
        }
    }
    va_end(ap);
    lock(&print_lock);
    for (char *q = buf; q < p; q++) {
        outb(SERIAL_PORT, *q);
    }
    unlock(&print_lock);
}

/* Stop this CPU for good (HLT faults to kernel mode, which halts). */
static void __attribute__((noreturn)) halt_forever(void)
{
    for (;;) {
        __asm__ volatile("hlt");
    }
}

static void __attribute__((noreturn)) guest_exit(int code)
{
    outb(DEBUG_EXIT_PORT, code);
    halt_forever();     /* without an isa-debug-exit device */
}

/* ---- Command line ------------------------------------------------------------ */

static bool word_is(const char *w, const char *s)
{
    while (*s && *w == *s) {
        w++, s++;
    }
    return !*s && (*w == ' ' || *w == '=' || !*w);
}

/* Find "key=" as a word of the command line; return what follows, or NULL. */
static const char *param(const char *key)
{
    const char *c = boot_info.cmdline;
    while (*c) {
        while (*c == ' ') {
            c++;
        }
        if (word_is(c, key)) {
            const char *v = c;
            while (*v && *v != ' ' && *v != '=') {
                v++;
            }
            return *v == '=' ? v + 1 : v;
        }
        while (*c && *c != ' ') {
            c++;
        }
    }
    return NULL;
}

static uint64_t param_u64(const char *key, uint64_t def)
{
    const char *v = param(key);
    if (!v || *v < '0' || *v > '9') {
        return def;
    }
    uint64_t n = 0;
    while (*v >= '0' && *v <= '9') {
        n = n * 10 + (*v++ - '0');
    }
    return n;
}

/* The workload: the first plain word of the command line that names one. */
static const char *workload(void)
{
    static const char *const names[] = { "verify", "dirty", "latency", "skew",
                                         "idle" };
    const char *c = boot_info.cmdline;

    while (*c) {
        while (*c == ' ') {
            c++;
        }
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
            size_t n = 0;
            while (names[i][n]) {
                n++;
            }
            if (word_is(c, names[i]) && c[n] != '=') {
                return names[i];
            }
        }
        while (*c && *c != ' ') {
            c++;
        }
    }
    return "idle";
}

/* ---- Time ------------------------------------------------------------------- */

/*
 * TSC frequency: from the hypervisor leaf 0x40000010 or leaf 0x15 when
 * they are there, else measured against 10 ms of PIT channel 2.
 */
static const char *calibrate_tsc(void)
{
    uint32_t r[4];

    cpuid(0x40000000, 0, r);
    if (r[0] >= 0x40000010) {
        cpuid(0x40000010, 0, r);
        if (r[0]) {
            tsc_khz = r[0];
            return "cpuid";
        }
    }
    cpuid(0, 0, r);
    if (r[0] >= 0x15) {
        cpuid(0x15, 0, r);
        if (r[0] && r[1] && r[2]) {
            tsc_khz = (uint64_t)r[2] * r[1] / r[0] / 1000;
            return "cpuid";
        }
    }
    outb(0x61, (inb(0x61) & ~0x02) | 0x01);     /* gate on, speaker off */
    outb(0x43, 0xb0);                           /* ch 2, lo/hi, mode 0 */
    outb(0x42, 11932 & 0xff);                   /* 1193182 Hz / 100 */
    outb(0x42, 11932 >> 8);
    uint64_t t0 = rdtsc();
    while (!(inb(0x61) & 0x20)) {
        cpu_relax();
    }
    tsc_khz = (rdtsc() - t0) / 10;
    return "pit";
}

static void delay_us(uint64_t us)
{
    uint64_t end = rdtsc() + us * tsc_khz / 1000;
    while (rdtsc() < end) {
        cpu_relax();
    }
}

/* ---- Other CPUs ---------------------------------------------------------------- */

static void apic_write(uint32_t reg, uint32_t v)
{
    *(volatile uint32_t *)(APIC_BASE + reg) = v;
}

/*
 * Start every other CPU with one broadcast INIT-SIPI-SIPI.  Each AP takes
 * its own index in the trampoline.  Wait for "cpus=N" of them if given,
 * else until none has arrived for 100 ms.
 */
static void start_aps(void)
{
    uint64_t want = param_u64("cpus", 0);
    char *dst = (char *)AP_TRAMPOLINE;

    for (char *s = ap_trampoline; s < ap_trampoline_end; s++) {
        *dst++ = *s;
    }
    apic_write(APIC_ICR_HI, 0);
    apic_write(APIC_ICR_LO, ICR_INIT_ALL);
    delay_us(10000);
    for (int i = 0; i < 2; i++) {
        apic_write(APIC_ICR_LO, ICR_SIPI_ALL | (AP_TRAMPOLINE >> 12));
        delay_us(200);
    }
    uint64_t quiet = want ? 2000000 : 100000;   /* us */
    int seen = cpus_online;
    uint64_t last = rdtsc();
    while ((want == 0 || (uint64_t)cpus_online < want) &&
           rdtsc() - last < quiet * tsc_khz / 1000) {
        if (cpus_online != seen) {
            seen = cpus_online;
            last = rdtsc();
        }
        cpu_relax();
    }
    ncpus = cpus_online;
    if (want && (uint64_t)ncpus != want) {
        print("FAIL cpus=%d expected=%lu\n", ncpus, want);
        guest_exit(EXIT_FAIL);
    }
}

/* ---- Memory the workloads use ----------------------------------------------------- */

/* Usable pages: RAM from 1 MiB up, above the guest image. */
typedef struct Pages {
    RamRange r[MAX_RANGES];
    int n;
    uint64_t count;
} Pages;

static Pages pages;

static void pages_init(void)
{
    for (int i = 0; i < boot_info.nram; i++) {
        uint64_t s = boot_info.ram[i].start, e = boot_info.ram[i].end;
        if (s < boot_info.image_end) {
            s = boot_info.image_end;
        }
        if (e > s) {
            pages.r[pages.n++] = (RamRange) { s, e };
            pages.count += (e - s) / PAGE_SIZE;
        }
    }
}

/* The address of usable page @i (0 <= i < pages.count). */
static uint64_t *page_addr(uint64_t i)
{
    for (int k = 0; k < pages.n; k++) {
        uint64_t n = (pages.r[k].end - pages.r[k].start) / PAGE_SIZE;
        if (i < n) {
            return (uint64_t *)(pages.r[k].start + i * PAGE_SIZE);
        }
        i -= n;
    }
    return 0;
}

/* ---- verify ---------------------------------------------------------------------- */

/*
 * Word w of the page at physical frame pfn, generation g.  Any page
 * that arrives stale, from another page, or not at all fails the check.
 */
static inline uint64_t pattern(uint64_t pfn, uint64_t g, uint64_t w)
{
    return (pfn * 0x9e3779b97f4a7c15ULL) ^ (g * 0xc2b2ae3d27d4eb4fULL) ^ w;
}

/*
 * Pages inside the guest image that hold data in the file and that the
 * guest zeroes before its first round: a migration must bring them as
 * the zeros the guest left there, whatever a destination's loader put
 * into its RAM first (the image, when it is given -kernel too).
 */
#define IMAGE_ZEROED_PAGES 16
static uint8_t image_zeroed[IMAGE_ZEROED_PAGES * PAGE_SIZE]
    __attribute__((aligned(PAGE_SIZE))) = {
    [0 ... IMAGE_ZEROED_PAGES * PAGE_SIZE - 1] = 0x5a,
};

/* CPU 0, round 0: zero them; every later round: they still read zero. */
static void check_image_zeroed(uint64_t round)
{
    uint64_t *w = (uint64_t *)image_zeroed;
    for (uint64_t i = 0; i < sizeof(image_zeroed) / 8; i++) {
        if (round == 0) {
            w[i] = 0;
        } else if (w[i]) {
            print("FAIL zeroed page=%lu got=%lx\n",
                  ((uintptr_t)&w[i]) / PAGE_SIZE, w[i]);
            guest_exit(EXIT_FAIL);
        }
    }
}

/*
 * Each CPU owns the 2 MiB chunks of usable pages whose index modulo the
 * CPU count is its own (split=1: one contiguous part each).  Round r checks generation r - 1 in every page
 * it owns and writes generation r; round 0 only writes.
 */
/* rate=M over all CPUs: TSC cycles between two pages of one CPU (0: none). */
static uint64_t verify_pace(uint64_t rate)
{
    return rate ? tsc_khz * 1000 * ncpus / (rate * 256) : 0;
}

/*
 * rate=M: from round 1, at most M MiB/s over all CPUs (a ceiling, as in
 * dirty); round 0 fills memory as fast as it can.  phase=S rate2=M2:
 * from S seconds after round 1 began, M2 (0: as fast as it can), a
 * guest whose load changes during a migration.
 */
typedef struct Pace {
    uint64_t cycles, next, phase_at, rate2;
} Pace;

static void pace(Pace *p)
{
    if (p->phase_at && rdtsc() >= p->phase_at) {
        p->cycles = verify_pace(p->rate2);
        p->phase_at = 0;
    }
    if (!p->cycles) {
        return;
    }
    p->next += p->cycles;
    uint64_t now = rdtsc();
    if (now > p->next + 10 * tsc_khz) {
        p->next = now;          /* time not given (throttled) is not made up */
    }
    while (rdtsc() < p->next) {
        cpu_relax();
    }
}

static void __attribute__((noreturn)) run_verify(int cpu)
{
    uint64_t rounds = param_u64("rounds", 0);
    uint64_t corrupt = param_u64("corrupt", 0);     /* 1 + the round */
    uint64_t chunk = 512;
    if (param_u64("split", 0)) {
        /* split=1: CPU c owns the c-th contiguous part, whole 2 MiB
         * chunks (the kernel's demand_paging_test shape): each vCPU
         * faults in its own range of guest RAM. */
        chunk = ((pages.count + ncpus - 1) / ncpus + 511) / 512 * 512;
    }
    uint64_t phase = param_u64("phase", 0);
    /* sparse=S: a CPU owns only every S-th of its chunks, and its last
     * (so the top of RAM is written); the rest is never written, so
     * stays zero, and is not checked: a big guest's RAM spans every
     * address at a fraction of the writes. */
    uint64_t sparse = param_u64("sparse", 1);
    if (sparse == 0) {
        sparse = 1;
    }
    Pace pc = { 0 };

    for (uint64_t r = 0; rounds == 0 || r < rounds; r++) {
        uint64_t t0 = rdtsc();
        if (r == 1) {
            pc = (Pace) { verify_pace(param_u64("rate", 0)), t0,
                          phase ? t0 + phase * 1000 * tsc_khz : 0,
                          param_u64("rate2", 0) };
        }
        if (cpu == 0) {
            check_image_zeroed(r);
        }
        for (uint64_t c = cpu * chunk, j = 0; c < pages.count;
             c += ncpus * chunk, j++) {
            if (j % sparse && c + ncpus * chunk < pages.count) {
                continue;
            }
            uint64_t end = c + chunk < pages.count ? c + chunk : pages.count;
            for (uint64_t i = c; i < end; i++) {
                pace(&pc);
                uint64_t *p = page_addr(i);
                uint64_t pfn = (uintptr_t)p / PAGE_SIZE;
                for (uint64_t w = 0; w < PAGE_SIZE / 8; w++) {
                    if (r && p[w] != pattern(pfn, r - 1, w)) {
                        print("FAIL page=%lu expected=%lx got=%lx\n", pfn,
                              pattern(pfn, r - 1, w), p[w]);
                        guest_exit(EXIT_FAIL);
                    }
                    p[w] = pattern(pfn, r, w);
                }
            }
        }
        if (cpu == 0) {
            print("verify: round=%lu pages=%lu cpus=%d ms=%lu\n", r,
                  pages.count, ncpus, (rdtsc() - t0) / tsc_khz);
            /* Self-test of the check: spoil one word after round N. */
            if (corrupt == r + 1) {
                page_addr(0)[7] ^= 1;
            }
        }
    }
    if (cpu == 0) {
        print("verify: done\n");
        guest_exit(EXIT_OK);
    }
    halt_forever();
}

/* ---- dirty ----------------------------------------------------------------------- */

/* Dirty pages in order at rate=<MiB/s>, one write a page, paced per ms. */
static void __attribute__((noreturn)) run_dirty(void)
{
    uint64_t rate = param_u64("rate", 100);
    uint64_t per_ms_x1000 = rate * 256;     /* pages per ms, times 1000 */
    uint64_t credit = 0, next = 0, done = 0, sec = 0;
    uint64_t tick = tsc_khz, t = rdtsc(), report = t + 1000 * tsc_khz;

    /* fill=1: every page holds data first, as in a busy guest's RAM. */
    if (param_u64("fill", 0)) {
        for (uint64_t i = 0; i < pages.count; i++) {
            *page_addr(i) = i | 1;
        }
        t = rdtsc();
        report = t + 1000 * tsc_khz;
    }
    print("dirty: rate=%lu MiB/s pages=%lu\n", rate, pages.count);
    for (;;) {
        while (rdtsc() < t + tick) {
            cpu_relax();
        }
        t += tick;
        /* Time the CPU did not get (a throttled vCPU) is not made up:
         * the rate is a ceiling, as for a real workload. */
        if (rdtsc() > t + 10 * tick) {
            t = rdtsc();
        }
        credit += per_ms_x1000;
        for (; credit >= 1000; credit -= 1000) {
            *page_addr(next) += 1;
            next = next + 1 < pages.count ? next + 1 : 0;
            done++;
        }
        if (t >= report) {
            report += 1000 * tsc_khz;
            print("dirty: second=%lu pages=%lu\n", ++sec, done);
            done = 0;
        }
    }
}

/* ---- latency --------------------------------------------------------------------- */

/* Log-linear histogram: 8 sub-buckets per power of two of TSC cycles. */
#define SUB     8
static uint64_t hist[64 * SUB];

static int bucket(uint64_t v)
{
    if (v < SUB) {
        return v;
    }
    int e = 63 - __builtin_clzll(v);
    return (e - 2) * SUB + ((v >> (e - 3)) & (SUB - 1));
}

static uint64_t bucket_top(int b)
{
    if (b < SUB) {
        return b;
    }
    int e = b / SUB + 2;
    return ((uint64_t)(SUB + b % SUB + 1) << (e - 3)) - 1;
}

static uint64_t hist_quantile(uint64_t count, uint64_t num, uint64_t den)
{
    uint64_t want = count * num / den, seen = 0;
    for (int b = 0; b < 64 * SUB; b++) {
        seen += hist[b];
        if (seen > want) {
            return bucket_top(b);
        }
    }
    return 0;
}

/*
 * Stalls for a host to merge over many windows: 2 buckets per power of
 * two of cycles, from 2^10 cycles (well under a microsecond) up; faster
 * accesses are the window's count less these.  Bucket c holds
 * [2^e + h * 2^(e-1), ...) with e = c / 2, h = c % 2.
 */
#define STALL_MIN_LOG   10
static uint64_t stall[128];

static void print_stalls(const char *name, uint64_t w)
{
    char line[200], *p = line;
    for (int c = 2 * STALL_MIN_LOG; c < 128; c++) {
        if (!stall[c]) {
            continue;
        }
        if (p - line > 160) {
            *p = 0;
            print("%s: stalls window=%lu%s\n", name, w, line);
            p = line;
        }
        *p++ = ' ';
        put_u64(&p, c, 10);
        *p++ = ':';
        put_u64(&p, stall[c], 10);
        stall[c] = 0;
    }
    *p = 0;
    print("%s: stalls window=%lu%s\n", name, w, line);
}

/* One access that took @d cycles, into the window's histogram. */
static void timed(uint64_t d)
{
    hist[bucket(d)]++;
    if (d >> STALL_MIN_LOG) {
        int e = 63 - __builtin_clzll(d);
        stall[2 * e + ((d >> (e - 1)) & 1)]++;
    }
}

/* The window's two lines (docs/test-guest.md); then a new window. */
static void end_window(const char *name, uint64_t w, uint64_t n, uint64_t max)
{
    print("%s: window=%lu count=%lu p50=%lu p99=%lu p999=%lu max=%lu\n",
          name, w, n, hist_quantile(n, 50, 100), hist_quantile(n, 99, 100),
          hist_quantile(n, 999, 1000), max);
    print_stalls(name, w);
    for (int b = 0; b < 64 * SUB; b++) {
        hist[b] = 0;
    }
}

static uint64_t xorshift(uint64_t *x)
{
    *x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
    return *x;
}

/*
 * Write one word of a random page, timing each access with the TSC; per
 * window (window=<ms>, default 1000) print the count and the stalls.
 */
static void __attribute__((noreturn)) run_latency(void)
{
    uint64_t window = param_u64("window", 1000) * tsc_khz;
    uint64_t x = rdtsc() | 1, n = 0, max = 0, w = 0;
    uint64_t end = rdtsc() + window;

    /* fill=1: every page holds data before the first window. */
    if (param_u64("fill", 0)) {
        for (uint64_t i = 0; i < pages.count; i++) {
            *page_addr(i) = i | 1;
        }
        end = rdtsc() + window;
    }
    print("latency: tsc_khz=%lu pages=%lu\n", tsc_khz, pages.count);
    for (;;) {
        volatile uint64_t *p = page_addr(xorshift(&x) % pages.count);
        uint64_t t0 = rdtsc();
        *p += 1;
        uint64_t d = rdtsc() - t0;
        timed(d);
        n++;
        if (d > max) {
            max = d;
        }
        if (t0 >= end) {
            end_window("latency", w++, n, max);
            n = max = 0;
            end = rdtsc() + window;
        }
    }
}

/* ---- skew ------------------------------------------------------------------------ */

/*
 * A write working set (docs/test-guest.md): share=S % of the accesses
 * (default 90) go to a hot set of hot=H % of the pages (default 10),
 * scattered over memory, which moves on by drift=D pages a second
 * (default a hundredth of the set); the rest go to any page.  Each
 * access checks a whole page against the generation the guest keeps for
 * it in a table (in the first pages) and writes the next one, so a page
 * that arrives stale, from another page or not at all fails.
 */
typedef struct Skew {
    uint64_t tpages;            /* pages of the table */
    uint64_t n;                 /* pages of the set */
    uint64_t a;                 /* index j is page (a * j) % n: scattered */
} Skew;

static Skew sk;

static uint64_t gcd(uint64_t a, uint64_t b)
{
    while (b) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

static uint32_t *skew_gen(uint64_t j)
{
    return (uint32_t *)page_addr(j / (PAGE_SIZE / 4)) + j % (PAGE_SIZE / 4);
}

static uint64_t *skew_page(uint64_t j)
{
    return page_addr(sk.tpages + sk.a * j % sk.n);
}

static void skew_check(const uint64_t *p, uint64_t g)
{
    uint64_t pfn = (uintptr_t)p / PAGE_SIZE;
    for (uint64_t w = 0; w < PAGE_SIZE / 8; w++) {
        if (p[w] != pattern(pfn, g, w)) {
            print("FAIL page=%lu expected=%lx got=%lx\n", pfn,
                  pattern(pfn, g, w), p[w]);
            guest_exit(EXIT_FAIL);
        }
    }
}

static void skew_write(uint64_t *p, uint64_t g)
{
    uint64_t pfn = (uintptr_t)p / PAGE_SIZE;
    for (uint64_t w = 0; w < PAGE_SIZE / 8; w++) {
        p[w] = pattern(pfn, g, w);
    }
}

/*
 * jump=S: S seconds after the first window the hot set moves at once to
 * pages it never held (a working set that precopy saw and the guest
 * then leaves).  windows=N: after N windows check every page and exit
 * with success.
 */
static void __attribute__((noreturn)) run_skew(void)
{
    uint64_t hotpct = param_u64("hot", 10), share = param_u64("share", 90);
    sk.tpages = (pages.count + PAGE_SIZE / 4 - 1) / (PAGE_SIZE / 4);
    sk.n = pages.count - sk.tpages;
    sk.a = (sk.n * 5 / 8) | 1;
    while (gcd(sk.a, sk.n) != 1) {
        sk.a += 2;
    }
    uint64_t hot = sk.n * hotpct / 100 ? sk.n * hotpct / 100 : 1;
    uint64_t drift = param_u64("drift", hot / 100);
    uint64_t jump = param_u64("jump", 0), nwin = param_u64("windows", 0);
    uint64_t window = param_u64("window", 1000) * tsc_khz;

    for (uint64_t j = 0; j < sk.n; j++) {
        *skew_gen(j) = 0;
        skew_write(skew_page(j), 0);
    }
    print("skew: tsc_khz=%lu pages=%lu hot=%lu\n", tsc_khz, sk.n, hot);
    uint64_t x = rdtsc() | 1, y = x * 0x9e3779b97f4a7c15ULL | 1;
    uint64_t n = 0, max = 0, w = 0, start = rdtsc(), off = 0;
    uint64_t end = start + window;
    for (;;) {
        uint64_t ms = (rdtsc() - start) / tsc_khz;
        if (jump && !off && ms >= jump * 1000) {
            off = sk.n / 2;
            print("skew: jump\n");
        }
        uint64_t base = drift * ms / 1000 + off;
        uint64_t j = xorshift(&x) % 100 < share
                         ? (base + xorshift(&y) % hot) % sk.n
                         : xorshift(&y) % sk.n;
        uint64_t t0 = rdtsc();
        uint32_t *gp = skew_gen(j);
        uint32_t g = *gp;
        uint64_t *p = skew_page(j);
        (void)*(volatile uint64_t *)p;
        uint64_t d = rdtsc() - t0;
        skew_check(p, g);
        skew_write(p, g + 1);
        *gp = g + 1;
        timed(d);
        n++;
        if (d > max) {
            max = d;
        }
        if (t0 >= end) {
            end_window("skew", w++, n, max);
            n = max = 0;
            end = rdtsc() + window;
            if (nwin && w == nwin) {
                for (uint64_t k = 0; k < sk.n; k++) {
                    skew_check(skew_page(k), *skew_gen(k));
                }
                print("skew: done\n");
                guest_exit(EXIT_OK);
            }
        }
    }
}

/* ---- Entry ------------------------------------------------------------------------- */

void user_main(int cpu)
{
    if (cpu != 0) {
        __atomic_fetch_add(&cpus_online, 1, __ATOMIC_SEQ_CST);
        while (!__atomic_load_n(&go, __ATOMIC_ACQUIRE)) {
            cpu_relax();
        }
        if (workload()[0] == 'v') {
            run_verify(cpu);
        }
        halt_forever();         /* the other workloads run on the BSP */
    }

    const char *src = calibrate_tsc();
    start_aps();
    pages_init();
    print("guest: cpus=%d ram_mib=%lu tsc_khz=%lu tsc_source=%s workload=%s\n",
          ncpus, pages.count * PAGE_SIZE >> 20, tsc_khz, src, workload());
    if (boot_info.magic != 0x2badb002) {
        print("FAIL magic=%x\n", boot_info.magic);
        guest_exit(EXIT_FAIL);
    }
    __atomic_store_n(&go, 1, __ATOMIC_RELEASE);

    switch (workload()[0]) {
    case 'v':
        run_verify(0);
    case 'd':
        run_dirty();
    case 'l':
        run_latency();
    case 's':
        run_skew();
    default:
        print("idle\n");
        halt_forever();
    }
}
