#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Background snapshots and their restore, ferry against QEMU 7.2 on the
same guest ELF.

    bench/snapshot.py [--runs N] [--sizes 1G,4G] [--doc docs/benchmarks.md]
                      [--plot docs/snapshot-stalls.png]

The `latency` guest (every page filled first) writes one word of a random
page at a time and times each write.  Each variant takes a background
snapshot of it while it runs (max-bandwidth unlimited): ferry with
mapped-ram to file:, ferry's plain stream to file:, QEMU 7.2 to
`exec:cat > FILE` (7.2 has no file: URI), each starting with no dirty
page cache (sync first; the snapshot is done once its file is written
to the page cache, for both).  Measured: the snapshot's
time (migrate to completed, polled every 10 ms), the guest's write stalls during it (p99, max), the file's
size against RAM.  Then each file is restored: eagerly (ferry mapped-ram,
QEMU), and on demand (ferry, postcopy-ram): from the process's start to
the guest running (its RESUME event), and until the guest is at normal
speed again (the end of its last window with a stall above 1 ms).
Variants run interleaved, each snapshot's restores right after it, in
an order that turns from run to run.
"""
import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'functional'))
import benchlib  # noqa: E402
import postcopy as pc  # noqa: E402
from ferrytest import tmpdir  # noqa: E402

UNLIMITED = pc.UNLIMITED
# (name, QEMU?, mapped-ram?, io_uring?)
SNAPS = [('ferry, mapped-ram', False, True, False),
         ('ferry, mapped-ram, io_uring', False, True, True),
         ('ferry, stream', False, False, False),
         ('QEMU 7.2', True, False, False)]
# (name, QEMU?, mapped-ram?, on demand?, io_uring?, the snapshot it reads)
RESTORES = [('ferry, on demand', False, True, True, False, 'ferry, mapped-ram'),
            ('ferry, on demand, io_uring', False, True, True, True,
             'ferry, mapped-ram, io_uring'),
            ('ferry, eager', False, True, False, False, 'ferry, mapped-ram'),
            ('ferry, eager, io_uring', False, True, False, True,
             'ferry, mapped-ram, io_uring'),
            ('QEMU 7.2, eager', True, False, False, False, 'QEMU 7.2')]


def ms(cycles):
    return cycles / pc.HOST_TSC_KHZ if pc.HOST_TSC_KHZ else float('nan')


def caps(q, **on):
    q.cmd('migrate-set-capabilities', {'capabilities': [
        {'capability': k.replace('_', '-'), 'state': v} for k, v in on.items()]})


def snapshot(qemu, mapped, uring, mem, path):
    m, q = pc.vm(qemu, mem, False)
    try:
        m.wait_line(r'^latency: window=', 600)
        time.sleep(1.0)
        # The last variant's file out of the page cache's dirty pages: the
        # kernel throttles writers once many are dirty, which would slow
        # whichever variant came after a big one.
        os.sync()
        c = {'background_snapshot': True}
        if not qemu:
            c['mapped_ram'] = mapped
        caps(q, **c)
        p = {'max-bandwidth': UNLIMITED}
        if not qemu:
            p['x-io-uring'] = uring
        q.cmd('migrate-set-parameters', p)
        uri = f'exec:cat > {path}' if qemu else f'file:{path}'
        t0 = time.time()
        assert q.cmd('migrate', {'uri': uri}) == {'return': {}}
        while True:
            info = q.cmd('query-migrate')['return']
            if info.get('status') in ('completed', 'failed', 'cancelled'):
                break
            time.sleep(0.01)
        t1 = time.time()
        assert info['status'] == 'completed', info
        time.sleep(2 * pc.WINDOW_MS / 1000)
        hist, fast, mx = pc.merge(pc.windows(m, t0, t1 + pc.WINDOW_MS / 1000))
        # Wall time from migrate to completed seen (QEMU 7.2's total-time
        # once said 0 for a background snapshot).
        return {'time': t1 - t0,
                'p99': ms(pc.quantile(hist, fast, 0.99)), 'max': ms(mx),
                'hist': hist, 'fast': fast,
                'size': os.stat(path).st_size}
    finally:
        m.kill()


def restore(qemu, mapped, lazy, uring, mem, path):
    t0 = time.time()
    m, q = pc.vm(qemu, mem, True)
    try:
        if not qemu:
            caps(q, mapped_ram=mapped, postcopy_ram=lazy)
            q.cmd('migrate-set-parameters', {'x-io-uring': uring})
        uri = f'exec:cat {path}' if qemu else f'file:{path}'
        assert q.cmd('migrate-incoming', {'uri': uri}) == {'return': {}}
        ev = q.event('RESUME', 300)
        run_at = pc.ts(ev)
        while q.cmd('query-migrate')['return'].get('status') not in \
                ('completed', 'failed'):
            time.sleep(0.01)
        done = time.time()
        info = q.cmd('query-migrate')['return']
        assert info['status'] == 'completed', info
        # Normal speed: the end of the last window with a stall > 1 ms.
        time.sleep(1.5)
        slow_end = run_at
        for t, line in zip(list(m.times), list(m.lines)):
            w = pc.WIN_RX.match(line)
            if w and ms(int(w.group(3))) > 1.0:
                slow_end = max(slow_end, t)
        hist, fast, mx = pc.merge(pc.windows(m, run_at, done + pc.WINDOW_MS / 1000))
        return {'start': run_at - t0, 'done': done - t0,
                'normal': slow_end - run_at, 'hist': hist, 'fast': fast}
    finally:
        m.kill()


def fmt(v, f):
    return benchlib.cell(v, f.format) if v else 'n/a'


def report(res, sizes, runs, args):
    lines = [f'Median (range) of {runs} interleaved runs; {benchlib.machine_line()}.',
             'The `latency` guest writes one word of a random page at a time '
             'while a background snapshot of it is taken, max-bandwidth '
             'unlimited (`bench/snapshot.py`).', '']
    for size in sizes:
        lines += [f'#### {size}', '',
                  '| snapshot | time | stall p99 | max stall | file / RAM |',
                  '| --- | --- | --- | --- | --- |']
        ram = int(size[:-1]) << 30
        for name, *_ in SNAPS:
            r = res[(size, name)]
            lines.append(f'| {name} | {fmt([x["time"] for x in r], "{:.2f} s")} '
                         f'| {fmt([x["p99"] for x in r], "{:.3f} ms")} '
                         f'| {fmt([x["max"] for x in r], "{:.1f} ms")} '
                         f'| {fmt([x["size"] / ram for x in r], "{:.3f}")} |')
        lines += ['', '| restore | guest running after | all in after | '
                  'normal speed after running |', '| --- | --- | --- | --- |']
        for name, *_ in RESTORES:
            r = res[(size, name)]
            lines.append(f'| {name} | {fmt([x["start"] * 1000 for x in r], "{:.0f} ms")} '
                         f'| {fmt([x["done"] for x in r], "{:.2f} s")} '
                         f'| {fmt([x["normal"] for x in r], "{:.2f} s")} |')
        lines.append('')
    return '\n'.join(lines)


PLOTTED_RESTORES = ['ferry, on demand']


def plot(res, sizes, path):
    """Stall distributions during the snapshot, one curve per variant, and
    while a restore brings the pages in (from the guest running to every
    page in: on demand; an eager restore's guest runs once all are in)."""
    data = os.path.join(tmpdir(), 'stalls.dat')
    curves = []
    with open(data, 'w') as f:
        for size in sizes:
            for name in [n for n, *_ in SNAPS] + PLOTTED_RESTORES:
                hist, fast = {}, 0
                for r in res[(size, name)]:
                    fast += r['fast']
                    for b, n in r['hist'].items():
                        hist[b] = hist.get(b, 0) + n
                total = fast + sum(hist.values())
                if not total:
                    continue
                what = 'restore' if name in PLOTTED_RESTORES else 'snapshot'
                curves.append(f"'{data}' index {len(curves)} with steps "
                              f"title '{size} {what}: {name}'")
                f.write(f'# {size} {name}\n')
                seen = fast
                for b in sorted(hist):
                    seen += hist[b]
                    f.write(f'{ms(pc.bucket_top(b)):.6f} {1 - seen / total:.9g}\n')
                f.write('\n\n')
    script = (f"set terminal pngcairo size 1000,600 noenhanced\nset output '{path}'\n"
              "set logscale xy\nset xlabel 'write stall (ms)'\n"
              "set ylabel 'fraction of writes stalled longer'\n"
              "set title 'Guest write stalls during a background snapshot and a restore'\n"
              "plot " + ', '.join(curves) + '\n')
    subprocess.run(['gnuplot'], input=script, text=True, check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--runs', type=int, default=3)
    ap.add_argument('--sizes', default=','.join(['1G', '4G']))
    ap.add_argument('--doc')
    ap.add_argument('--plot')
    args = ap.parse_args()
    sizes = args.sizes.split(',')
    res = {}
    for run in range(args.runs):
        for size in sizes:
            d = tmpdir()
            # Each snapshot's file is restored and deleted before the next
            # variant, so that none runs with more page cache taken than
            # another; the order turns from run to run.
            order = SNAPS[run % len(SNAPS):] + SNAPS[:run % len(SNAPS)]
            for name, qemu, mapped, uring in order:
                path = os.path.join(d, 'snap')
                r = snapshot(qemu, mapped, uring, size, path)
                res.setdefault((size, name), []).append(r)
                print(run, size, name, {k: v for k, v in r.items()
                                        if k not in ('hist',)}, flush=True)
                for rname, rqemu, rmapped, lazy, ruring, src in RESTORES:
                    if src != name:
                        continue
                    r = restore(rqemu, rmapped, lazy, ruring, size, path)
                    res.setdefault((size, rname), []).append(r)
                    print(run, size, rname, {k: v for k, v in r.items()
                                             if k != 'hist'}, flush=True)
                os.unlink(path)
            os.rmdir(d)
    body = report(res, sizes, args.runs, args)
    print(body)
    if args.doc:
        benchlib.update_section(args.doc, 'snapshot',
                                'Background snapshots and restore', body)
    if args.plot:
        plot(res, sizes, args.plot)


if __name__ == '__main__':
    main()
