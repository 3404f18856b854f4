#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Migration over TLS-PSK against plaintext, ferry and QEMU 7.2 with the
same credentials (one keys.psk, tls-creds-psk objects made with
object-add on both sides), in the same run.

    bench/tls.py [--runs N] [--doc docs/benchmarks.md]

Precopy: bench/migration.py's 1 GiB idle guest and a 1 GiB guest whose
pages all hold data, dirtying 50 MiB/s: total time and rate (bytes sent
over total time less setup).  Postcopy: bench/postcopy.py's 1 GiB
`latency` guest, switched at once: the guest's stall p50/p99 during
postcopy, the destination's demand-fault p50/p99 (ferry), and the push
rate.  Variants interleaved, the order turning from run to run.
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'functional'))
import benchlib  # noqa: E402
import migration as mig  # noqa: E402
import postcopy as pc  # noqa: E402
from ferrytest import QEMU, tmpdir  # noqa: E402

PRECOPY = [('idle 1 GiB', '1G', 'idle', r'^idle'),
           ('1 GiB, all data, dirtying 50 MiB/s', '1G', 'dirty rate=50 fill=1',
            r'^dirty: rate=')]
PSK_KEY = '5c1f3b8a9e0d4f7a6b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a'


def psk_setup(d):
    """The setup hook: the same tls-creds-psk on each side, then
    tls-creds."""
    def setup(qemu, sq, dq):
        for q, ep in ((sq, 'client'), (dq, 'server')):
            r = q.cmd('object-add', {'qom-type': 'tls-creds-psk', 'id': 'tls0',
                                     'dir': d, 'endpoint': ep})
            assert r == {'return': {}}, r
            r = q.cmd('migrate-set-parameters', {'tls-creds': 'tls0'})
            assert r == {'return': {}}, r
    return setup


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--runs', type=int, default=3)
    ap.add_argument('--doc')
    args = ap.parse_args()
    d = tmpdir()
    with open(os.path.join(d, 'keys.psk'), 'w') as f:
        f.write(f'qemu:{PSK_KEY}\n')
    tls = psk_setup(d)
    vmms = [False] + ([True] if QEMU else [])
    variants = [(q, t) for q in vmms for t in (False, True)]
    name = lambda q, t: f'{"QEMU 7.2" if q else "ferry"}{", TLS-PSK" if t else ""}'  # noqa: E731
    pre = {(g[0], v): [] for g in PRECOPY for v in variants}
    post = {v: [] for v in variants}
    for r in range(args.runs):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        for q, t in order:
            for g, mem, append, ready in PRECOPY:
                print(f'tls: run {r + 1}/{args.runs}, precopy, {g}, {name(q, t)}',
                      file=sys.stderr, flush=True)
                try:
                    pre[(g, (q, t))].append(mig.one_migration(
                        q, mem, append, ready, False, tls if t else None))
                except AssertionError as e:
                    print(f'  failed: {e}', file=sys.stderr, flush=True)
            print(f'tls: run {r + 1}/{args.runs}, postcopy, {name(q, t)}',
                  file=sys.stderr, flush=True)
            try:
                post[(q, t)].append(pc.one_postcopy(q, False, False, '1G',
                                                    tls if t else None))
            except AssertionError as e:
                print(f'  failed: {e}', file=sys.stderr, flush=True)

    f0 = lambda v: f'{v:.0f}'                    # noqa: E731
    f1 = lambda v: f'{v:.1f}'                    # noqa: E731
    f2 = lambda v: f'{v:.2f}'                    # noqa: E731
    med = lambda xs: benchlib.median_range(xs)[0] if xs else float('nan')  # noqa: E731
    rows = ['| precopy guest | VMM | total time (ms) | rate (GB/s) | TLS rate / plaintext |',
            '|---|---|---:|---:|---:|']
    for g, *_ in PRECOPY:
        for q, t in variants:
            rs = pre[(g, (q, t))]
            if not rs:
                rows.append(f'| {g} | {name(q, t)} | failed | | |')
                continue
            plain = med([x['rate'] for x in pre[(g, (q, False))]])
            ratio = (f'{med([x["rate"] for x in rs]) / plain * 100:.0f} %'
                     if t else '')
            rows.append(f'| {g} | {name(q, t)} '
                        f'| {benchlib.cell([x["total"] for x in rs], f0)} '
                        f'| {benchlib.cell([x["rate"] for x in rs], f2)} | {ratio} |')
    rows += ['', '| postcopy, latency guest 1 GiB | VMM | stall p50 (us) | stall p99 (us) '
             '| demand fault p50 (us) | p99 (us) | push (MiB/s) | total (s) |',
             '|---|---|---:|---:|---:|---:|---:|---:|']
    for q, t in variants:
        rs = post[(q, t)]
        if not rs:
            rows.append(f'| 1 GiB | {name(q, t)} | failed | | | | | |')
            continue
        col = lambda k, f: benchlib.cell([x[k] for x in rs], f)   # noqa: E731
        fault = ' | '.join(
            benchlib.cell(v, f0) if v else '-'
            for v in ([x[k] for x in rs if x.get(k) is not None]
                      for k in ('fault_p50', 'fault_p99')))
        rows.append(f'| 1 GiB | {name(q, t)} | {col("p50", f1)} | {col("p99", f0)} '
                    f'| {fault} | {col("push", f0)} | {col("total", f2)} |')
    body = '\n'.join(rows) + '\n\n'
    body += (f'Median (min-max) of {args.runs} interleaved runs; 1 vCPU, '
             'tcp:127.0.0.1, max-bandwidth unlimited; TLS: tls-creds-psk on '
             'both sides, the same keys.psk, GnuTLS\'s default priority '
             '(ferry puts AES-128-GCM ahead of ChaCha20 for PSK: '
             'docs/tls.md; QEMU 7.2 takes NORMAL as it is).  Precopy columns '
             'as bench/migration.py\'s, postcopy\'s as bench/postcopy.py\'s. '
             f'Measured on {benchlib.machine_line()}.  '
             '`bench/tls.py --doc docs/benchmarks.md` regenerates this '
             'section.\n')
    print(body)
    if args.doc:
        benchlib.update_section(args.doc, 'tls', 'Migration over TLS', body)


if __name__ == '__main__':
    main()
