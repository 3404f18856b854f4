#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Postcopy recovery, ferry against QEMU 7.2: how fast a silent partition
is noticed at the defaults, how fast a paused postcopy resumes, how soon
the guest runs without stalls again, the bytes a break costs, and the
guest's memory after two breaks.

    bench/recovery.py [--runs N] [--doc docs/benchmarks.md]

Each run, for each VMM in turn (interleaved): the `latency` guest
(1 GiB, every page filled first) is migrated through a relay and
switched to postcopy at once, the push held to 32 MiB/s so that postcopy
is still going; then the relay stops forwarding without closing
anything.  Noticed: the time until each side is in postcopy-paused on
its own (QEMU is given 20 s, then paused with migrate-pause on both
sides).  Resume: from migrate-recover (destination) and migrate
resume=true (source), on loopback past the relay, to postcopy-active on
both.  Clean: from the resume to the end of the guest's first window
with no access slower than 1 ms.  Bytes: the source's ram.transferred
against the same migration unbroken, run alongside.  Integrity: the
`verify` guest (512 MiB) through two breaks and recoveries, its FAIL
lines counted on the destination.
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
from ferrytest import StallRelay  # noqa: E402
from postcopy import HOST_TSC_KHZ  # noqa: E402

VARIANTS = [('ferry', False), ('QEMU 7.2', True)]
WINDOW_MS = 100
PUSH = 32 << 20
QEMU_WAIT_S = 20
WIN_RX = re.compile(r'^latency: window=(\d+) count=(\d+) .* max=(\d+)')


def vm(qemu, mem, append, incoming):
    m, q = benchlib.vm_with_qmp(qemu, mem, append, incoming)
    r = q.cmd('migrate-set-capabilities', {'capabilities': [
        {'capability': 'postcopy-ram', 'state': True},
        {'capability': 'events', 'state': True}]})
    assert r == {'return': {}}, r
    return m, q


def status(q):
    return q.cmd('query-migrate')['return'].get('status')


def wait_status(q, want, timeout):
    deadline = time.monotonic() + timeout
    while True:
        st = status(q)
        if st in want:
            return time.monotonic()
        if time.monotonic() > deadline:
            return None
        time.sleep(0.005)


def both_paused(sq, dq, timeout):
    """Seconds until each side is in postcopy-paused, None if not within."""
    t0 = time.monotonic()
    got = [None, None]
    while time.monotonic() - t0 < timeout and None in got:
        for i, q in enumerate((sq, dq)):
            if got[i] is None and status(q) == 'postcopy-paused':
                got[i] = time.monotonic() - t0
        time.sleep(0.02)
    return got


def resume(sq, dq):
    """migrate-recover and migrate resume; seconds to postcopy-active on
    both, from the first command."""
    port = benchlib.free_port()
    t0 = time.monotonic()
    wall0 = time.time()
    r = dq.cmd('migrate-recover', {'uri': f'tcp:127.0.0.1:{port}'})
    assert r == {'return': {}}, r
    r = sq.cmd('migrate', {'uri': f'tcp:127.0.0.1:{port}', 'resume': True})
    assert r == {'return': {}}, r
    ts = wait_status(sq, {'postcopy-active', 'completed'}, 30)
    td = wait_status(dq, {'postcopy-active', 'completed'}, 30)
    assert ts and td, (status(sq), status(dq))
    return wall0, max(ts, td) - t0


def finish(sq):
    assert wait_status(sq, {'completed'}, 300), sq.cmd('query-migrate')
    return sq.cmd('query-migrate')['return']['ram']['transferred']


def start(qemu, append, mem, relay_port=None):
    src, sq = vm(qemu, mem, append, False)
    dst, dq = vm(qemu, mem, append, True)
    port = benchlib.free_port()
    r = dq.cmd('migrate-incoming', {'uri': f'tcp:127.0.0.1:{port}'})
    assert r == {'return': {}}, r
    return src, sq, dst, dq, port


def one_break(qemu):
    """The latency guest through one silent partition."""
    src, sq, dst, dq, port = start(qemu, f'latency window={WINDOW_MS} fill=1', '1G')
    relay = StallRelay(f'tcp:127.0.0.1:{port}')
    try:
        tsc = int(src.wait_line(r'^latency: tsc_khz=(\d+)', 300).group(1))
        tsc = HOST_TSC_KHZ or tsc       # the guest's own is off by up to 20 %
        src.wait_line(r'^latency: window=3 ', 60)
        sq.cmd('migrate-set-parameters', {'max-bandwidth': 100 * 10**9,
                                          'max-postcopy-bandwidth': PUSH})
        assert sq.cmd('migrate', {'uri': f'tcp:127.0.0.1:{relay.port}'}) == \
            {'return': {}}
        assert sq.cmd('migrate-start-postcopy') == {'return': {}}
        assert wait_status(dq, {'postcopy-active'}, 60)
        time.sleep(1.0)
        relay.stall()
        noticed = both_paused(sq, dq, QEMU_WAIT_S if qemu else 30)
        for q, t in zip((sq, dq), noticed):
            if t is None:
                r = q.cmd('migrate-pause')
                assert r == {'return': {}}, r
        assert wait_status(sq, {'postcopy-paused'}, 30)
        assert wait_status(dq, {'postcopy-paused'}, 30)
        sq.cmd('migrate-set-parameters', {'max-postcopy-bandwidth': 0})
        wall0, resume_s = resume(sq, dq)
        # The guest's first window with no access over 1 ms, begun after
        # the resume (a window's line comes its length after its start).
        clean = None
        deadline = time.monotonic() + 60
        while clean is None and time.monotonic() < deadline:
            for t, line in zip(list(dst.times), list(dst.lines)):
                w = WIN_RX.match(line)
                if (w and t - WINDOW_MS / 1000 > wall0 and
                        int(w.group(3)) / (tsc / 1000) < 1000):
                    clean = t - wall0
                    break
            time.sleep(0.05)
        transferred = finish(sq)
        return {'noticed_src': noticed[0], 'noticed_dst': noticed[1],
                'resume': resume_s * 1000, 'clean': clean,
                'bytes': transferred}
    finally:
        relay.close()
        src.kill()
        dst.kill()


