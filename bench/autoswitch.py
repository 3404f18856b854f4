#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""When to switch to postcopy: x-postcopy-auto against the fixed choices,
on guests that dirty slower than the link, faster, and one that changes
phase, in the same run.

    bench/autoswitch.py [--runs N] [--doc docs/benchmarks.md]

Each guest is the `verify` guest (512 MiB, 1 vCPU, round 0 filling its
memory first), migrated over tcp:127.0.0.1 with postcopy-ram on, and
max-bandwidth and max-postcopy-bandwidth both 200 MiB/s, as one link
would give (unlimited postcopy against a limited precopy would favour
the switch for nothing but the limit):
- slow: rewrites its memory at 64 MiB/s;
- fast: as fast as it can (GB/s);
- rising: 64 MiB/s for 3 s from the migration's start, then as fast as
  it can (the change comes during pass 2);
- falling: as fast as it can for 2 s, then 64 MiB/s.
The policies: precopy alone (never switch; given up after 30 s), the
switch after pass 1 (libvirt's --postcopy-after-precopy: ferry's
migrate -p, and QEMU 7.2 with migrate-start-postcopy at its second
MIGRATION_PASS event), after pass 2 and after pass 3 (migrate-start-
postcopy at the next pass's event), and x-postcopy-auto with its
default budget.  Figures: total time and downtime (the source's
query-migrate), the guest's vCPU blocktime in postcopy (the
destination's postcopy-blocktime; QEMU 7.2's too), and which pass the
switch came after.  Runs interleaved, the order turning from run to run.
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'functional'))
import benchlib  # noqa: E402
from ferrytest import QEMU  # noqa: E402

MEM = '512M'
BANDWIDTH = 200 << 20
PRECOPY_GIVE_UP_S = 20
GUESTS = [('slow (64 MiB/s)', 'verify rate=64'),
          ('fast (full speed)', 'verify'),
          ('rising (64 MiB/s, full speed from 3 s)', 'verify rate=64 phase=3 rate2=0'),
          ('falling (full speed, 64 MiB/s from 2 s)', 'verify rate=0 phase=2 rate2=64')]
# (name, QEMU?, how): how is 'precopy', 'auto', or the pass to switch after.
POLICIES = [('precopy alone', False, 'precopy'), ('after pass 1', False, 1),
            ('after pass 2', False, 2), ('after pass 3', False, 3),
            ('x-postcopy-auto', False, 'auto')]
if QEMU:
    POLICIES.append(('QEMU 7.2, after pass 1', True, 1))


def vm(qemu, append, incoming):
    return benchlib.vm_with_qmp(qemu, MEM, f'{append} cpus=1', incoming)


