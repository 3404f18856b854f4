#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Postcopy live migration, ferry against QEMU on the same guest ELF: the
stalls the guest sees while its memory arrives, its progress, and the
migration's own figures.

    bench/postcopy.py [--runs N] [--doc docs/benchmarks.md]
                      [--plot docs/postcopy-stalls.png] [--thread-cpu]

The `latency` guest (every page filled with data first) writes one word
of a random page at a time and times each write with the TSC.  It is
migrated with postcopy switched on right after `migrate` (nearly every
page comes on demand or by the background push), 1 GiB and 4 GiB, by
ferry and by QEMU 7.2, each with and without postcopy-preempt, and each
with the destination's RAM preallocated (memory-backend-ram,prealloc=on)
or not (the prealloc ones, and those without the source's
x-postcopy-push-window, only when named with --only); runs
interleaved so that a slow spell hits every variant.  --thread-cpu
adds each thread's CPU time from migrate-start-postcopy to completion,
printed per variant (QEMU then runs with -name debug-threads=on so that
its threads have names).
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'functional'))
import benchlib  # noqa: E402
from ferrytest import QEMU, tmpdir  # noqa: E402

SIZES = ['1G', '4G']
# (name, QEMU?, postcopy-preempt?, destination RAM preallocated?
#  [, the destination's x-postcopy-page-pool
#   [, the source's x-postcopy-push-window, if not its default]])
VARIANTS = [('ferry', False, False, False), ('ferry, preempt', False, True, False),
            ('QEMU 7.2', True, False, False), ('QEMU 7.2, preempt', True, True, False),
            ('ferry, prealloc', False, False, True),
            ('ferry, preempt, prealloc', False, True, True),
            ('QEMU 7.2, prealloc', True, False, True),
            ('QEMU 7.2, preempt, prealloc', True, True, True),
            ('ferry, page pool', False, False, True, 64 << 20),
            ('ferry, preempt, page pool', False, True, True, 64 << 20),
            ('ferry, no push window', False, False, False, 0, 0),
            ('ferry, preempt, no push window', False, True, False, 0, 0)]
WINDOW_MS = 200
THREAD_CPU = False              # --thread-cpu
STALL_MIN = 1 << 10             # cycles: the guest's first stall bucket
UNLIMITED = 100 * 10**9

WIN_RX = re.compile(r'^latency: window=(\d+) count=(\d+) .* max=(\d+)')
STALL_RX = re.compile(r'^latency: stalls window=(\d+)((?: \d+:\d+)*)')


def vm(qemu, mem, incoming, prealloc=None):
    """A machine; @prealloc None: plain -m, else a memory-backend-ram
    with prealloc on or off (QEMU names the RAM block after the backend,
    so both sides of a migration need one)."""
    extra = benchlib.ram_backend_args(mem, prealloc)
    if THREAD_CPU and qemu:
        extra += ['-name', 'guest,debug-threads=on']
    return benchlib.vm_with_qmp(qemu, mem, f'latency window={WINDOW_MS} fill=1',
                                incoming, extra)


def windows(m, since=0.0, until=float('inf')):
    """The guest's windows whose line came in (since, until]: a list of
    (count, max cycles, {bucket: n})."""
    return timed_windows(zip(list(m.times), list(m.lines)), since, until)


def timed_windows(lines, since=0.0, until=float('inf')):
    """windows() of (time, line) pairs."""
    out, cur = [], None
    for t, line in lines:
        w = WIN_RX.match(line)
        if w:
            cur = None
            if since < t <= until:
                cur = (int(w.group(2)), int(w.group(3)), {})
                out.append(cur)
            continue
        s = STALL_RX.match(line)
        if s and cur is not None:
            for pair in s.group(2).split():
                b, n = pair.split(':')
                cur[2][int(b)] = cur[2].get(int(b), 0) + int(n)
    return out


def bucket_top(b):
    """Upper end, in cycles, of the guest's stall bucket @b."""
    e, h = divmod(b, 2)
    return (1 << e) + ((h + 1) << (e - 1))


def merge(wins):
    """Pool windows into ({bucket: n}, fast count, max cycles)."""
    hist, count, mx = {}, 0, 0
    for c, m, h in wins:
        count += c
        mx = max(mx, m)
        for b, n in h.items():
            hist[b] = hist.get(b, 0) + n
    return hist, count - sum(hist.values()), mx


def quantile(hist, fast, q):
    """Cycles below which a fraction @q of the accesses fall."""
    total = fast + sum(hist.values())
    want, seen = q * total, fast
    if seen > want:
        return STALL_MIN
    for b in sorted(hist):
        seen += hist[b]
        if seen > want:
            return bucket_top(b)
    return bucket_top(max(hist))