def one_unbroken(qemu):
    src, sq, dst, dq, port = start(qemu, f'latency window={WINDOW_MS} fill=1', '1G')
    try:
        src.wait_line(r'^latency: window=3 ', 300)
        sq.cmd('migrate-set-parameters', {'max-bandwidth': 100 * 10**9,
                                          'max-postcopy-bandwidth': PUSH})
        assert sq.cmd('migrate', {'uri': f'tcp:127.0.0.1:{port}'}) == \
            {'return': {}}
        assert sq.cmd('migrate-start-postcopy') == {'return': {}}
        assert wait_status(dq, {'postcopy-active'}, 60)
        time.sleep(1.0)
        sq.cmd('migrate-set-parameters', {'max-postcopy-bandwidth': 0})
        return finish(sq)
    finally:
        src.kill()
        dst.kill()


def integrity(qemu):
    """The verify guest through two breaks; its FAIL lines after."""
    src, sq, dst, dq, port = start(qemu, 'verify', '512M')
    try:
        src.wait_line(r'^verify: round=1 ', 300)
        sq.cmd('migrate-set-parameters', {'max-bandwidth': 100 * 10**9,
                                          'max-postcopy-bandwidth': 8 << 20})
        assert sq.cmd('migrate', {'uri': f'tcp:127.0.0.1:{port}'}) == \
            {'return': {}}
        assert sq.cmd('migrate-start-postcopy') == {'return': {}}
        assert wait_status(dq, {'postcopy-active'}, 60)
        for _ in range(2):
            time.sleep(1.0)
            assert sq.cmd('migrate-pause') == {'return': {}}
            assert wait_status(sq, {'postcopy-paused'}, 30)
            if not wait_status(dq, {'postcopy-paused'}, 10):
                assert dq.cmd('migrate-pause') == {'return': {}}
                assert wait_status(dq, {'postcopy-paused'}, 30)
            resume(sq, dq)
        sq.cmd('migrate-set-parameters', {'max-postcopy-bandwidth': 0})
        finish(sq)
        last = int(dst.wait_line(r'^verify: round=(\d+) ', 120).group(1))
        dst.wait_line(rf'^verify: round={last + 2} ', 120)
        return sum(1 for x in list(dst.lines) if x.startswith('FAIL'))
    finally:
        src.kill()
        dst.kill()


def fmt_s(v):
    return 'not noticed' if v is None else f'{v:.1f} s'


def table(res, runs):
    out = ['| | ferry | QEMU 7.2 |', '|---|---|---|']

    def row(name, key, fmt):
        cells = []
        for v, _ in VARIANTS:
            vals = [r[key] for r in res[v]]
            if any(x is None for x in vals):
                cells.append(f'{fmt_s(None)} in {QEMU_WAIT_S} s '
                             f'({sum(x is None for x in vals)} of {len(vals)})'
                             if all(x is None for x in vals) else
                             ', '.join(fmt_s(x) for x in vals))
            else:
                cells.append(benchlib.cell(vals, fmt))
        out.append(f'| {name} | ' + ' | '.join(cells) + ' |')

    row('silent partition noticed, source', 'noticed_src', lambda x: f'{x:.2f} s')
    row('silent partition noticed, destination', 'noticed_dst',
        lambda x: f'{x:.2f} s')
    row('resume: migrate-recover to postcopy-active', 'resume',
        lambda x: f'{x:.1f} ms')
    row('resume to the first guest window without a 1 ms stall', 'clean',
        lambda x: f'{x * 1000:.0f} ms')
    row('bytes, broken once / unbroken', 'ratio', lambda x: f'{x:.4f}')
    row('FAIL lines after two breaks (verify guest)', 'fails', lambda x: f'{x:.0f}')
    return '\n'.join(out) + '\n'


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--runs', type=int, default=3)
    ap.add_argument('--doc')
    args = ap.parse_args()
    res = {v: [] for v, _ in VARIANTS}
    for run in range(args.runs):
        for name, qemu in VARIANTS:
            r = one_break(qemu)
            r['ratio'] = r['bytes'] / one_unbroken(qemu)
            r['fails'] = integrity(qemu)
            res[name].append(r)
            print(f'run {run + 1} {name}: {r}', flush=True)
    body = (f'Median (min-max) of {args.runs} interleaved runs; '
            f'{benchlib.machine_line()}.  `bench/recovery.py` (its docstring '
            f'says what each row measures) regenerates this section.\n\n'
            + table(res, args.runs))
    print(body)
    if args.doc:
        benchlib.update_section(args.doc, 'recovery', 'Postcopy recovery', body)


if __name__ == '__main__':
    main()
