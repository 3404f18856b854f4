#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""virsh migrate --postcopy-after-precopy under libvirt, ferry against
QEMU 7.2 as the emulator of the same two libvirt daemons, same run.

    bench/libvirt.py [--runs N] [--doc docs/benchmarks.md]

A 1 GiB `latency` guest (every page filled with data first; it writes
one word of a random page at a time and times each write) is migrated
p2p from one libvirtd to the other (tests/functional/test_libvirt.py's
two-daemon setup) with `--live --p2p --postcopy --postcopy-after-precopy`:
libvirt switches to postcopy itself after the first pass.  Figures:
libvirt's own (domjobinfo --completed on the source: total time,
downtime), and the guest's write stalls from the `virsh migrate` to the
end of the migration (its serial log, which both ends append to).
Beside them, the same migration of the same guest with ferry driven
directly over QMP, as libvirt drives it (postcopy-ram, bandwidth
unlimited, migrate-start-postcopy at MIGRATION_PASS 2), which is what
the target compares against.  For all three, "stop to run" is the
guest's own downtime: from the source's STOP event to the destination's
RESUME (QMP's timestamps; libvirt's log holds them under libvirt).
Runs alternate the three, so that a slow spell hits each.
"""
import argparse
import json
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'functional'))
import benchlib  # noqa: E402
import postcopy  # noqa: E402 (the guest's window format and quantiles)
from ferrytest import FERRY, QEMU, tmpdir  # noqa: E402
import test_libvirt  # noqa: E402
from test_libvirt import Libvirtd, need_libvirt, wait_state  # noqa: E402

MEM_MIB = 1024
DIRECT = 'ferry, direct (QMP)'


def domain_xml(emulator, serial):
    # QEMU 7.2 needs arch-capabilities off on this host; ferry takes it.
    return test_libvirt.domain_xml(
        'benchvm', serial, MEM_MIB, emulator,
        cmdline=f'latency window={postcopy.WINDOW_MS} fill=1',
        cpu="<cpu mode='host-passthrough' check='none'><feature "
            "policy='disable' name='arch-capabilities'/></cpu>")


def file_windows(lines):
    """The guest's windows in @lines: (count, max cycles, {bucket: n})."""
    return postcopy.timed_windows((1.0, line) for line in lines)


def read_lines(path):
    with open(path, errors='replace') as f:
        return f.read().splitlines()


def wait_lines(path, rx, timeout):
    deadline = time.monotonic() + timeout
    while True:
        for line in read_lines(path):
            m = re.match(rx, line)
            if m:
                return m
        assert time.monotonic() < deadline, f'no {rx} in {path}'
        time.sleep(0.2)


def jobinfo(d, name):
    out = d.virsh('domjobinfo', name, '--completed')
    return {k.strip(): v.strip() for k, _, v in
            (line.partition(':') for line in out.splitlines() if ':' in line)}


EVENT_RX = re.compile(r'QEMU_MONITOR_RECV_EVENT: .*event=(\{.*\})\s*$')


def logged_events(d, name):
    """(timestamp, event) of every QMP event @name in @d's log."""
    out = []
    with open(d.log, errors='replace') as f:
        for line in f:
            m = EVENT_RX.search(line)
            if m:
                ev = json.loads(m.group(1))     # QEMU's has spaces, ferry's not
                if ev.get('event') == name:
                    out.append(postcopy.ts(ev))
    return out


def stop_to_run(d1, d2, since):
    """ms from the source's last STOP after @since (wall clock) to the
    destination's first RESUME after it."""
    stop = [t for t in logged_events(d1, 'STOP') if t > since][-1]
    run = [t for t in logged_events(d2, 'RESUME') if t > stop][0]
    return (run - stop) * 1000