def host_tsc_khz():
    """The host's TSC rate from the kernel log (the guests read the same
    TSC; their own PIT calibration is off by up to 20 % here), or None."""
    try:
        log = subprocess.run(['dmesg'], capture_output=True, text=True).stdout
    except OSError:
        return None
    found = None
    for rx in (r'tsc: Detected ([\d.]+) MHz', r'Refined TSC clocksource '
               r'calibration: ([\d.]+) MHz'):
        m = re.search(rx, log)
        if m:
            found = float(m.group(1)) * 1000
    return found


HOST_TSC_KHZ = host_tsc_khz()



def one_postcopy(qemu, preempt, prealloc, mem, setup=None, pool=0):
    """One postcopy; @setup(qemu, sq, dq), if given, runs before the
    destination listens (bench/tls.py: the credentials); @pool: the
    destination's x-postcopy-page-pool (its RAM not preallocated)."""
    src, sq = vm(qemu, mem, False, False if prealloc and not pool else None)
    dst, dq = vm(qemu, mem, True, True if prealloc and not pool else None)
    try:
        caps = [{'capability': 'postcopy-ram', 'state': True},
                {'capability': 'postcopy-preempt', 'state': preempt}]
        for q in (sq, dq):
            r = q.cmd('migrate-set-capabilities', {'capabilities': caps})
            assert r == {'return': {}}, r
        if not qemu:
            # Only shows ferry's fault statistics (kept either way).
            r = dq.cmd('migrate-set-capabilities', {'capabilities': [
                {'capability': 'postcopy-blocktime', 'state': True}]})
            assert r == {'return': {}}, r
        if pool:
            r = dq.cmd('migrate-set-parameters', {'x-postcopy-page-pool': pool})
            assert r == {'return': {}}, r
        if setup:
            setup(qemu, sq, dq)
        port = benchlib.free_port()
        r = dq.cmd('migrate-incoming', {'uri': f'tcp:127.0.0.1:{port}'})
        assert r == {'return': {}}, r
        tsc = int(src.wait_line(r'^latency: tsc_khz=(\d+)', 300).group(1))
        tsc = HOST_TSC_KHZ or tsc
        src.wait_line(r'^latency: window=3 ', 60)
        before = windows(src)[1:]
        sq.cmd('migrate-set-parameters', {'max-bandwidth': UNLIMITED})
        r = sq.cmd('migrate', {'uri': f'tcp:127.0.0.1:{port}'})
        assert r == {'return': {}}, r
        cpu = benchlib.ThreadCPU({'src': src.proc.pid, 'dst': dst.proc.pid}) \
            if THREAD_CPU else None
        if cpu:
            cpu.start()
        r = sq.cmd('migrate-start-postcopy')
        assert r == {'return': {}}, r
        deadline = time.monotonic() + 300
        while True:
            info = sq.cmd('query-migrate')['return']
            if info.get('status') in ('completed', 'failed', 'cancelled',
                                      'postcopy-paused'):
                break
            assert time.monotonic() < deadline, info
            time.sleep(0.01)
        done = time.time()
        threads = cpu.stop() if cpu else {}
        assert info['status'] == 'completed', info
        # The destination's own view of its demand faults (ferry; QEMU
        # 7.2 has no postcopy-latency): mean, and its percentiles.
        fault_mean = fault_p50 = fault_p99 = None
        dinfo = dq.cmd('query-migrate')['return']
        pct = dinfo.get('x-postcopy-latency-percentiles')
        if pct and pct['p50']:
            fault_mean = dinfo['postcopy-latency'] / 1000
            fault_p50, fault_p99 = pct['p50'] / 1000, pct['p99'] / 1000
        stop = benchlib.event_time(sq.event('STOP', 10))
        run = benchlib.event_time(dq.event('RESUME', 10))
        # The window under way at completion ends within a window and
        # its printing; then every window is after postcopy.
        last = max(int(WIN_RX.match(x).group(1)) for x in list(dst.lines)
                   if WIN_RX.match(x))
        dst.wait_line(rf'^latency: window={last + 2} ', 30)
        # Windows wholly inside postcopy: begun after the destination ran
        # (a window's line comes its length plus printing after its start)
        # and ended before completion.  A short postcopy may hold none:
        # then the windows that overlap it, marked as such.
        phase = windows(dst, run + WINDOW_MS / 1000 + 0.03, done)
        whole = bool(phase)
        if not phase:
            phase = windows(dst, run, done + WINDOW_MS / 1000 + 0.1)
        assert phase, 'no guest window during postcopy'
        hist, fast, mx = merge(phase)
        us = lambda c: c / (tsc / 1000)               # noqa: E731
        rate_before = sum(w[0] for w in before) / len(before)
        rate_during = sum(w[0] for w in phase) / len(phase)
        return {
            'p50': us(quantile(hist, fast, 0.5)),
            'p99': us(quantile(hist, fast, 0.99)),
            'p999': us(quantile(hist, fast, 0.999)),
            'max': us(mx),
            'progress': rate_during / rate_before * 100,
            'total': info['total-time'] / 1000,
            'stop_run': (run - stop) * 1000,
            'requests': info['ram'].get('postcopy-requests', 0),
            'push': info['ram'].get('postcopy-bytes', 0) / max(1e-3, done - stop)
                    / 2**20,
            'windows': len(phase) if whole else -len(phase),
            'fault_mean': fault_mean, 'fault_p50': fault_p50,
            'fault_p99': fault_p99,
            'hist': hist, 'fast': fast, 'tsc': tsc, 'threads': threads,
        }
    finally:
        src.kill()
        dst.kill()


