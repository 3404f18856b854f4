#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Background snapshots (background-snapshot), mapped-ram files and
restore on demand (docs/snapshot.md), with the verify guest: a snapshot
taken while the guest rewrites its memory restores to a guest that goes
on from the snapshot's moment with every page right."""

import os
import re
import struct
import time

from ferrytest import (HMP, HugePages, MachineOptions, Skip, run_cases,
                       tmpdir)
from test_migration import Vm, backend_args

MEMFD = 'memory-backend-memfd,size=512M'
MEMFD_HUGE = 'memory-backend-memfd,size=512M,hugetlb=on,hugetlbsize=2M'
PM_UFFD_WP = 1 << 57            # /proc/PID/pagemap: the PTE is uffd-wp


def caps(q, **on):
    r = q.cmd('migrate-set-capabilities', {'capabilities': [
        {'capability': k.replace('_', '-'), 'state': v} for k, v in on.items()]})
    return r


def take(src, path, mapped, bandwidth=0, uring=False, direct=False):
    """A background snapshot of running @src into @path; returns the
    source's last verify round before it began and its info at the end.
    @uring: written through io_uring (x-io-uring); @direct: direct-io."""
    q = src.qmp
    assert q.cmd('migrate-set-parameters', {'x-io-uring': uring,
                                            'direct-io': direct}) == \
        {'return': {}}
    assert caps(q, background_snapshot=True, mapped_ram=mapped) == \
        {'return': {}}
    q.cmd('migrate-set-parameters', {'max-bandwidth': bandwidth})
    q.cmd('query-status')
    q.events.clear()
    before = src.last_round()
    assert q.cmd('migrate', {'uri': f'file:{path}'}) == {'return': {}}
    info = src.wait_status({'completed', 'failed', 'cancelled'}, 300)
    assert info['status'] == 'completed', info
    # Stopped only to take the device state and protect RAM, then running.
    seen = []
    while 'completed' not in seen:
        seen.append(q.event('MIGRATION', 10)['data']['status'])
    assert seen == ['setup', 'active', 'completed'], seen
    q.event('STOP')
    q.event('RESUME')
    assert q.cmd('query-status')['return']['status'] == 'running'
    assert info['ram']['remaining'] == 0 and info['downtime'] >= 0, info
    return before, info


def restore(mem, extra, path, mapped, lazy, exit_on_error=True, smp=1,
            uring=False, append='verify'):
    """A new process loading @path, as libvirt would (-incoming defer);
    @uring: its file I/O through io_uring (x-io-uring)."""
    dst = Vm(mem, smp, append=append, incoming='defer', extra=extra)
    if uring:
        assert dst.qmp.cmd('migrate-set-parameters', {'x-io-uring': True}) == \
            {'return': {}}
    c = {'mapped_ram': mapped}
    if lazy:
        c['postcopy_ram'] = True
    assert caps(dst.qmp, **c) == {'return': {}}
    assert dst.qmp.cmd('migrate-incoming', {
        'uri': f'file:{path}', 'exit-on-error': exit_on_error}) == {'return': {}}
    return dst


def syscw(pid):
    """The write system calls process @pid has made (/proc/PID/io)."""
    with open(f'/proc/{pid}/io') as f:
        return int(next(x for x in f if x.startswith('syscw:')).split()[1])


