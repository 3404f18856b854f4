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
Runs alternate ferry and QEMU, so that a slow spell hits both.
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
import postcopy  # noqa: E402 (the guest's window format and quantiles)
from ferrytest import FERRY, QEMU, tmpdir  # noqa: E402
import test_libvirt  # noqa: E402
from test_libvirt import Libvirtd, need_libvirt, wait_state  # noqa: E402

MEM_MIB = 1024


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
        # libvirt leaves Total downtime out of some runs (ferry's p2p
        # postcopy-after-precopy here): None; the medians take the others.
        ms = lambda k: float(info[k].split()[0]) if k in info else None  # noqa: E731
        return {'total': ms('Time elapsed') / 1000, 'downtime': ms('Total downtime'),
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
    variants = [('ferry', os.path.abspath(FERRY)), ('QEMU 7.2', QEMU)]
    res = {name: [] for name, _ in variants}
    with Libvirtd('host1', '5a1c3d2e-7b4f-4a61-9c0d-1e2f3a4b5c61') as d1, \
         Libvirtd('host2', '9e8d7c6b-5a49-4382-b716-0f1e2d3c4b5a') as d2:
        for i in range(args.runs):
            for name, emu in variants:
                r = one(d1, d2, emu)
                res[name].append(r)
                print(f'{name} run {i + 1}: {r}', flush=True)
    f1 = lambda v: f'{v:.1f}'                          # noqa: E731
    f0 = lambda v: f'{v:.0f}'                          # noqa: E731
    f2 = lambda v: f'{v:.2f}'                          # noqa: E731
    rows = ['| emulator | total (s) | downtime (ms) | virsh migrate (s) '
            '| postcopy requests | stall p99 (us) | max stall (ms) |',
            '| --- | --- | --- | --- | --- | --- | --- |']
    for name, _ in variants:
        rs = res[name]
        def col(k, f):
            vals = [r[k] for r in rs if r[k] is not None]
            return benchlib.cell(vals, f) if vals else 'n/a'
        rows.append(f'| {name} | {col("total", f2)} | {col("downtime", f0)} '
                    f'| {col("wall", f2)} | {col("requests", f0)} '
                    f'| {col("p99", f1)} | {col("max", f1)} |')
    body = (f'{benchlib.machine_line()}.  Debian 12\'s libvirt 9.0, two daemons '
            'as two hosts (docs/libvirt.md), `virsh migrate --live --p2p '
            '--postcopy --postcopy-after-precopy` of a 1 GiB `latency` guest '
            '(fill=1), ferry and QEMU 7.2 as the emulator of the same daemons, '
            f'{args.runs} interleaved runs each; median (min-max).  total and '
            'downtime are libvirt\'s (domjobinfo --completed on the source; '
            'libvirt leaves the downtime out of some of ferry\'s runs, and '
            'the downtime column counts only those that have it); '
            'the stalls are the guest\'s writes from the virsh migrate to the '
            'end of the migration, precopy pass included.  `bench/libvirt.py '
            '--doc docs/benchmarks.md` regenerates this.\n\n' + '\n'.join(rows)
            + '\n\n')
    print(body)
    if args.doc:
        benchlib.update_section(args.doc, 'libvirt',
                                'libvirt: virsh migrate --postcopy-after-precopy',
                                body)


if __name__ == '__main__':
    main()
