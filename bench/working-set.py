#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""x-postcopy-working-set against the push in address order (QEMU's),
same run: the demand faults during postcopy, the vCPU's blocktime, and
the guest's progress.

    bench/working-set.py [--runs N] [--doc docs/benchmarks.md]

Two guests of 1 GiB: `skew` (90 % of its writes to a scattered tenth of
its pages, which moves slowly) and `latency fill=1` (uniform random
writes).  Precopy at max-bandwidth 256 MiB/s with downtime-limit 1 ms
(it never converges), migrate-start-postcopy when pass 4 begins (three
passes of heat), max-postcopy-bandwidth unlimited; without and with
postcopy-preempt.  Runs interleaved.
"""
import argparse
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'functional'))
import benchlib  # noqa: E402

MEM = '1G'
WINDOW_MS = 200
GUESTS = [('skew', f'skew window={WINDOW_MS}'),
          ('uniform', f'latency window={WINDOW_MS} fill=1')]
# (name, postcopy-preempt?, x-postcopy-working-set?)
VARIANTS = [('address order', False, False), ('working set', False, True),
            ('address order, preempt', True, False),
            ('working set, preempt', True, True)]
PROGRESS_S = 1.0
WIN_RX = re.compile(r'^\w+: window=(\d+) count=(\d+) ')


def counts(m, since=0.0, until=float('inf')):
    """Accesses of the guest's windows whose line came in (since, until]."""
    return [int(w.group(2)) for t, line in zip(list(m.times), list(m.lines))
            if (w := WIN_RX.match(line)) and since < t <= until]



def one(append, preempt, ws):
    src, sq = benchlib.vm_with_qmp(False, MEM, append, False)
    dst, dq = benchlib.vm_with_qmp(False, MEM, append, True)
    try:
        caps = [{'capability': 'postcopy-ram', 'state': True},
                {'capability': 'postcopy-preempt', 'state': preempt},
                {'capability': 'events', 'state': True}]
        for q, extra in ((sq, [{'capability': 'x-postcopy-working-set',
                                'state': ws}]),
                         (dq, [{'capability': 'postcopy-blocktime',
                                'state': True}])):
            r = q.cmd('migrate-set-capabilities', {'capabilities': caps + extra})
            assert r == {'return': {}}, r
        port = benchlib.free_port()
        assert dq.cmd('migrate-incoming',
                      {'uri': f'tcp:127.0.0.1:{port}'}) == {'return': {}}
        src.wait_line(r'^\w+: window=3 ', 300)
        before = counts(src)[1:]
        r = sq.cmd('migrate-set-parameters', {'max-bandwidth': 256 << 20,
                                              'downtime-limit': 1})
        assert r == {'return': {}}, r
        assert sq.cmd('migrate', {'uri': f'tcp:127.0.0.1:{port}'}) == {'return': {}}
        while sq.event('MIGRATION_PASS', 120)['data']['pass'] < 4:
            pass
        assert sq.cmd('migrate-start-postcopy') == {'return': {}}
        deadline = time.monotonic() + 300
        while True:
            info = sq.cmd('query-migrate')['return']
            if info.get('status') in ('completed', 'failed', 'postcopy-paused'):
                break
            assert time.monotonic() < deadline, info
            time.sleep(0.01)
        assert info['status'] == 'completed', info
        run = benchlib.event_time(dq.event('RESUME', 10))
        time.sleep(PROGRESS_S + WINDOW_MS / 1000 + 0.3)
        d = dq.cmd('query-migrate')['return']
        after = counts(dst, run, run + PROGRESS_S + WINDOW_MS / 1000)
        assert after, 'no guest window after the switch'
        w = info.get('x-postcopy-working-set', {})
        return {
            'faults': info['ram']['postcopy-requests'],
            'blocktime': d['postcopy-blocktime'],
            'progress': sum(after) / (len(after) * sum(before) / len(before)) * 100,
            'pushed': info['ram']['postcopy-bytes'] / 2**20,
            'ranked': w.get('ranked', 0), 'hot': w.get('hot-pushed', 0),
            'near': w.get('near-pushed', 0),
        }
    finally:
        src.kill()
        dst.kill()


def report(res, runs, args):
    f0 = lambda v: f'{v:.0f}'                     # noqa: E731
    f1 = lambda v: f'{v:.1f}'                     # noqa: E731
    rows = ['| guest | push | demand faults | blocktime (ms) | progress (%) '
            '| postcopy MiB | ranked pages | pushed from the order | '
            'from fault walks |',
            '|---|---|---:|---:|---:|---:|---:|---:|---:|']
    for g, _ in GUESTS:
        for name, *_ in VARIANTS:
            rs = res[(g, name)]
            if not rs:
                continue
            col = lambda k, f: benchlib.cell([x[k] for x in rs], f)   # noqa: E731
            rows.append(f'| {g} | {name} | {col("faults", f0)} '
                        f'| {col("blocktime", f0)} | {col("progress", f1)} '
                        f'| {col("pushed", f0)} | {col("ranked", f0)} '
                        f'| {col("hot", f0)} | {col("near", f0)} |')
    body = '\n'.join(rows) + '\n\n' + (
        f'Median (min-max) of {runs} interleaved runs; ferry on both sides, '
        f'{MEM}, 1 vCPU, tcp:127.0.0.1.  Guests: `skew window={WINDOW_MS}` '
        '(90 % of its writes to a hot tenth of its pages, scattered, moving '
        f'a hundredth a second) and `latency window={WINDOW_MS} fill=1` '
        '(uniform).  Precopy at max-bandwidth 256 MiB/s, downtime-limit 1 '
        'ms, migrate-start-postcopy as pass 4 begins, '
        'max-postcopy-bandwidth unlimited.  Demand faults: the source\'s '
        'ram.postcopy-requests; blocktime: the destination\'s '
        'postcopy-blocktime; progress: the guest\'s accesses in its '
        f'windows of the first {PROGRESS_S:.0f} s after the destination '
        'ran, against its windows before `migrate`; the last three columns '
        'are x-postcopy-working-set\'s (4 KiB pages).  Measured on '
        f'{benchlib.machine_line()}.  `bench/working-set.py --doc '
        'docs/benchmarks.md` regenerates this section.\n')
    print(body)
    if args.doc:
        benchlib.update_section(args.doc, 'working-set',
                                'Postcopy: the working set first', body)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--runs', type=int, default=5)
    ap.add_argument('--doc')
    args = ap.parse_args()
    res = {(g, v[0]): [] for g, _ in GUESTS for v in VARIANTS}
    for r in range(args.runs):
        for g, append in GUESTS:
            for name, preempt, ws in VARIANTS:
                print(f'working-set: run {r + 1}/{args.runs}, {g}, {name}',
                      file=sys.stderr, flush=True)
                try:
                    x = one(append, preempt, ws)
                except AssertionError as e:     # say so, and go on
                    print(f'  failed: {e}', file=sys.stderr, flush=True)
                    continue
                print('  ' + ' '.join(f'{k}={v:.3g}' for k, v in x.items()
                                      if isinstance(v, (int, float))),
                      file=sys.stderr, flush=True)
                res[(g, name)].append(x)
        report(res, r + 1, args)


if __name__ == '__main__':
    main()