def snapshot_restore(opts):
    """@extra: backend ('anon', 'memfd', 'hugetlb'), then 'stream' (records
    in address and fault order), 'eager' or 'lazy' (mapped-ram, loaded at
    once or on demand; '-uring': written and read through io_uring;
    '-direct': written with direct-io).  The snapshot is slowed to 128 MiB/s so that the
    source's guest writes every page meanwhile: the restored guest must
    start from the round in progress at the snapshot, not a later one."""
    backend, mode = opts.extra
    uring = mode.endswith('-uring')
    direct = mode.endswith('-direct')
    mode = mode.removesuffix('-uring').removesuffix('-direct')
    mapped = mode != 'stream'
    obj = {'anon': None, 'memfd': MEMFD, 'hugetlb': MEMFD_HUGE}[backend]
    extra = backend_args(obj) if obj else []
    mem = None if obj else '512M'
    path = os.path.join(tmpdir(), 'snap')
    with HugePages(256) if backend == 'hugetlb' else _nothing():
        src = Vm(mem, 1, extra=extra)
        try:
            src.m.wait_line(r'^verify: round=1 ', 120)
            writes = syscw(src.m.proc.pid)
            before, info = take(src, path, mapped, 128 << 20, uring, direct)
            writes = syscw(src.m.proc.pid) - writes
            if direct:
                # The guest writes in address order ahead of the scan:
                # the copies of its pages go out in runs, not one write a
                # page (with direct-io each waits for the disk; one a
                # page made 125,484 write calls here, 11 s).
                assert writes < 8000, f'{writes} writes for 512 MiB'
            # The source went on meanwhile, and goes on, intact.
            src.m.wait_line(rf'^verify: round={before + 3} ', 120)
            assert not [x for x in src.m.lines if 'FAIL' in x]
        finally:
            src.close()
        size = os.stat(path).st_size
        if mapped:
            # One slot per page (the guest wrote every page) and a header.
            assert 512 << 20 <= size <= (512 << 20) + (2 << 20), size
        dst = restore(mem, extra, path, mapped, mode == 'lazy', uring=uring)
        try:
            if mode == 'lazy':
                dst.wait_status({'postcopy-active', 'completed'}, 60)
            info = dst.wait_status({'completed', 'failed'}, 120)
            assert info['status'] == 'completed', info
            first = int(dst.m.wait_line(r'^verify: round=(\d+) ', 120).group(1))
            assert before < first <= before + 2, (before, first)
            for r in range(first + 1, first + 3):
                dst.m.wait_line(rf'^verify: round={r} ', 120)
            assert dst.qmp.cmd('query-status')['return']['status'] == 'running'
        finally:
            dst.close()


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def guest_ram(pid, size):
    """The start of @pid's mapping of @size bytes (guest RAM)."""
    with open(f'/proc/{pid}/maps') as f:
        for line in f:
            a, b = (int(x, 16) for x in line.split()[0].split('-'))
            if b - a == size:
                return a
    raise AssertionError(f'no mapping of {size} bytes in {pid}')


