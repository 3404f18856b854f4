#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Start-up time: from process start to the test guest's first line,
ferry against QEMU on the same guest ELF and command line.

    bench/startup.py [--runs N] [--doc docs/benchmarks.md]

Runs interleave ferry and QEMU so that a slow spell hits both.
"""
import argparse
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

FERRY = os.environ.get('FERRY', 'build/system/ferry')
GUEST = os.environ.get('GUEST', 'build/tests/guest/guest.elf')
QEMU = shutil.which('qemu-system-x86_64')


def command(vmm, mem):
    common = ['-m', mem, '-smp', '1', '-kernel', GUEST, '-append', 'idle cpus=1',
              '-serial', 'stdio', '-device', 'isa-debug-exit,iobase=0xf4,iosize=4']
    if vmm == 'qemu':
        return [QEMU, '-enable-kvm', '-cpu', 'host,-arch-capabilities',
                '-display', 'none', '-monitor', 'none', '-no-reboot'] + common
    return [FERRY] + common


def first_line_ms(cmd):
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True)
    try:
        line = p.stdout.readline()
        ms = (time.monotonic() - t0) * 1000
        if not line.startswith('guest:'):
            raise RuntimeError(f'{cmd[0]}: unexpected first line {line!r}')
        return ms
    finally:
        p.kill()
        p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--runs', type=int, default=5)
    ap.add_argument('--doc')
    args = ap.parse_args()

    vmms = ['ferry'] + (['qemu'] if QEMU else [])
    sizes = ['1G', '8G']
    results = {(v, s): [] for v in vmms for s in sizes}
    for r in range(args.runs):
        print(f'startup: run {r + 1} of {args.runs}', file=sys.stderr)
        for s in sizes:
            for v in vmms:
                results[(v, s)].append(first_line_ms(command(v, s)))

    rows = ['| guest RAM | ferry (ms) | QEMU 7.2 (ms) | ferry / QEMU |',
            '|---|---:|---:|---:|']
    for s in sizes:
        f = benchlib.median_range(results[('ferry', s)])
        cell = lambda m: f'{m[0]:.0f} ({m[1]:.0f}-{m[2]:.0f})'  # noqa: E731
        if QEMU:
            q = benchlib.median_range(results[('qemu', s)])
            rows.append(f'| {s} | {cell(f)} | {cell(q)} | {f[0] / q[0]:.2f} |')
        else:
            rows.append(f'| {s} | {cell(f)} | not installed | - |')
    body = (f'Process start to the guest\'s first line (`guest: ...`), test '
            f'guest `idle`, 1 vCPU; median (min-max) of {args.runs} interleaved '
            f'runs.  Measured on {benchlib.machine_line()}.  ferry enters the '
            f'Multiboot kernel directly; QEMU first runs its BIOS, and this '
            f'host emulates real-mode and kernel-mode guest code an '
            f'instruction at a time, which is the likely cause of most of '
            f'QEMU\'s time (not measured separately).\n\n'
            + '\n'.join(rows) + '\n')
    print(body)
    if args.doc:
        benchlib.update_section(args.doc, 'startup',
                                'Start-up time (bench/startup.py)', body)


if __name__ == '__main__':
    main()
