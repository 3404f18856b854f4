#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Postcopy recovery (docs/postcopy.md, "Recovery"): a postcopy whose
connection breaks pauses on both sides, keeps everything, and resumes
with migrate-recover on the destination and migrate resume=true on the
source, as often as it breaks.  The verify guest goes on clean on the
destination: every page came once, as the source had it."""
import os
import socket
import time

from ferrytest import HMP, MachineOptions, Skip, run_cases
from test_migration import verify_goes_on
from test_postcopy import finish, pair, refuses_cont

SRC_STATES = ['postcopy-recover-setup', 'postcopy-recover', 'postcopy-active']
DST_STATES = ['postcopy-recover', 'postcopy-active']


def events(vm):
    """The MIGRATION statuses received so far (after a round trip)."""
    vm.qmp.cmd('query-status')
    out = [e['data']['status'] for e in vm.qmp.events
           if e['event'] == 'MIGRATION']
    vm.qmp.events[:] = [e for e in vm.qmp.events if e['event'] != 'MIGRATION']
    return out


def start_slow(src, dst, bw=8 << 20, **migrate_args):
    """Migrate and switch at once, the push slow enough that postcopy is
    still under way when the test breaks it."""
    src.m.wait_line(r'^verify: round=1 ', 120)
    src.qmp.cmd('migrate-set-parameters', {'max-bandwidth': 0,
                                           'max-postcopy-bandwidth': bw})
    r = src.qmp.cmd('migrate', {'uri': dst.listen_uri(), **migrate_args})
    assert r == {'return': {}}, r
    assert src.qmp.cmd('migrate-start-postcopy') == {'return': {}}
    src.wait_status({'postcopy-active'}, 30)
    dst.wait_status({'postcopy-active'}, 30)
    time.sleep(0.3)


def paused(src, dst, timeout=30):
    """Both sides end up in postcopy-paused, with error-desc; the source's
    guest stays stopped and cont is refused; both processes live."""
    si = src.wait_status({'postcopy-paused', 'completed', 'failed'}, timeout)
    di = dst.wait_status({'postcopy-paused', 'completed', 'failed'}, timeout)
    if si['status'] == 'completed':
        raise Skip('the migration finished before the break')
    assert si['status'] == 'postcopy-paused' and 'error-desc' in si, si
    assert di['status'] == 'postcopy-paused' and 'error-desc' in di, di
    assert src.m.proc.poll() is None and dst.m.proc.poll() is None
    assert dst.qmp.cmd('query-status')['return']['status'] == 'running'
    refuses_cont(src)
    return si, di


def recover_listen(dst, uri='tcp:127.0.0.1:0'):
    """migrate-recover on the destination; the URI it listens on."""
    r = dst.qmp.cmd('migrate-recover', {'uri': uri})
    assert r == {'return': {}}, r
    return dst.listen_uri()


def resume(src, dst, uri=None):
    """Recover and resume; both back in postcopy-active."""
    events(src), events(dst)
    uri = uri or recover_listen(dst)
    r = src.qmp.cmd('migrate', {'uri': uri, 'resume': True})
    assert r == {'return': {}}, r
    src.wait_status({'postcopy-active', 'completed'}, 30)
    dst.wait_status({'postcopy-active', 'completed'}, 30)


def pause(vm):
    r = vm.qmp.cmd('migrate-pause')
    assert r == {'return': {}}, r


def plain(opts):
    """QEMU's /postcopy/recovery/plain: migrate-pause on the source, then
    recover; the states go as QEMU 9.1's on each side."""
    preempt, = opts.extra
    src, dst = pair('1G', 2, preempt=preempt)
    start_slow(src, dst)
    events(src), events(dst)
    pause(src)
    paused(src, dst)
    assert events(src) == ['postcopy-paused']
    assert events(dst) == ['postcopy-paused']
    # Taken at the resume (libvirt sets it then), not only at the switch.
    src.qmp.cmd('migrate-set-parameters', {'max-postcopy-bandwidth': 0})
    t0 = time.monotonic()
    resume(src, dst)
    ev = events(src)
    assert ev[:3] == SRC_STATES, ev
    ev = events(dst)
    assert ev[:2] == DST_STATES, ev
    info, d = finish(src, dst, timeout=60)
    # 1 GiB at the paused 8 MiB/s would take two minutes.
    assert time.monotonic() - t0 < 60
    verify_goes_on(src, dst)


CASES = [
    ('/postcopy/recovery/plain', plain, MachineOptions(extra=[False])),
    ('/postcopy/preempt/recovery/plain', plain, MachineOptions(extra=[True])),
]

if __name__ == '__main__':
    run_cases(CASES)