def one(qemu, append, how):
    src, sq = vm(qemu, append, False)
    dst, dq = vm(qemu, append, True)
    try:
        caps = [{'capability': 'postcopy-ram', 'state': True},
                {'capability': 'postcopy-blocktime', 'state': True},
                {'capability': 'events', 'state': True}]
        for q in (sq, dq):
            r = q.cmd('migrate-set-capabilities', {'capabilities': caps})
            assert r == {'return': {}}, r
        if how == 'auto':
            r = sq.cmd('migrate-set-capabilities', {'capabilities': [
                {'capability': 'x-postcopy-auto', 'state': True}]})
            assert r == {'return': {}}, r
        r = sq.cmd('migrate-set-parameters', {'max-bandwidth': BANDWIDTH,
                                              'max-postcopy-bandwidth': BANDWIDTH})
        assert r == {'return': {}}, r
        port = benchlib.free_port()
        r = dq.cmd('migrate-incoming', {'uri': f'tcp:127.0.0.1:{port}'})
        assert r == {'return': {}}, r
        src.wait_line(r'^verify: round=0 ', 120)
        args = {'uri': f'tcp:127.0.0.1:{port}'}
        if how == 1 and not qemu:
            args['x-postcopy-after-pass1'] = True
        r = sq.cmd('migrate', args)
        assert r == {'return': {}}, r
        t0 = time.monotonic()
        fixed = isinstance(how, int)
        switch_at = how + 1 if fixed and 'x-postcopy-after-pass1' not in args else None
        while True:
            if switch_at:
                for e in [e for e in sq.events if e['event'] == 'MIGRATION_PASS']:
                    sq.events.remove(e)
                    if e['data']['pass'] >= switch_at:
                        assert sq.cmd('migrate-start-postcopy') == {'return': {}}
                        switch_at = None
            info = sq.cmd('query-migrate')['return']
            if info.get('status') in ('completed', 'failed', 'cancelled'):
                break
            if how == 'precopy' and time.monotonic() - t0 > PRECOPY_GIVE_UP_S:
                sq.cmd('migrate_cancel')
                sq.cmd('query-status')
                return None
            time.sleep(0.01)
        assert info['status'] == 'completed', info
        d = dq.cmd('query-migrate')['return']
        # The guest goes on intact: no FAIL line a moment after.
        time.sleep(0.5)
        assert not [x for x in list(dst.lines) if x.startswith('FAIL')], list(dst.lines)
        auto = info.get('x-postcopy-auto', {})
        return {
            'total': info['total-time'] / 1000,
            'downtime': info.get('downtime', 0),
            'blocktime': d.get('postcopy-blocktime', 0),
            'switched': how if fixed else (auto.get('pass') if
                                           auto.get('verdict') == 'switch' else 0),
            'reason': auto.get('reason', ''),
        }
    finally:
        for m in (src, dst):
            m.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--runs', type=int, default=3)
    ap.add_argument('--doc')
    args = ap.parse_args()
    res = {(g[0], p[0]): [] for g in GUESTS for p in POLICIES}
    gave_up = {k: 0 for k in res}
    reasons = {}
    for r in range(args.runs):
        order = POLICIES[r % len(POLICIES):] + POLICIES[:r % len(POLICIES)]
        for g, append in GUESTS:
            for p, qemu, how in order:
                print(f'autoswitch: run {r + 1}/{args.runs}, {g}, {p}',
                      file=sys.stderr, flush=True)
                try:
                    x = one(qemu, append, how)
                except AssertionError as e:
                    print(f'  failed: {e}', file=sys.stderr, flush=True)
                    continue
                if x is None:
                    gave_up[(g, p)] += 1
                    continue
                res[(g, p)].append(x)
                if how == 'auto':
                    reasons.setdefault(g, x['reason'])
                print(f'  {x}', file=sys.stderr, flush=True)

    f0 = lambda v: f'{v:.0f}'                    # noqa: E731
    f2 = lambda v: f'{v:.2f}'                    # noqa: E731
    med = lambda xs: benchlib.median_range(xs)[0]  # noqa: E731
    rows = ['| guest | policy | total time (s) | downtime (ms) | vCPU blocktime (ms) '
            '| switched after pass | total / best fixed |',
            '|---|---|---:|---:|---:|---:|---:|']
    for g, _ in GUESTS:
        # A policy that did not always finish is no one's best.
        fixed = [med([x['total'] for x in res[(g, p)]]) for p, q, how in POLICIES
                 if not q and how != 'auto' and res[(g, p)] and not gave_up[(g, p)]]
        best = min(fixed) if fixed else float('nan')
        for p, qemu, how in POLICIES:
            xs = res[(g, p)]
            if not xs:
                why = (f'did not converge in {PRECOPY_GIVE_UP_S} s'
                       if gave_up[(g, p)] else 'failed')
                rows.append(f'| {g} | {p} | {why} | | | | |')
                continue
            col = lambda k, f: benchlib.cell([x[k] for x in xs], f)   # noqa: E731
            sw = sorted({x['switched'] for x in xs})
            total = col('total', f2)
            if gave_up[(g, p)]:
                total += (f'; {gave_up[(g, p)]} of {args.runs} did not converge '
                          f'in {PRECOPY_GIVE_UP_S} s')
            rows.append(f'| {g} | {p} | {total} | {col("downtime", f0)} '
                        f'| {col("blocktime", f0)} '
                        f'| {", ".join(str(s) if s else "none" for s in sw)} '
                        f'| {med([x["total"] for x in xs]) / best:.2f} |')
    body = '\n'.join(rows) + '\n\n'
    body += (f'Median (min-max) of {args.runs} interleaved runs; the `verify` '
             f'guest, {MEM}, 1 vCPU; tcp:127.0.0.1; max-bandwidth '
             f'and max-postcopy-bandwidth {BANDWIDTH >> 20} MiB/s, '
             'downtime-limit 300 ms.  "best fixed" is the shortest median '
             'total time of ferry\'s fixed policies (precopy alone and the '
             'switch after pass 1, 2 or 3) on that guest.  '
             '"switched after pass": none for a migration that converged in '
             'precopy.  x-postcopy-auto\'s reasons, from its first run:\n\n')
    for g, _ in GUESTS:
        body += f'- {g}: "{reasons.get(g, "-")}"\n'
    body += (f'\nMeasured on {benchlib.machine_line()}.  '
             '`bench/autoswitch.py --doc docs/benchmarks.md` regenerates this '
             'section.\n')
    print(body)
    if args.doc:
        benchlib.update_section(args.doc, 'autoswitch',
                                'Switching to postcopy on its own', body)


if __name__ == '__main__':
    main()