def one_direct():
    """ferry driven over QMP the way libvirt drives it (libvirt-observed.md
    7.3-7.5): no libvirt, the same guest and switch."""
    src, sq = postcopy.vm(False, '1G', False)
    dst, dq = postcopy.vm(False, '1G', True)
    try:
        caps = [{'capability': c, 'state': True}
                for c in ('events', 'postcopy-ram', 'return-path')]
        for q in (sq, dq):
            r = q.cmd('migrate-set-capabilities', {'capabilities': caps})
            assert r == {'return': {}}, r
        port = benchlib.free_port()
        r = dq.cmd('migrate-incoming', {'uri': f'tcp:127.0.0.1:{port}'})
        assert r == {'return': {}}, r
        tsc = int(src.wait_line(r'^latency: tsc_khz=(\d+)', 300).group(1))
        tsc = postcopy.HOST_TSC_KHZ or tsc
        src.wait_line(r'^latency: window=3 ', 60)
        before = len(src.lines)
        # libvirt's "unlimited"
        sq.cmd('migrate-set-parameters', {'max-bandwidth': 9223372036853727232})
        t0 = time.monotonic()
        r = sq.cmd('migrate', {'uri': f'tcp:127.0.0.1:{port}'})
        assert r == {'return': {}}, r
        while sq.event('MIGRATION_PASS', 300)['data']['pass'] < 2:
            pass
        r = sq.cmd('migrate-start-postcopy')
        assert r == {'return': {}}, r
        while True:
            st = sq.event('MIGRATION', 300)['data']['status']
            assert st not in ('failed', 'cancelled', 'postcopy-paused'), st
            if st == 'completed':
                break
        wall = time.monotonic() - t0
        info = sq.cmd('query-migrate')['return']
        stop = postcopy.ts(sq.event('STOP', 10))
        run = postcopy.ts(dq.event('RESUME', 10))
        last = max([int(m.group(1)) for m in map(postcopy.WIN_RX.match, dst.lines)
                    if m] or [0])
        dst.wait_line(rf'^latency: window={last + 2} ', 30)
        lines = src.lines[before:] + list(dst.lines)
        assert not [x for x in lines if x.startswith('FAIL')], 'guest FAIL'
        phase = file_windows(lines)
        assert phase, 'no guest window during the migration'
        hist, fast, mx = postcopy.merge(phase)
        us = lambda c: c / (tsc / 1000)               # noqa: E731
        return {'total': info['total-time'] / 1000,
                'downtime': float(info['downtime']),
                'stop_run': (run - stop) * 1000,
                'iterations': info['ram'].get('dirty-sync-count', 0),
                'wall': wall, 'requests': info['ram'].get('postcopy-requests', 0),
                'p99': us(postcopy.quantile(hist, fast, 0.99)),
                'max': us(mx) / 1000}
    finally:
        src.kill()
        dst.kill()