def wp_pages(pid, start, size):
    """How many pages of [start, start + size) are still uffd-wp."""
    n = 0
    with open(f'/proc/{pid}/pagemap', 'rb') as f:
        f.seek(start // 4096 * 8)
        left = size // 4096
        while left:
            chunk = f.read(min(left, 65536) * 8)
            for (e,) in struct.iter_unpack('<Q', chunk):
                n += bool(e & PM_UFFD_WP)
            left -= len(chunk) // 8
    return n


def cancel(opts):
    """migrate_cancel during a snapshot: cancelled, the guest running with
    no page left write-protected (closing the userfaultfd would leave the
    PTE bits), its memory intact, and a second snapshot works."""
    d = tmpdir()
    src = Vm('512M', 1)
    try:
        q = src.qmp
        src.m.wait_line(r'^verify: round=1 ', 120)
        assert caps(q, background_snapshot=True, mapped_ram=True) == \
            {'return': {}}
        q.cmd('migrate-set-parameters', {'max-bandwidth': 16 << 20})
        assert q.cmd('migrate', {'uri': f'file:{d}/a'}) == {'return': {}}
        src.wait_status({'active'}, 30)
        time.sleep(0.5)
        start = guest_ram(src.m.proc.pid, 512 << 20)
        assert wp_pages(src.m.proc.pid, start, 512 << 20) > 0
        assert q.cmd('migrate_cancel') == {'return': {}}
        info = src.wait_status({'cancelled', 'failed', 'completed'}, 30)
        assert info['status'] == 'cancelled', info
        assert q.cmd('query-status')['return']['status'] == 'running'
        assert wp_pages(src.m.proc.pid, start, 512 << 20) == 0
        r = src.last_round()
        src.m.wait_line(rf'^verify: round={r + 2} ', 120)
        q.cmd('migrate-set-parameters', {'max-bandwidth': 0})
        assert q.cmd('migrate', {'uri': f'file:{d}/b'}) == {'return': {}}
        assert src.wait_status({'completed', 'failed'}, 60)['status'] == \
            'completed'
        assert not [x for x in src.m.lines if 'FAIL' in x]
    finally:
        src.close()


def big(opts):
    """A 4 GiB guest (an eighth of it written, all over it: the file's
    offsets pass 4 GiB): snapshot at full speed, restored on demand."""
    path = os.path.join(tmpdir(), 'snap')
    append = 'verify sparse=8'
    src = Vm('4G', 2, append=append)
    try:
        src.m.wait_line(r'^verify: round=1 ', 300)
        before, info = take(src, path, True)
    finally:
        src.close()
    dst = restore('4G', [], path, True, True, exit_on_error=False, smp=2,
                  append=append)
    try:
        info = dst.wait_status({'completed', 'failed'}, 300)
        assert info['status'] == 'completed', info
        first = int(dst.m.wait_line(r'^verify: round=(\d+) ', 300).group(1))
        assert before < first <= before + 2, (before, first)
        dst.m.wait_line(rf'^verify: round={first + 1} ', 300)
    finally:
        dst.close()


def precopy_mapped(opts):
    """A precopy `migrate file:` of a running guest with mapped-ram: the
    passes rewrite each page's slot, so the file stays RAM-sized however
    many passes there are (the stream format grows with every resend);
    with direct-io too; then an eager restore goes on from the save."""
    from test_migration import verify_goes_on
    d = tmpdir()
    for direct in (False, True):
        path = os.path.join(d, f'vm-{direct}')
        src = Vm('512M', 1)
        dst = None
        try:
            q = src.qmp
            src.m.wait_line(r'^verify: round=1 ', 120)
            assert caps(q, mapped_ram=True) == {'return': {}}
            # Slow enough that the guest rewrites its memory during the
            # first pass, which then goes again with the guest stopped
            # (the downtime allowed is long: the verify guest rewrites
            # everything faster than that).
            q.cmd('migrate-set-parameters', {'max-bandwidth': 256 << 20,
                                             'downtime-limit': 5000,
                                             'direct-io': direct})
            assert q.cmd('migrate', {'uri': f'file:{path}'}) == {'return': {}}
            info = src.wait_status({'completed', 'failed'}, 120)
            assert info['status'] == 'completed', info
            assert info['ram']['dirty-sync-count'] >= 2, info
            assert info['ram']['normal-bytes'] > 512 << 20, info  # resent
            size = os.stat(path).st_size
            assert 512 << 20 <= size <= (512 << 20) + (2 << 20), size
            dst = restore('512M', [], path, True, False)
            assert dst.wait_status({'completed', 'failed'})['status'] == \
                'completed'
            verify_goes_on(src, dst)
        finally:
            src.close()
            if dst:
                dst.close()


def read_error(opts):
    """A page that cannot be read once the guest runs (the file cut under
    a restore on demand) is never placed as zeros: the guest stops in
    io-error and the migration fails saying why."""
    path = os.path.join(tmpdir(), 'snap')
    src = Vm('1G', 1)
    try:
        src.m.wait_line(r'^verify: round=1 ', 300)
        take(src, path, True)
    finally:
        src.close()
    size = os.stat(path).st_size
    dst = restore('1G', [], path, True, True, exit_on_error=False)
    try:
        dst.qmp.event('RESUME', 60)
        os.truncate(path, size // 2)
        info = dst.wait_status({'failed', 'completed'}, 120)
        assert info['status'] == 'failed', info
        assert 'the file ends before them' in info['error-desc'], info
        dst.qmp.event('STOP', 30)
        assert dst.qmp.cmd('query-status')['return']['status'] == 'io-error'
        assert not [x for x in dst.m.lines if 'FAIL' in x], dst.m.lines
    finally:
        dst.close()


def bad_files(opts):
    """Files that are not whole, or not mapped-ram, or not ferry's, are
    refused with what is wrong before any guest runs."""
    d = tmpdir()
    good = os.path.join(d, 'good')
    src = Vm('256M', 1)
    try:
        src.m.wait_line(r'^verify: round=1 ', 120)
        take(src, good, True)
    finally:
        src.close()
    data = open(good, 'rb').read()

    def refused(name, content, want, mapped=True, lazy=True):
        p = os.path.join(d, name)
        with open(p, 'wb') as f:
            f.write(content)
        dst = restore('256M', [], p, mapped, lazy, exit_on_error=False)
        try:
            try:
                info = dst.wait_status({'failed', 'completed'}, 60)
            except OSError:
                raise AssertionError(f'{name}: the destination died: '
                                     f'{dst.m.lines[-5:]}')
            assert info['status'] == 'failed', (name, info)
            assert re.search(want, info['error-desc']), (name, info)
            assert dst.qmp.cmd('query-status')['return']['status'] == \
                'inmigrate', name
            assert not [x for x in dst.m.lines if x.startswith('verify:')]
        finally:
            dst.close()

    refused('truncated', data[:len(data) // 2],
            r'^mapped-ram: the file is truncated: ')
    refused('no-devices', data[:len(data) - 64],
            r'the migration stream ended early')
    # The record after the RAM block: type 0x08, then three offsets.
    at = data.index(b'\x08', 25 + 1 + 1 + len('pc.ram') + 16)
    bad = bytearray(data)
    bad[at + 9:at + 17] = struct.pack('<Q', 12)     # pages inside the bitmap
    refused('layout', bytes(bad), r"^mapped-ram: the file's layout is wrong: ")
    bad = bytearray(data)
    bad[0] ^= 0xff
    refused('magic', bytes(bad), r'not a ferry migration')
    refused('no-capability', data, r'set the mapped-ram capability',
            mapped=False, lazy=False)


def qemu_file(opts):
    """A file QEMU 7.2 saved (exec:, as QEMU 7.2 has no file: and no
    mapped-ram) is refused with a clear error, as a foreign stream."""
    import shutil
    import subprocess
    qemu = shutil.which('qemu-system-x86_64')
    if not qemu:
        raise Skip('qemu-system-x86_64 is not installed')
    d = tmpdir()
    path = os.path.join(d, 'qemu.state')
    sock = os.path.join(d, 'qmp.sock')
    p = subprocess.Popen([qemu, '-enable-kvm', '-cpu', 'host,-arch-capabilities',
                          '-display', 'none', '-m', '128M', '-kernel',
                          os.environ['GUEST'], '-append', 'idle',
                          '-qmp', f'unix:{sock},server=on,wait=off'],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        from ferrytest import QMP
        deadline = time.monotonic() + 30
        while not os.path.exists(sock):
            assert time.monotonic() < deadline and p.poll() is None
            time.sleep(0.05)
        q = QMP(sock)
        q.cmd('stop')
        assert q.cmd('migrate', {'uri': f'exec:cat > {path}'}) == {'return': {}}
        while q.cmd('query-migrate')['return'].get('status') != 'completed':
            time.sleep(0.05)
    finally:
        p.kill()
        p.wait()
    dst = restore('128M', [], path, True, True, exit_on_error=False)
    try:
        info = dst.wait_status({'failed', 'completed'}, 60)
        assert info['status'] == 'failed', info
        assert 'not a ferry migration' in info['error-desc'], info
    finally:
        dst.close()


def rules(opts):
    """QEMU's rules and errors for the capabilities, HMP's commands, and
    the guest's run state through a snapshot of a paused guest."""
    d = tmpdir()
    hsock = os.path.join(d, 'hmp.sock')
    v = Vm('128M', 1, append='idle',
           extra=['-monitor', f'unix:{hsock},server=on,wait=off'])
    try:
        q = v.qmp
        for other in ('postcopy-ram', 'return-path', 'pause-before-switchover',
                      'auto-converge'):
            r = q.cmd('migrate-set-capabilities', {'capabilities': [
                {'capability': 'background-snapshot', 'state': True},
                {'capability': other, 'state': True}]})
            assert r['error']['desc'] == \
                f'Background-snapshot is not compatible with {other}', r
        r = caps(q, mapped_ram=True, postcopy_ram=True)
        assert r['error']['desc'] == \
            'Mapped-ram migration is incompatible with postcopy', r
        assert caps(q, mapped_ram=True) == {'return': {}}
        r = q.cmd('migrate', {'uri': 'tcp:127.0.0.1:1'})
        assert r['error']['desc'] == \
            'Migration requires seekable transport (e.g. file)', r
        assert caps(q, mapped_ram=False, background_snapshot=True) == \
            {'return': {}}
        r = q.cmd('migrate', {'uri': 'tcp:127.0.0.1:1'})
        assert 'not to a running destination' in r['error']['desc'], r
        # HMP, with exec: (records, no mapped-ram), of a paused guest.
        run = HMP(hsock).run
        assert 'background-snapshot: on\n' in run('info migrate_capabilities')
        assert run('migrate_set_parameter max-bandwidth 0') == ''
        assert run('stop') == ''
        assert run(f'migrate -d "exec:cat > {d}/x"') == ''
        v.wait_status({'completed', 'failed'})
        assert run('info status') == 'VM status: paused\n'
        info = run('info migrate')
        assert info.startswith('Migration status: completed\n'), info
    finally:
        v.close()
    dst = Vm('128M', 1, append='idle', incoming=f'exec:cat {d}/x')
    try:
        assert dst.wait_status({'completed', 'failed'})['status'] == 'completed'
        assert dst.qmp.cmd('query-status')['return']['status'] == 'paused'
    finally:
        dst.close()


CASES = [
    ('/snapshot/anon/stream', snapshot_restore, MachineOptions(extra=('anon', 'stream'))),
    ('/snapshot/anon/eager', snapshot_restore, MachineOptions(extra=('anon', 'eager'))),
    ('/snapshot/anon/lazy', snapshot_restore, MachineOptions(extra=('anon', 'lazy'))),
    ('/snapshot/anon/eager-uring', snapshot_restore,
     MachineOptions(extra=('anon', 'eager-uring'))),
    ('/snapshot/anon/lazy-uring', snapshot_restore,
     MachineOptions(extra=('anon', 'lazy-uring'))),
    ('/snapshot/anon/eager-direct', snapshot_restore,
     MachineOptions(extra=('anon', 'eager-direct'))),
    ('/snapshot/memfd/stream', snapshot_restore, MachineOptions(extra=('memfd', 'stream'))),
    ('/snapshot/memfd/lazy', snapshot_restore, MachineOptions(extra=('memfd', 'lazy'))),
    ('/snapshot/hugetlb-2M/eager', snapshot_restore,
     MachineOptions(extra=('hugetlb', 'eager'))),
    ('/snapshot/hugetlb-2M/lazy', snapshot_restore,
     MachineOptions(extra=('hugetlb', 'lazy'))),
    ('/snapshot/cancel', cancel, MachineOptions()),
    ('/snapshot/4G-lazy', big, MachineOptions()),
    ('/snapshot/bad-files', bad_files, MachineOptions()),
    ('/snapshot/read-error', read_error, MachineOptions()),
    ('/snapshot/precopy-mapped-ram', precopy_mapped, MachineOptions()),
    ('/snapshot/qemu-file', qemu_file, MachineOptions()),
    ('/snapshot/rules', rules, MachineOptions()),
]

if __name__ == '__main__':
    run_cases(CASES)
