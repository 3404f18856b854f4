#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""make demo: two ferry processes on this machine; a running `verify`
guest (it checks every page of its RAM each round) moves from one to the
other with postcopy: one precopy pass, then the switch (HMP migrate -p).
Progress while it runs, the statistics at the end, and the guest going
on, clean, on the destination."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..', 'tests', 'functional'))
from ferrytest import LIVE  # noqa: E402
from test_migration import Vm, verify_goes_on  # noqa: E402


def main():
    caps = {'capabilities': [{'capability': c, 'state': True} for c in
                             ('postcopy-ram', 'postcopy-blocktime')]}
    print('== source: ferry -m 1G -smp 1 -append verify; destination: '
          'the same with -incoming tcp:127.0.0.1:0')
    src = Vm('1G', 1)
    dst = Vm('1G', 1, incoming='tcp:127.0.0.1:0')
    try:
        for v in (src, dst):
            v.qmp.cmd('migrate-set-capabilities', caps)
        src.m.wait_line(r'^verify: round=1 ', 120)
        print('== the guest runs on the source:', src.m.lines[-1])
        uri = dst.listen_uri()
        print(f'-> migrate {uri} (postcopy after the first pass)')
        src.qmp.cmd('migrate-set-parameters', {'max-bandwidth': 0})
        src.qmp.cmd('migrate', {'uri': uri, 'x-postcopy-after-pass1': True})
        t0 = time.monotonic()
        while True:
            i = src.qmp.cmd('query-migrate')['return']
            r = i.get('ram', {})
            print(f'  {time.monotonic() - t0:5.2f} s  {i["status"]:16} '
                  f'sent {r.get("transferred", 0) >> 20:5} MiB  remaining '
                  f'{r.get("remaining", 0) >> 20:5} MiB  requests '
                  f'{r.get("postcopy-requests", 0)}')
            if i['status'] in ('completed', 'failed', 'postcopy-paused'):
                break
            time.sleep(0.25)
        d = dst.wait_status({'completed', 'failed', 'postcopy-paused'}, 60)
        print(f'== source: total {i.get("total-time")} ms, downtime '
              f'{i.get("downtime")} ms, postcopy {r.get("postcopy-bytes", 0) >> 20} '
              f'MiB on {r.get("postcopy-requests")} requests + the push')
        print(f'== destination: {d["status"]}, blocktime '
              f'{d.get("postcopy-blocktime")} ms, mean fault latency '
              f'{d.get("postcopy-latency", 0) / 1000:.0f} us, latency '
              f'histogram (power-of-two us) {d.get("postcopy-latency-dist")}')
        if i['status'] != 'completed' or d['status'] != 'completed':
            print('demo: the migration did not complete', file=sys.stderr)
            return 1
        verify_goes_on(src, dst)
        print('== the guest goes on on the destination, every page intact:',
              dst.m.lines[-1])
        return 0
    finally:
        while LIVE:
            LIVE.pop().kill()


if __name__ == '__main__':
    sys.exit(main())