def one(d1, d2, emulator):
    serial = os.path.join(tmpdir(), 'serial.log')
    xml = os.path.join(tmpdir(), 'benchvm.xml')
    with open(xml, 'w') as f:
        f.write(domain_xml(emulator, serial))
    d1.virsh('define', xml)
    try:
        d1.virsh('start', 'benchvm')
        tsc = int(wait_lines(serial, r'^latency: tsc_khz=(\d+)', 300).group(1))
        tsc = postcopy.HOST_TSC_KHZ or tsc
        wait_lines(serial, r'^latency: window=3 ', 60)
        before = len(read_lines(serial))
        since = time.time()
        t0 = time.monotonic()
        d1.virsh('migrate', '--live', '--p2p', '--postcopy',
                 '--postcopy-after-precopy', '--persistent', 'benchvm', d2.uri,
                 '--migrateuri', f'tcp://127.0.0.1:{benchlib.free_port()}',
                 timeout=600)
        wall = time.monotonic() - t0
        wait_state(d2, 'running', name='benchvm')
        time.sleep(2 * postcopy.WINDOW_MS / 1000 + 0.2)  # the last window
        lines = read_lines(serial)
        assert not [x for x in lines if x.startswith('FAIL')], 'guest FAIL'
        phase = file_windows(lines[before:])
        assert phase, 'no guest window during the migration'
        hist, fast, mx = postcopy.merge(phase)
        us = lambda c: c / (tsc / 1000)               # noqa: E731
        info = jobinfo(d1, 'benchvm')
        # None if libvirt left it out (it did for ferry before ferry's
        # source said completed ahead of its cleanup).
        ms = lambda k: float(info[k].split()[0]) if k in info else None  # noqa: E731
        return {'total': ms('Time elapsed') / 1000, 'downtime': ms('Total downtime'),
                'stop_run': stop_to_run(d1, d2, since),
                'iterations': int(info.get('Iteration', 0)),
                'wall': wall, 'requests': int(info.get('Postcopy requests', 0)),
                'p99': us(postcopy.quantile(hist, fast, 0.99)),
                'max': us(mx) / 1000}
    finally:
        for d in (d1, d2):
            d.virsh('destroy', 'benchvm', check=False)
            d.virsh('undefine', 'benchvm', check=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--runs', type=int, default=3)
    ap.add_argument('--doc')
    args = ap.parse_args()
    need_libvirt()
    if not QEMU:
        sys.exit('qemu-system-x86_64 is not installed')
    variants = [('ferry', os.path.abspath(FERRY)), ('QEMU 7.2', QEMU),
                (DIRECT, None)]
    res = {name: [] for name, _ in variants}
    with Libvirtd('host1', '5a1c3d2e-7b4f-4a61-9c0d-1e2f3a4b5c61') as d1, \
         Libvirtd('host2', '9e8d7c6b-5a49-4382-b716-0f1e2d3c4b5a') as d2:
        for i in range(args.runs):
            for name, emu in variants:
                r = one(d1, d2, emu) if emu else one_direct()
                res[name].append(r)
                print(f'{name} run {i + 1}: {r}', flush=True)
    f1 = lambda v: f'{v:.1f}'                          # noqa: E731
    f0 = lambda v: f'{v:.0f}'                          # noqa: E731
    f2 = lambda v: f'{v:.2f}'                          # noqa: E731
    rows = ['| emulator | total (s) | downtime (ms) | stop to run (ms) '
            '| wall (s) | postcopy requests | stall p99 (us) | max stall (ms) |',
            '| --- | --- | --- | --- | --- | --- | --- | --- |']
    for name, _ in variants:
        rs = res[name]

        def col(k, f):
            vals = [r[k] for r in rs if r[k] is not None]
            return benchlib.cell(vals, f) if vals else 'n/a'
        rows.append(f'| {name} | {col("total", f2)} | {col("downtime", f0)} '
                    f'| {col("stop_run", f0)} | {col("wall", f2)} '
                    f'| {col("requests", f0)} '
                    f'| {col("p99", f1)} | {col("max", f1)} |')
    body = (f'{benchlib.machine_line()}.  Debian 12\'s libvirt 9.0, two daemons '
            'as two hosts (docs/libvirt.md), `virsh migrate --live --p2p '
            '--postcopy --postcopy-after-precopy` of a 1 GiB `latency` guest '
            '(fill=1), ferry and QEMU 7.2 as the emulator of the same daemons; '
            f'"{DIRECT}" is the same migration of the same guest without '
            'libvirt, ferry driven over QMP as libvirt drives it; '
            f'{args.runs} interleaved runs each; median (min-max).  Under '
            'libvirt, total and downtime are libvirt\'s (domjobinfo '
            '--completed on the source), wall is the virsh migrate; driven '
            'directly, they are query-migrate\'s total-time and downtime, and '
            'wall is from migrate to completed.  stop to run is the guest\'s '
            'downtime, the same measure for all: from the source\'s STOP event '
            'to the destination\'s RESUME.  The stalls are the guest\'s writes '
            'from the migrate to the end of the migration, precopy pass '
            'included.  `bench/libvirt.py --doc docs/benchmarks.md` regenerates '
            'this.\n\n' + '\n'.join(rows) + '\n\n')
    print(body)
    if args.doc:
        benchlib.update_section(args.doc, 'libvirt',
                                'libvirt: virsh migrate --postcopy-after-precopy',
                                body)


if __name__ == '__main__':
    main()
