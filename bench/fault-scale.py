#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Demand faults as vCPUs grow: one userfaultfd against one per range of
guest RAM (x-postcopy-fault-threads), x MISSING faults with UFFDIO_COPY
against MINOR faults with UFFDIO_CONTINUE (x-postcopy-minor-faults, on
memfd and hugetlb), each memory type, against plain faults without
migration (the ceiling) and QEMU 7.2 in the same run.

    bench/fault-scale.py [--runs N] [--vcpus 1,2,4,8,16] [--mem 256M]
                         [--doc docs/benchmarks.md] [--section NAME]

The guest is `verify split=1`: each vCPU rewrites its own contiguous part
of memory as fast as it can (the kernel's demand_paging_test shape).  It
is migrated with `migrate -p -n`: the first pass sends every page, the
switch comes after it, and from then on a page comes only when a vCPU
faults on it, so every page the guest wrote during the first pass is a
demand fault.  Figures: host pages demanded per second over the whole
postcopy phase (the destination's postcopy-active to completed), per
vCPU, and the destination's fault latency p50/p99.  QEMU 7.2 has no
demand-only mode: it runs with max-postcopy-bandwidth at 1 byte/s, so
that its background push sends next to nothing.  The ceiling is the same
guest's round 0 on a fresh machine: every page written for the first
time, an ordinary fault each.  Runs are interleaved.  The same script
runs unchanged on a larger host (give --doc a section of its own with
--section).
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
from ferrytest import (QEMU, HugePages, Machine, MachineOptions,  # noqa: E402
                       tmpdir)

MEMS = ['anon', 'memfd', 'hugetlb']
ROUND_RX = re.compile(r'^verify: round=0 pages=(\d+) cpus=\d+ ms=(\d+)')


def backend(mem, size):
    if mem == 'anon':
        return []
    obj = f'memory-backend-memfd,id=m,size={size}'
    if mem == 'hugetlb':
        obj += ',hugetlb=on,hugetlbsize=2M'
    return ['-object', obj, '-machine', 'memory-backend=m']


def vm(qemu, mem, size, smp, incoming, rounds=0):
    sock = os.path.join(tmpdir(), 'qmp.sock')
    args = ['-qmp', f'unix:{sock},server=on,wait=off'] + backend(mem, size)
    if incoming:
        args += ['-incoming', 'defer']
    append = f'verify split=1 cpus={smp}' + (f' rounds={rounds}' if rounds else '')
    if mem == 'hugetlb':
        wait_hugepages(size)
    m = Machine(MachineOptions(mem=None if mem != 'anon' else size, smp=smp,
                               extra=args, qemu=qemu, append=append))
    return m, benchlib.wait_qmp(m, sock)


def wait_hugepages(size):
    """Wait for the pool to hold @size of free 2 MiB pages: the pages of
    a machine just ended can come back after its process is reaped."""
    need = int(size.rstrip('MG')) * (1024 if size.endswith('G') else 1) // 2
    path = '/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages'
    deadline = time.monotonic() + 10
    while True:
        free = int(open(path).read())
        if free >= need:
            return
        assert time.monotonic() < deadline, \
            f'{free} free 2 MiB pages after 10 s, {need} needed'
        time.sleep(0.05)


def ceiling(mem, size, smp):
    """Round 0 on a fresh machine: pages per second, every page a first
    touch."""
    m, q = vm(False, mem, size, smp, False, rounds=1)
    try:
        g = m.wait_line(ROUND_RX, 300)
        pages, ms = int(g.group(1)), max(1, int(g.group(2)))
        hp = 512 if mem == 'hugetlb' else 1
        return {'pps': pages / hp / (ms / 1000)}
    finally:
        m.kill()


def demand(qemu, mem, size, smp, threads, minor=False):
    """One migrate -p -n: demand pages per second after the switch."""
    src = dst = None
    try:
        # Both inside: a destination that fails to start must not leave
        # the source running, holding memory and CPUs from the next rows.
        src, sq = vm(qemu, mem, size, smp, False)
        dst, dq = vm(qemu, mem, size, smp, True)
        caps = [{'capability': 'postcopy-ram', 'state': True},
                {'capability': 'events', 'state': True}]
        if not qemu:
            caps.append({'capability': 'postcopy-blocktime', 'state': True})
        for q in (sq, dq):
            r = q.cmd('migrate-set-capabilities', {'capabilities': caps})
            assert r == {'return': {}}, r
        if not qemu:
            r = dq.cmd('migrate-set-parameters',
                       {'x-postcopy-fault-threads': threads,
                        'x-postcopy-minor-faults': minor})
            assert r == {'return': {}}, r
        port = benchlib.free_port()
        r = dq.cmd('migrate-incoming', {'uri': f'tcp:127.0.0.1:{port}'})
        assert r == {'return': {}}, r
        src.wait_line(r'^verify: round=1 ', 300)
        r = sq.cmd('migrate-set-parameters', {'max-bandwidth': 100 * 10**9})
        assert r == {'return': {}}, r
        uri = f'tcp:127.0.0.1:{port}'
        if qemu:
            # No demand-only mode: the push at 1 byte/s, the switch as
            # soon as the first pass is over (migrate -p is ferry's).
            r = sq.cmd('migrate-set-parameters', {'max-postcopy-bandwidth': 1})
            assert r == {'return': {}}, r
            r = sq.cmd('migrate', {'uri': uri})
            assert r == {'return': {}}, r
            sq.event('MIGRATION_PASS', 60)
            while sq.cmd('query-migrate')['return'].get('ram', {}).get(
                    'dirty-sync-count', 0) < 2:
                time.sleep(0.005)
            r = sq.cmd('migrate-start-postcopy')
            assert r == {'return': {}}, r
        else:
            r = sq.cmd('migrate', {'uri': uri, 'x-postcopy-after-pass1': True,
                                   'x-postcopy-no-push': True})
            assert r == {'return': {}}, r
        t0 = t1 = None
        deadline = time.monotonic() + 600
        while t1 is None:
            ev = dq.event('MIGRATION', max(1, deadline - time.monotonic()))
            st = ev['data']['status']
            if st == 'postcopy-active':
                t0 = benchlib.event_time(ev)
            elif st == 'completed':
                t1 = benchlib.event_time(ev)
            elif st in ('failed', 'postcopy-paused'):
                raise AssertionError(f'destination: {st}')
        info = sq.cmd('query-migrate')['return']
        while info['status'] != 'completed':
            assert info['status'] not in ('failed', 'postcopy-paused'), info
            time.sleep(0.05)
            info = sq.cmd('query-migrate')['return']
        assert t0 is not None, 'no postcopy-active on the destination'
        reqs = info['ram'].get('postcopy-requests', 0)
        d = dq.cmd('query-migrate')['return']
        pct = d.get('x-postcopy-latency-percentiles') or {}
        out = {'pps': reqs / max(1e-3, t1 - t0), 'requests': reqs,
               'seconds': t1 - t0}
        if pct.get('p50'):
            out['p50'] = pct['p50'] / 1000
            out['p99'] = pct['p99'] / 1000
        # The guest goes on, clean, after every run.
        dst.wait_line(r'^verify: round=\d+ ', 120)
        assert not any(x.startswith('FAIL') for x in list(dst.lines)), dst.lines
        return out
    finally:
        for m in (src, dst):
            if m:
                m.kill()


def variants(vcpus, with_qemu):
    out = []
    for n in vcpus:
        for mem in MEMS:
            out.append(('plain faults', mem, n, None))
            out.append(('ferry, one uffd', mem, n, 1))
            out.append(('ferry, sharded', mem, n, n))
            if mem != 'anon':
                out.append(('ferry, one uffd, MINOR', mem, n, 1))
                out.append(('ferry, sharded, MINOR', mem, n, n))
        if with_qemu:
            out.append(('QEMU 7.2', 'anon', n, None))
    return out


def report(res, vs, runs, args):
    fmt = lambda v: f'{v:,.0f}'                        # noqa: E731
    us = lambda v: f'{v:.0f}'                          # noqa: E731
    lines = [f'{benchlib.machine_line()}; guest RAM {args.mem}, '
             f'`verify split=1`, `migrate -p -n`; median (min-max) of {runs} '
             'interleaved runs.  Pages are host pages (2 MiB for hugetlb); '
             'per vCPU is the total over the vCPU count.  vCPU counts above '
             f'the host\'s {os.cpu_count()} CPUs are oversubscribed: the '
             'vCPUs, the fault threads and the source share the CPUs.\n',
             '| vCPUs | memory | variant | pages/s | per vCPU | fault p50 us | '
             'fault p99 us | runs |', '|---:|---|---|---:|---:|---:|---:|---:|']
    for name, mem, n, _ in vs:
        xs = res[(name, mem, n)]
        if not xs:
            lines.append(f'| {n} | {mem} | {name} | failed | | | | 0 |')
            continue
        pps = [x['pps'] for x in xs]
        per = [p / n for p in pps]
        p50 = [x['p50'] for x in xs if 'p50' in x]
        p99 = [x['p99'] for x in xs if 'p99' in x]
        lines.append(f'| {n} | {mem} | {name} | {benchlib.cell(pps, fmt)} | '
                     f'{benchlib.cell(per, fmt)} | '
                     f'{benchlib.cell(p50, us) if p50 else "-"} | '
                     f'{benchlib.cell(p99, us) if p99 else "-"} | {len(xs)} |')
    body = '\n'.join(lines) + '\n\n'
    print(body)
    if args.doc:
        benchlib.update_section(args.doc, args.section,
                                args.title, body)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--runs', type=int, default=3)
    ap.add_argument('--vcpus', default='1,2,4,8,16')
    ap.add_argument('--mem', default='256M')
    ap.add_argument('--mems', default=','.join(MEMS))
    ap.add_argument('--doc')
    ap.add_argument('--section', default='fault-scale')
    ap.add_argument('--title', default='Demand faults as vCPUs grow')
    args = ap.parse_args()
    MEMS[:] = args.mems.split(',')
    vcpus = [int(x) for x in args.vcpus.split(',')]
    vs = variants(vcpus, bool(QEMU))
    res = {(v[0], v[1], v[2]): [] for v in vs}
    size_mib = int(args.mem.rstrip('MG')) * (1024 if args.mem.endswith('G') else 1)
    with HugePages(2 * size_mib // 2) if 'hugetlb' in MEMS else \
            open(os.devnull) as _:
        for r in range(args.runs):
            for name, mem, n, threads in vs:
                print(f'fault-scale: run {r + 1}/{args.runs}, {n} vCPUs, {mem}, '
                      f'{name}', file=sys.stderr, flush=True)
                try:
                    if name == 'plain faults':
                        x = ceiling(mem, args.mem, n)
                    else:
                        x = demand(name.startswith('QEMU'), mem, args.mem, n,
                                   threads, name.endswith('MINOR'))
                except AssertionError as e:     # say so, and go on
                    print(f'  failed: {e}', file=sys.stderr, flush=True)
                    continue
                print('  ' + ' '.join(f'{k}={v:.3g}' for k, v in x.items()),
                      file=sys.stderr, flush=True)
                res[(name, mem, n)].append(x)
            report(res, vs, r + 1, args)


if __name__ == '__main__':
    main()
