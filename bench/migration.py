#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Precopy live migration, ferry against QEMU on the same guest ELF:
total time, downtime and bytes sent, and the transfer rate against
loopback TCP measured in the same run.

    bench/migration.py [--runs N] [--doc docs/benchmarks.md]

Two guests: an idle 1 GiB one, and a 4 GiB one whose pages all hold
data and which keeps dirtying 50 MiB/s.  Same parameters on both sides
(max-bandwidth unlimited, downtime-limit 300 ms, the default), runs
interleaved so that a slow spell hits both.
"""
import argparse
import os
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'functional'))
import benchlib  # noqa: E402
from ferrytest import QEMU, QMP, Machine, MachineOptions, tmpdir  # noqa: E402

# (name, memory, guest command line, its ready line, destination
# preallocated?).  The last one shows the transfer itself: without
# prealloc both VMMs wait on the first touch of the destination's
# memory, which on this host (a VM with free page reporting) is slow.
CONFIGS = [
    ('idle 1 GiB', '1G', 'idle', r'^idle', False),
    ('4 GiB, all data, dirtying 50 MiB/s', '4G', 'dirty rate=50 fill=1',
     r'^dirty: rate=', False),
    ('4 GiB, all data, dirtying 50 MiB/s, destination preallocated', '4G',
     'dirty rate=50 fill=1', r'^dirty: rate=', True),
]
# max-bandwidth high enough that neither VMM is held back (loopback TCP
# here is a few GB/s), the same value for both.
UNLIMITED = 100 * 10**9


def loopback_gbps(nbytes=1 << 30):
    """Bulk TCP over loopback, one connection, as a migration stream."""
    ls = socket.socket()
    ls.bind(('127.0.0.1', 0))
    ls.listen(1)
    got = [0]

    def sink():
        c, _ = ls.accept()
        buf = bytearray(4 << 20)
        while True:
            n = c.recv_into(buf)
            if not n:
                break
            got[0] += n
        c.close()

    t = threading.Thread(target=sink)
    t.start()
    s = socket.create_connection(ls.getsockname())
    data = memoryview(bytearray(4 << 20))
    t0 = time.monotonic()
    for _ in range(nbytes // len(data)):
        s.sendall(data)
    s.close()
    t.join()
    ls.close()
    return got[0] / (time.monotonic() - t0) / 1e9


def first_touch_gbps(nbytes=4 << 30):
    """Writing fresh anonymous memory, one byte a page: what a destination
    pays for every page it receives unless its RAM is preallocated.  As
    much as the 4 GiB guest: memory freed lately (the last run's VMs) is
    quick to touch again, the rest is not."""
    import mmap
    m = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    t0 = time.monotonic()
    for off in range(0, nbytes, 4096):
        m[off] = 1
    rate = nbytes / (time.monotonic() - t0) / 1e9
    m.close()
    return rate


def vm(qemu, mem, append, ready, incoming=None, prealloc=None):
    """@prealloc: see benchlib.ram_backend_args."""
    d = tmpdir()
    sock = os.path.join(d, 'qmp.sock')
    extra = ['-qmp', f'unix:{sock},server=on,wait=off']
    extra += benchlib.ram_backend_args(mem, prealloc)
    if incoming:
        extra += ['-incoming', incoming]
    m = Machine(MachineOptions(mem=mem, smp=1, append=append, extra=extra,
                               qemu=qemu))
    # Preallocating 4 GiB of memory not used lately takes a while here.
    q = QMP(sock, timeout=120 if prealloc else 10)
    if not incoming:
        m.wait_line(ready, 120)
    return m, q


def one_migration(qemu, mem, append, ready, prealloc, setup=None):
    """One precopy; @setup(qemu, sq, dq), if given, runs on both QMP
    sockets before the migration (bench/tls.py: the credentials)."""
    src, sq = vm(qemu, mem, append, ready, prealloc=False if prealloc else None)
    port = benchlib.free_port()
    dst, dq = vm(qemu, mem, append, ready, incoming=f'tcp:127.0.0.1:{port}',
                 prealloc=True if prealloc else None)
    try:
        if setup:
            setup(qemu, sq, dq)
        time.sleep(0.5)         # the dirtying guest settles into its rate
        sq.cmd('migrate-set-parameters', {'max-bandwidth': UNLIMITED,
                                          'downtime-limit': 300})
        r = sq.cmd('migrate', {'uri': f'tcp:127.0.0.1:{port}'})
        assert 'return' in r, r
        deadline = time.monotonic() + 300
        while True:
            info = sq.cmd('query-migrate')['return']
            if info.get('status') in ('completed', 'failed', 'cancelled'):
                break
            assert time.monotonic() < deadline, info
            time.sleep(0.02)
        assert info['status'] == 'completed', info
        # QEMU 7.2 can say completed a moment before it has set total-time
        # and downtime (one run reported 0 ms for both): ask again.
        while info['total-time'] == 0:
            assert time.monotonic() < deadline, info
            time.sleep(0.02)
            info = sq.cmd('query-migrate')['return']
        # The guest goes on on the destination (QEMU's may still be
        # loading the last bytes when its source reports completed).
        while dq.cmd('query-status')['return']['status'] != 'running':
            assert time.monotonic() < deadline, 'destination never ran'
            time.sleep(0.02)
        return {
            'total': info['total-time'],
            'downtime': info['downtime'],
            'bytes': info['ram']['transferred'],
            'rate': info['ram']['transferred'] / max(1, info['total-time']
                                                     - info.get('setup-time', 0))
                    * 1000 / 1e9,
        }
    finally:
        src.kill()
        dst.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--runs', type=int, default=5)
    ap.add_argument('--doc')
    args = ap.parse_args()

    vmms = [False] + ([True] if QEMU else [])
    res = {(c[0], q): [] for c in CONFIGS for q in vmms}
    loop, touch = [], []
    for r in range(args.runs):
        print(f'migration: run {r + 1} of {args.runs}', file=sys.stderr)
        loop.append(loopback_gbps())
        touch.append(first_touch_gbps())
        for name, mem, append, ready, prealloc in CONFIGS:
            for q in vmms:
                res[(name, q)].append(one_migration(q, mem, append, ready,
                                                    prealloc))

    ms = lambda v: f'{v:.0f}'                    # noqa: E731
    mib = lambda v: f'{v / 2**20:.0f}'           # noqa: E731
    gbs = lambda v: f'{v:.2f}'                   # noqa: E731
    rows = ['| guest | VMM | total time (ms) | downtime (ms) | sent (MiB) '
            '| rate (GB/s) |', '|---|---|---:|---:|---:|---:|']
    ratios = []
    for name, *_ in CONFIGS:
        for q in vmms:
            rs = res[(name, q)]
            rows.append(f'| {name} | {"QEMU 7.2" if q else "ferry"} '
                        f'| {benchlib.cell([x["total"] for x in rs], ms)} '
                        f'| {benchlib.cell([x["downtime"] for x in rs], ms)} '
                        f'| {benchlib.cell([x["bytes"] for x in rs], mib)} '
                        f'| {benchlib.cell([x["rate"] for x in rs], gbs)} |')
        if QEMU:
            f = benchlib.median_range([x['total'] for x in res[(name, False)]])[0]
            q = benchlib.median_range([x['total'] for x in res[(name, True)]])[0]
            ratios.append(f'{name}: ferry / QEMU total time = {f / q:.2f}')
    lb = benchlib.median_range(loop)
    frate = [benchlib.median_range([x['rate'] for x in res[(c[0], False)]])[0]
             for c in CONFIGS[1:]]
    body = '\n'.join(rows) + '\n\n'
    body += ('Loopback TCP bulk throughput in the same run (one connection, '
             f'4 MiB writes, Python): {benchlib.cell(loop, gbs)} GB/s.  ferry\'s rate on '
             f'the 4 GiB guest is {frate[0] / lb[0] * 100:.0f} % of it, '
             f'{frate[1] / lb[0] * 100:.0f} % with the destination '
             'preallocated.  First write to fresh anonymous memory in the same '
             f'run (one byte a page, 4 GiB): {benchlib.cell(touch, gbs)} GB/s.\n\n')
    if ratios:
        body += ''.join(f'- {x}\n' for x in ratios) + '\n'
    body += (f'Median (min-max) of {args.runs} interleaved runs; 1 vCPU, '
             'tcp:127.0.0.1, max-bandwidth unlimited, downtime-limit 300 ms, '
             'no other capability.  Total time, downtime and sent bytes are '
             'what each VMM\'s query-migrate reports (total-time, downtime, '
             'ram.transferred); rate is sent bytes over total time minus '
             f'setup time.  Measured on {benchlib.machine_line()}.  '
             '`bench/migration.py --doc docs/benchmarks.md` regenerates '
             'this section.\n')
    print(body)
    if args.doc:
        benchlib.update_section(args.doc, 'migration',
                                'Precopy migration against QEMU', body)


if __name__ == '__main__':
    main()