def plot(res, variants, path):
    """CCDF of the stalls, every run of a variant pooled, one panel a size."""
    d = tmpdir()
    files = {}
    for size in SIZES:
        for name, *_ in variants:
            hist, fast = {}, 0
            for x in res[(size, name)]:
                k = x['tsc'] / 1000
                fast += x['fast']
                for b, n in x['hist'].items():
                    hist[bucket_top(b) / k] = hist.get(bucket_top(b) / k, 0) + n
            total = fast + sum(hist.values())
            fn = os.path.join(d, f'{size}-{len(files)}.dat')
            with open(fn, 'w') as f:
                left = sum(hist.values())
                for us in sorted(hist):
                    f.write(f'{us:.3f} {max(left, 1) / total:.3e}\n')
                    left -= hist[us]
            files[(size, name)] = fn
    script = ["set terminal pngcairo size 1100,450 font ',10'",
              f"set output '{path}'", 'set multiplot layout 1,2',
              'set logscale xy', 'set format y "10^{%T}"',
              "set xlabel 'stall (us)'", "set ylabel 'fraction of writes at least this long'",
              'set grid', 'set key bottom left']
    for size in SIZES:
        script.append(f"set title 'postcopy, {size}iB guest, switch at once'")
        script.append('plot ' + ', '.join(
            f"'{files[(size, n)]}' using 1:2 with steps lw 2 title '{n}'"
            for n, *_ in variants))
    script.append('unset multiplot')
    subprocess.run(['gnuplot'], input='\n'.join(script), text=True, check=True)


def report(res, variants, runs, args):
    """The table (and plot) of the first @runs rounds, into the docs."""
    f1 = lambda v: f'{v:.1f}'                     # noqa: E731
    f0 = lambda v: f'{v:.0f}'                     # noqa: E731
    f2 = lambda v: f'{v:.2f}'                     # noqa: E731
    f3 = lambda v: f'{v:.3g}'                     # noqa: E731
    rows = ['| guest | VMM | stall p50 (us) | p99 (us) | p99.9 (us) | max (ms) '
            '| progress (%) | total (s) | stop to run (ms) | requests '
            '| push (MiB/s) | demand fault, mean (us) | p50 (us) | p99 (us) |',
            '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    for size in SIZES:
        for name, *_ in variants:
            rs = res[(size, name)]
            if not rs:
                continue
            col = lambda k, f: benchlib.cell([x[k] for x in rs], f)   # noqa: E731
            part = sum(x['windows'] < 0 for x in rs)
            fault = ' | '.join(
                benchlib.cell(v, f0) if v else '-'
                for v in ([x[k] for x in rs if x.get(k) is not None]
                          for k in ('fault_mean', 'fault_p50', 'fault_p99')))
            mark = f' (*{part})' if part else ''
            rows.append(
                f'| {size}iB | {name}{mark} | {col("p50", f1)} | {col("p99", f0)} '
                f'| {col("p999", f0)} | {benchlib.cell([x["max"] / 1000 for x in rs], f1)} '
                f'| {col("progress", f3)} | {col("total", f2)} '
                f'| {col("stop_run", f1)} | {col("requests", f0)} '
                f'| {col("push", f0)} | {fault} |')
    body = '\n'.join(rows) + '\n\n'
    if args.plot:
        plot(res, variants, args.plot)
        body += (f'![stall distribution]({os.path.basename(args.plot)})\n\n')
    body += (
        f'Median (min-max) of {runs} interleaved runs; 1 vCPU, '
        'tcp:127.0.0.1, the `latency` guest (`fill=1`, windows of '
        f'{WINDOW_MS} ms) switched to postcopy right after `migrate`, '
        'max-bandwidth and max-postcopy-bandwidth unlimited; "prealloc": '
        'both sides use -object memory-backend-ram, the destination\'s with '
        'prealloc=on (ferry moves those pages into place, QEMU frees them '
        'at postcopy advise).  Stalls are the '
        'guest\'s own TSC timings of its writes (at the host\'s TSC rate) '
        'in the guest\'s windows that began after the destination ran and '
        'ended before the migration completed, pooled ((*N): in N runs '
        'postcopy was too short for a whole window, and the windows '
        'overlapping it were taken; p50 under '
        f'{STALL_MIN} cycles shows as that bound); progress is the writes per '
        'window then against the windows before `migrate`; total time and '
        'requests are the source\'s query-migrate (total-time, '
        'ram.postcopy-requests); stop to run is the destination\'s RESUME '
        'event less the source\'s STOP event (QMP timestamps); push is '
        'ram.postcopy-bytes over the time from STOP to completed; the demand '
        'fault is the destination\'s postcopy-latency, from a fault read to '
        'its page placed: its mean (postcopy-latency) and its p50 and p99 '
        '(x-postcopy-latency-percentiles, at most 1 us or 6.25 % above '
        'the true value; ferry only: QEMU 7.2 has no such figure).  Measured '
        f'on {benchlib.machine_line()}.  `bench/postcopy.py --doc '
        'docs/benchmarks.md --plot docs/postcopy-stalls.png` regenerates '
        'this section and the plot.\n')
    print(body)
    if args.doc:
        benchlib.update_section(args.doc, 'postcopy',
                                'Postcopy migration against QEMU', body)


def thread_report(res, variants):
    """Each variant's CPU per thread over postcopy (ms, median (min-max)
    of its runs), the threads over 5 ms, busiest first."""
    f0 = lambda v: f'{v:,.0f}'                    # noqa: E731
    for size in SIZES:
        for name, *_ in variants:
            rs = res[(size, name)]
            if not rs:
                continue
            names = {k for x in rs for k in x['threads']}
            vals = {k: [x['threads'].get(k, 0) for x in rs] for k in names}
            vals['all threads'] = [sum(x['threads'].values()) for x in rs]
            print(f'CPU per thread over postcopy, {size}iB, {name}, '
                  f'{len(rs)} runs (ms):')
            for k in sorted(vals, key=lambda k: -statistics.median(vals[k])):
                if statistics.median(vals[k]) >= 5:
                    print(f'  {k:40} {benchlib.cell(vals[k], f0)}')


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--runs', type=int, default=5)
    ap.add_argument('--sizes', default=','.join(SIZES))
    ap.add_argument('--only', help='variants to run, by name, separated by ; '
                    '(default: those without prealloc)')
    ap.add_argument('--doc')
    ap.add_argument('--plot')
    ap.add_argument('--thread-cpu', action='store_true',
                    help='print each thread\'s CPU time over postcopy')
    args = ap.parse_args()
    global THREAD_CPU
    THREAD_CPU = args.thread_cpu
    SIZES[:] = args.sizes.split(',')

    # By default the four without prealloc, whose table --doc writes; the
    # prealloc ones are run by name (--only) and their table copied into
    # docs/benchmarks.md by hand.  5 runs took 10 and 4 minutes here on
    # 2026-11-30 (about two hours for all eight on 2026-11-23, when the
    # 4 GiB runs were slower).
    variants = [v for v in VARIANTS if (QEMU or not v[1]) and
                (v[0] in args.only.split(';') if args.only
                 else not v[3] and len(v) < 6)]
    res = {(s, v[0]): [] for s in SIZES for v in variants}
    for r in range(args.runs):
        for size in SIZES:
            for name, qemu, preempt, prealloc, *extra in variants:
                print(f'postcopy: run {r + 1}/{args.runs}, {size}, {name}',
                      file=sys.stderr, flush=True)
                window = extra[1] if len(extra) > 1 else None
                setup = (lambda q, sq, dq, w=window: sq.cmd(
                    'migrate-set-parameters', {'x-postcopy-push-window': w})) \
                    if window is not None else None
                try:
                    x = one_postcopy(qemu, preempt, prealloc, size, setup=setup,
                                     pool=extra[0] if extra else 0)
                except AssertionError as e:     # say so, and go on
                    print(f'  failed: {e}', file=sys.stderr, flush=True)
                    continue
                print('  ' + ' '.join(f'{k}={v:.3g}' for k, v in x.items()
                                      if isinstance(v, (int, float))),
                      file=sys.stderr, flush=True)
                res[(size, name)].append(x)

        report(res, variants, r + 1, args)
        if THREAD_CPU:
            thread_report(res, variants)


if __name__ == '__main__':
    main()
