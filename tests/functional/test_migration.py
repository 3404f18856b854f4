#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Precopy live migration between real ferry processes.  The verify guest
must go on without a FAIL line on the destination: every page arrived,
and none stale."""
import contextlib
import json
import os
import re
import signal
import socket
import struct
import time

from ferrytest import (HMP, HugePages, Machine, MachineOptions, QMP, Relay,
                       Skip, SyscallHeld, run_cases, thread_id, tmpdir)

RAM_MEMBERS = {'transferred', 'remaining', 'total', 'duplicate', 'normal',
               'normal-bytes', 'dirty-pages-rate', 'mbps', 'dirty-sync-count',
               'postcopy-requests', 'page-size', 'multifd-bytes',
               'pages-per-second', 'precopy-bytes', 'downtime-bytes',
               'postcopy-bytes', 'dirty-sync-missed-zero-copy'}


class Vm:
    """A ferry process with a QMP socket; the source or a destination."""

    def __init__(self, mem, smp, append='verify', incoming=None, extra=()):
        self.dir = tmpdir()
        self.sock = os.path.join(self.dir, 'qmp.sock')
        args = ['-qmp', f'unix:{self.sock},server=on,wait=off'] + list(extra)
        if incoming:
            args += ['-incoming', incoming]
        self.m = Machine(MachineOptions(mem=mem, smp=smp,
                                        append=f'{append} cpus={smp}',
                                        extra=args))
        self.qmp = QMP(self.sock)
        self.qmp.cmd('migrate-set-capabilities', {'capabilities': [
            {'capability': 'events', 'state': True}]})

    def listen_uri(self):
        """The URI a destination listens on (its real port)."""
        r = self.qmp.cmd('query-migrate')['return']
        a = r['socket-address'][0]
        if a['type'] == 'unix':
            return f'unix:{a["path"]}'
        host = f'[{a["host"]}]' if ':' in a['host'] else a['host']
        return f'tcp:{host}:{a["port"]}'

    def wait_status(self, want, timeout=120):
        deadline = time.monotonic() + timeout
        while True:
            r = self.qmp.cmd('query-migrate')['return']
            if r.get('status') in want:
                return r
            assert time.monotonic() < deadline, f'migration stuck: {r}'
            time.sleep(0.05)

    def last_round(self):
        rounds = [int(m.group(1)) for m in
                  (re.match(r'^verify: round=(\d+)', l) for l in self.m.lines) if m]
        return rounds[-1] if rounds else -1

    def close(self):
        self.m.kill()


def migrate(src, dst, params=None):
    """Migrate @src to @dst; check both ends; return the source's info."""
    for v in (src, dst):
        v.qmp.cmd('query-status')       # a round trip: older events are in
        v.qmp.events.clear()
    src.qmp.cmd('migrate-set-parameters', params or {'max-bandwidth': 0})
    assert src.qmp.cmd('migrate', {'uri': dst.listen_uri()}) == {'return': {}}
    info = src.wait_status({'completed', 'failed'})
    assert info['status'] == 'completed', info
    assert RAM_MEMBERS <= set(info['ram']), set(info['ram']) ^ RAM_MEMBERS
    assert info['ram']['remaining'] == 0 and info['ram']['total'] > 0
    for k in ('setup-time', 'total-time', 'downtime'):
        assert isinstance(info[k], int) and info[k] >= 0, info
    src.qmp.event('STOP')
    statuses = []
    while True:
        ev = src.qmp.event('MIGRATION')
        statuses.append(ev['data']['status'])
        if ev['data']['status'] == 'completed':
            break
    assert statuses[:2] == ['setup', 'active'], statuses
    assert src.qmp.cmd('query-status')['return']['status'] == 'postmigrate'
    assert dst.wait_status({'completed', 'failed'})['status'] == 'completed'
    dst.qmp.event('RESUME')
    assert dst.qmp.cmd('query-status')['return'] == {'running': True,
                                                      'status': 'running'}
    return info


def verify_goes_on(src, dst, rounds=2):
    """The destination's guest carries on from where the source stopped:
    its first whole line is the source's next round (a line cut by the
    switchover may end on the destination), then rounds follow in order."""
    time.sleep(0.3)             # the paused source's last output, read
    last = src.last_round()
    first = int(dst.m.wait_line(r'^verify: round=(\d+) ', 120).group(1))
    assert last < first <= last + 2, (last, first)
    for r in range(first + 1, first + 1 + rounds):
        dst.m.wait_line(rf'^verify: round={r} ', 120)


def basic(opts):
    """@extra: RAM, vCPUs, the URI, and the guest's words (verify)."""
    mem, smp, uri, *append = opts.extra
    append = append[0] if append else 'verify'
    src = Vm(mem, smp, append=append)
    dst = Vm(mem, smp, append=append, incoming=uri)
    try:
        src.m.wait_line(r'^verify: round=1 ', 120)
        info = migrate(src, dst)
        assert info['ram']['dirty-sync-count'] >= 1
        verify_goes_on(src, dst)
    finally:
        src.close()
        dst.close()


def backend_args(obj):
    return ['-object', f'{obj},id=m', '-machine', 'memory-backend=m']


def backend(opts):
    """Each RAM backend on both sides (or different ones on each side):
    the stream carries pages, not the backend, so any pair works."""
    src_obj, dst_obj, hugepages = opts.extra
    with HugePages(hugepages) if hugepages else contextlib.nullcontext():
        src = Vm(None, 2, extra=backend_args(src_obj))
        dst = Vm(None, 2, incoming='tcp:127.0.0.1:0', extra=backend_args(dst_obj))
        try:
            src.m.wait_line(r'^verify: round=1 ', 120)
            migrate(src, dst)
            verify_goes_on(src, dst)
        finally:
            src.close()
            dst.close()


def ipv6(opts):
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(('::1', 0))
        s.close()
    except OSError as e:
        raise Skip(f'no IPv6 loopback: {e}')
    opts.extra = ['256M', 1, 'tcp:[::1]:0']
    basic(opts)


def defer(opts):
    """libvirt's way: -incoming defer, then migrate-incoming."""
    src = Vm('256M', 2)
    dst = Vm('256M', 2, incoming='defer')
    try:
        assert dst.qmp.cmd('query-migrate') == {'return': {}}
        assert dst.qmp.cmd('query-status')['return']['status'] == 'inmigrate'
        assert dst.qmp.cmd('migrate-incoming', {'uri': 'tcp:127.0.0.1:0'}) == \
            {'return': {}}
        assert dst.qmp.event('MIGRATION')['data']['status'] == 'setup'
        r = dst.qmp.cmd('migrate-incoming', {'uri': 'tcp:127.0.0.1:0'})
        assert r['error']['desc'] == \
            'The incoming migration has already been started', r
        src.m.wait_line(r'^verify: round=1 ')
        migrate(src, dst)
        verify_goes_on(src, dst)
        r = src.qmp.cmd('migrate-incoming', {'uri': 'tcp:127.0.0.1:0'})
        assert r['error']['desc'] == \
            "'-incoming' was not specified on the command line", r
        # Given -incoming URI, it is started already (QEMU's words).
        d2 = Vm('64M', 1, append='idle', incoming='tcp:127.0.0.1:0')
        try:
            r = d2.qmp.cmd('migrate-incoming', {'uri': 'tcp:127.0.0.1:0'})
            assert r['error']['desc'] == \
                'The incoming migration has already been started', r
        finally:
            d2.close()
    finally:
        src.close()
        dst.close()


def ping_pong(opts):
    """A to B, then B on to C: each hop intact."""
    a = Vm('256M', 2)
    b = Vm('256M', 2, incoming='unix:' + os.path.join(tmpdir(), 'b.sock'))
    c = Vm('256M', 2, incoming='tcp:127.0.0.1:0')
    try:
        a.m.wait_line(r'^verify: round=1 ')
        migrate(a, b)
        verify_goes_on(a, b)
        migrate(b, c)
        verify_goes_on(b, c)
    finally:
        for v in (a, b, c):
            v.close()


def cancel_then_retry(opts):
    """Cancel halfway: the source runs on; a second migration succeeds."""
    src = Vm('512M', 2)
    dst = Vm('512M', 2, incoming='tcp:127.0.0.1:0')
    dst2 = None
    try:
        src.m.wait_line(r'^verify: round=1 ')
        src.qmp.cmd('migrate-set-parameters', {'max-bandwidth': 32 << 20})
        assert src.qmp.cmd('migrate', {'uri': dst.listen_uri()}) == {'return': {}}
        time.sleep(1)
        assert src.qmp.cmd('query-migrate')['return']['status'] == 'active'
        assert src.qmp.cmd('migrate_cancel') == {'return': {}}
        assert src.wait_status({'cancelled', 'failed'})['status'] == 'cancelled'
        assert src.qmp.cmd('query-status')['return']['status'] == 'running'
        r = src.last_round()
        src.m.wait_line(rf'^verify: round={r + 2} ')     # still running, intact
        # The half-fed destination failed its load and exited (exit-on-error).
        assert dst.m.wait_exit(30) == 1
        dst2 = Vm('512M', 2, incoming='tcp:127.0.0.1:0')
        migrate(src, dst2)
        verify_goes_on(src, dst2)
    finally:
        for v in (src, dst, dst2):
            if v:
                v.close()


def dest_killed(opts):
    """The destination dies mid-stream: the source fails, runs on, intact."""
    src = Vm('512M', 1)
    dst = Vm('512M', 1, incoming='tcp:127.0.0.1:0')
    try:
        src.m.wait_line(r'^verify: round=1 ')
        src.qmp.cmd('migrate-set-parameters', {'max-bandwidth': 32 << 20})
        src.qmp.cmd('migrate', {'uri': dst.listen_uri()})
        time.sleep(1)
        os.kill(dst.m.proc.pid, signal.SIGKILL)
        info = src.wait_status({'failed', 'completed'})
        assert info['status'] == 'failed', info
        assert info['error-desc'], info
        assert src.qmp.cmd('query-status')['return']['status'] == 'running'
        r = src.last_round()
        src.m.wait_line(rf'^verify: round={r + 2} ')
    finally:
        src.close()
        dst.close()


def destination_fails(opts):
    """With a return path, a destination that fails its load in precopy
    says why on the return path at once, and the source, reading it all
    along, fails at once with that reason and runs on; before, it read
    the return path only at the end and sat in active while the
    connection no longer drained (here a relay that stops reading from
    the source, as a stuck path would)."""
    src = Vm('512M', 1)
    dst = Vm('512M', 1, incoming='defer')
    try:
        dst.qmp.cmd('migrate-incoming', {'uri': 'tcp:127.0.0.1:0',
                                         'exit-on-error': False})
        bad = struct.pack('<BQI', 0x02, 1 << 40, 1) + bytes(4096)
        relay = Relay(dst.listen_uri(), bad, after=200, switch=False, stall=True)
        src.qmp.cmd('migrate-set-capabilities', {'capabilities': [
            {'capability': 'return-path', 'state': True}]})
        src.m.wait_line(r'^verify: round=1 ')
        src.qmp.cmd('migrate-set-parameters', {'max-bandwidth': 0})
        assert src.qmp.cmd('migrate', {'uri': relay.uri}) == {'return': {}}
        assert relay.injected.wait(60)
        di = dst.wait_status({'failed', 'completed'}, 30)
        assert 'lies outside block' in di['error-desc'], di
        si = src.wait_status({'failed', 'completed'}, 30)
        assert si['status'] == 'failed', si
        assert si['error-desc'].startswith(
            'the destination failed to load the migration: RAM record'), si
        assert 'lies outside block' in si['error-desc'], si
        assert src.qmp.cmd('query-status')['return']['status'] == 'running'
        last = src.last_round()
        src.m.wait_line(rf'^verify: round={last + 1} ')
        relay.close()
    finally:
        src.close()
        dst.close()


def refused(opts):
    """Nobody listening: an error at once, and the source runs on."""
    src = Vm('128M', 1)
    try:
        s = socket.socket()
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
        s.close()
        r = src.qmp.cmd('migrate', {'uri': f'tcp:127.0.0.1:{port}'})
        assert 'Connection refused' in r['error']['desc'], r
        r = src.qmp.cmd('migrate', {'uri': 'rdma:1.2.3.4:5'})
        assert r['error']['desc'] == 'unknown migration protocol: rdma:1.2.3.4:5', r
        assert src.qmp.cmd('query-status')['return']['status'] == 'running'
        assert src.qmp.cmd('query-migrate') == {'return': {}}
    finally:
        src.close()


def stream(*records, magic=0x59525246, version=2, block=b'pc.ram',
           size=256 << 20, role=0):
    head = struct.pack('<IIB', magic, version, role) + bytes(16)   # the id
    head += bytes([1, len(block)]) + block + struct.pack('<QQ', size, 4096)
    return head + b''.join(records)


def pages(off, count, data=b''):
    return bytes([2]) + struct.pack('<QI', off, count) + data


BAD_STREAMS = [
    ('block size', stream(size=1 << 30), "does not match this machine's 'pc.ram'"),
    ('block name', stream(block=b'vga.ram'), "RAM block 'vga.ram'"),
    ('page outside block', stream(pages((256 << 20), 1, b'x' * 4096)),
     'lies outside block'),
    ('unaligned page', stream(pages(100, 1, b'x' * 4096)), 'lies outside block'),
    ('oversized run', stream(pages(0, 100000)), 'lies outside block'),
    ('unknown record', stream(bytes([0x42])), 'unknown record type 0x42'),
    ('oversized device', stream(bytes([5, 2]) + b'vm' + struct.pack('<I', 1 << 30)),
     "state of 1073741824 bytes is larger"),
    ('unknown device', stream(bytes([5, 3]) + b'gpu' + struct.pack('<I', 0)),
     "unknown device section 'gpu'"),
    ('truncated device', stream(bytes([5, 4]) + b'cpu0' + struct.pack('<I', 8) +
                                b'\0' * 8), "device 'cpu0'"),
    ('no devices', stream(bytes([0xff])), "without the VM's device state"),
    ('truncated', stream(pages(0, 4, b'x' * 5000)), 'ended early'),
]


def bad_streams(opts):
    """Each malformed stream: failed with a clear error-desc; with the
    default exit-on-error the process then exits 1; memory is untouched
    outside the block."""
    for name, data, want in BAD_STREAMS:
        dst = Vm('256M', 1, incoming='defer')
        try:
            dst.qmp.cmd('migrate-incoming', {'uri': 'tcp:127.0.0.1:0',
                                             'exit-on-error': False})
            host, port = dst.listen_uri()[4:].rsplit(':', 1)
            s = socket.create_connection((host, int(port)))
            s.sendall(data)
            s.close()
            info = dst.wait_status({'failed', 'completed'}, 30)
            assert info['status'] == 'failed', (name, info)
            assert want in info['error-desc'], (name, info['error-desc'])
            assert dst.m.proc.poll() is None, f'{name}: the process died'
            assert dst.qmp.cmd('query-status')['return']['status'] == 'inmigrate'
        finally:
            dst.close()
    # exit-on-error (the default): a message and exit status 1.
    dst = Vm('256M', 1, incoming='tcp:127.0.0.1:0')
    try:
        host, port = dst.listen_uri()[4:].rsplit(':', 1)
        s = socket.create_connection((host, int(port)))
        s.sendall(stream(size=1 << 30))
        s.close()
        assert dst.m.wait_exit(30) == 1
        assert "load of migration failed: RAM block 'pc.ram'" in dst.m.stderr()
    finally:
        dst.close()


# Connections that are not a migration's main channel (the channel header,
# docs/migration-stream.md): refused as they come, saying why.
STRAYS = [
    (b'GET / HTTP/1.0\r\n\r\n', 'not a ferry migration channel'),
    (stream(magic=0x12345678), 'not a ferry migration channel'),
    (stream(version=9), 'unsupported migration stream version 9'),
    (stream(version=1), 'unsupported migration stream version 1'),
    (stream(role=1), 'a preempt channel of another migration'),
    (stream(role=7), 'unknown migration channel role 7'),
    (b'FRRY', 'it closed before its channel header'),
]


def stray_connections(opts):
    """A port scanner, a stream of another version, a preempt channel of
    no migration, a connection that says nothing: each is refused with
    a message when it connects to the incoming port, and the migration
    that comes after them is loaded as if they had not been."""
    src = Vm('256M', 1)
    dst = Vm('256M', 1, incoming='tcp:127.0.0.1:0')
    try:
        host, port = dst.listen_uri()[4:].rsplit(':', 1)
        silent = socket.create_connection((host, int(port)))
        for data, _ in STRAYS:
            with socket.create_connection((host, int(port))) as s:
                # Refused: closed, or reset when it had more to read.
                with contextlib.suppress(ConnectionResetError, BrokenPipeError,
                                         OSError):
                    s.sendall(data)
                    s.shutdown(socket.SHUT_WR)
                    s.settimeout(10)
                    assert s.recv(1) == b''
        assert dst.qmp.cmd('query-migrate')['return']['status'] == 'setup'
        src.m.wait_line(r'^verify: round=1 ')
        migrate(src, dst)
        verify_goes_on(src, dst)
        silent.close()
        dst.qmp.cmd('quit')
        dst.m.wait_exit(30)
        err = dst.m.stderr()
        for _, why in STRAYS:
            assert f'refused a connection to the incoming port: {why}' in err, \
                (why, err)
    finally:
        src.close()
        dst.close()


def capabilities_parameters(opts):
    """QEMU's names and errors for capabilities and parameters."""
    v = Vm('128M', 1, append='idle')
    try:
        q = v.qmp
        caps = {c['capability']: c['state'] for c in
                q.cmd('query-migrate-capabilities')['return']}
        for name in ('xbzrle', 'auto-converge', 'events', 'postcopy-ram',
                     'return-path', 'postcopy-preempt', 'background-snapshot',
                     'pause-before-switchover', 'multifd', 'compress'):
            assert name in caps, name
        assert caps['events'] is True
        # libvirt's list, every one named, most of them false.
        libvirt = [{'capability': c, 'state': c == 'late-block-activate'} for c in
                   ('xbzrle', 'auto-converge', 'rdma-pin-all', 'postcopy-ram',
                    'compress', 'pause-before-switchover', 'late-block-activate',
                    'multifd', 'dirty-bitmaps', 'return-path', 'zero-copy-send')]
        assert q.cmd('migrate-set-capabilities', {'capabilities': libvirt}) == \
            {'return': {}}
        r = q.cmd('migrate-set-capabilities', {'capabilities': [
            {'capability': 'multifd', 'state': True}]})
        assert "Capability 'multifd' is not supported" in r['error']['desc']
        r = q.cmd('migrate-set-capabilities', {'capabilities': [
            {'capability': 'warp-drive', 'state': True}]})
        assert r['error']['desc'] == \
            "Parameter 'capabilities[0].capability' does not accept value 'warp-drive'"
        p = q.cmd('query-migrate-parameters')['return']
        assert p['max-bandwidth'] == 134217728 and p['downtime-limit'] == 300
        assert p['cpu-throttle-initial'] == 20 and p['max-postcopy-bandwidth'] == 0
        assert q.cmd('migrate-set-parameters', {
            'tls-creds': '', 'tls-hostname': '', 'max-bandwidth': 1 << 30,
            'downtime-limit': 100}) == {'return': {}}
        p = q.cmd('query-migrate-parameters')['return']
        assert p['max-bandwidth'] == 1 << 30 and p['downtime-limit'] == 100
        r = q.cmd('migrate-set-parameters', {'downtime-limit': 2000001})
        assert r['error']['desc'] == ("Parameter 'downtime-limit' expects an "
                                      "integer in the range of 0 to 2000000 "
                                      "milliseconds"), r
        r = q.cmd('migrate-set-parameters', {'max-bandwidth': -1})
        assert 'expected: size' in r['error']['desc'], r
        r = q.cmd('migrate-set-parameters', {'multifd-compression': 'lz4'})
        assert r['error']['desc'] == ("Parameter 'multifd-compression' does "
                                      "not accept value 'lz4'"), r
        assert q.cmd('migrate-set-parameters', {'zero-page-detection': 'legacy',
                                                'mode': 'normal'}) == {'return': {}}
        r = q.cmd('migrate-set-parameters', {'tls-creds': 'tls0'})
        assert r['error']['desc'] == "No TLS credentials with id 'tls0'", r
        # A refused set changes nothing.
        assert q.cmd('query-migrate-parameters')['return']['downtime-limit'] == 100
        r = q.cmd('migrate', {'uri': 'tcp:127.0.0.1:1', 'resume': True})
        assert 'no paused migration' in r['error']['desc'], r
    finally:
        v.close()


def send_fd(q, name, fd):
    """getfd with @fd passed by SCM_RIGHTS, as libvirt does."""
    req = json.dumps({'execute': 'getfd', 'arguments': {'fdname': name}})
    socket.send_fds(q.sock, [req.encode() + b'\n'], [fd])
    return q.reply()


def fd_transport(opts):
    """libvirt's way: the sockets are made outside and passed with getfd;
    migrate fd:NAME on the source, migrate-incoming fd:NAME on a deferred
    destination."""
    src = Vm('256M', 2)
    dst = Vm('256M', 2, incoming='defer')
    a, b = socket.socketpair()
    try:
        r = src.qmp.cmd('getfd', {'fdname': 'migrate'})
        assert r['error']['desc'] == 'No file descriptor supplied via SCM_RIGHTS', r
        r = src.qmp.cmd('migrate', {'uri': 'fd:nope'})
        assert r['error']['desc'] == "File descriptor named 'nope' not found", r
        assert send_fd(src.qmp, 'migrate', a.fileno()) == {'return': {}}
        assert send_fd(dst.qmp, 'in', b.fileno()) == {'return': {}}
        a.close()
        b.close()
        assert dst.qmp.cmd('migrate-incoming', {'uri': 'fd:in'}) == {'return': {}}
        src.m.wait_line(r'^verify: round=1 ')
        src.qmp.cmd('migrate-set-parameters', {'max-bandwidth': 0})
        assert src.qmp.cmd('migrate', {'uri': 'fd:migrate'}) == {'return': {}}
        assert src.wait_status({'completed', 'failed'})['status'] == 'completed'
        assert dst.wait_status({'completed', 'failed'})['status'] == 'completed'
        verify_goes_on(src, dst)
        # A name is used once.
        r = src.qmp.cmd('closefd', {'fdname': 'migrate'})
        assert r['error']['desc'] == "File descriptor named 'migrate' not found", r
    finally:
        src.close()
        dst.close()


def pause_before_switchover(opts):
    """libvirt's switchover: STOP, pre-switchover, migrate-continue, device,
    completed; and a cancel while paused there gives the guest back."""
    src = Vm('256M', 2)
    dst = Vm('256M', 2, incoming='tcp:127.0.0.1:0')
    dst2 = Vm('256M', 2, incoming='tcp:127.0.0.1:0')
    try:
        q = src.qmp
        q.cmd('migrate-set-capabilities', {'capabilities': [
            {'capability': 'pause-before-switchover', 'state': True}]})
        q.cmd('migrate-set-parameters', {'max-bandwidth': 0})
        src.m.wait_line(r'^verify: round=1 ')
        r = q.cmd('migrate-continue', {'state': 'pre-switchover'})
        assert r['error']['desc'] == 'Migration not in expected state: none', r
        # First: cancel while paused before switchover.
        q.cmd('query-status')
        q.events.clear()
        q.cmd('migrate', {'uri': dst.listen_uri()})
        assert q.event('STOP', 60)
        assert src.wait_status({'pre-switchover'}, 60)['status'] == 'pre-switchover'
        assert q.cmd('query-status')['return']['status'] == 'finish-migrate'
        assert q.cmd('migrate_cancel') == {'return': {}}
        assert src.wait_status({'cancelled', 'failed'})['status'] == 'cancelled'
        q.event('RESUME')
        assert q.cmd('query-status')['return']['status'] == 'running'
        # Then: the whole way, with libvirt's continue.
        q.cmd('query-status')
        q.events.clear()
        q.cmd('migrate', {'uri': dst2.listen_uri()})
        src.wait_status({'pre-switchover'}, 60)
        r = q.cmd('migrate-continue', {'state': 'active'})
        assert r['error']['desc'] == \
            'Migration not in expected state: pre-switchover', r
        assert q.cmd('migrate-continue', {'state': 'pre-switchover'}) == \
            {'return': {}}
        assert src.wait_status({'completed', 'failed'})['status'] == 'completed'
        statuses = []
        while not statuses or statuses[-1] != 'completed':
            statuses.append(q.event('MIGRATION')['data']['status'])
        assert statuses == ['setup', 'active', 'pre-switchover', 'device',
                            'completed'], statuses
        verify_goes_on(src, dst2)
    finally:
        for v in (src, dst, dst2):
            v.close()


LIBVIRT_CAPS = ('xbzrle', 'auto-converge', 'rdma-pin-all', 'postcopy-ram',
                'compress', 'pause-before-switchover', 'late-block-activate',
                'multifd', 'dirty-bitmaps', 'return-path', 'zero-copy-send')


def libvirt_caps(on):
    return {'capabilities': [{'capability': c, 'state': c in on}
                             for c in LIBVIRT_CAPS]}


SYS_WRITE = 1


def eventfds(pid):
    """@pid's eventfds (glib's wakeup of the main loop is one)."""
    fds = set()
    for fd in os.listdir(f'/proc/{pid}/fdinfo'):
        with contextlib.suppress(OSError):
            with open(f'/proc/{pid}/fdinfo/{fd}') as f:
                if 'eventfd-count:' in f.read():
                    fds.add(int(fd))
    return fds


def completed_last(opts):
    """The destination says completed once its run state is final, as
    QEMU does: libvirt, on the completed event, asks query-status and
    expects paused (-S, or a paused source) to cont, or running.  Before,
    the load thread set completed and only then asked the main thread to
    set the run state, and a query between the two said inmigrate (a CI
    failure of /migration/libvirt/precopy).  The destination's load
    thread is held (ptrace) at its first post to the main loop after the
    device state; query-status is asked until completed comes, then once
    more.  @extra: 'running' or 'paused' (-S)."""
    mode, = opts.extra
    src = Vm('256M', 1)
    dst = Vm('256M', 1, incoming='tcp:127.0.0.1:0',
             extra=['-S'] if mode == 'paused' else [])
    held = None
    try:
        s, d = src.qmp, dst.qmp
        s.cmd('migrate-set-capabilities', {'capabilities': [
            {'capability': 'pause-before-switchover', 'state': True}]})
        s.cmd('migrate-set-parameters', {'max-bandwidth': 0})
        src.m.wait_line(r'^verify: round=1 ', 120)
        assert s.cmd('migrate', {'uri': dst.listen_uri()}) == {'return': {}}
        src.wait_status({'pre-switchover'}, 120)
        d.cmd('query-status')
        d.events.clear()
        efds = eventfds(dst.m.proc.pid)
        held = SyscallHeld(thread_id(dst.m.proc.pid, 'mig/dst/load'),
                           SYS_WRITE,
                           where=lambda fd, buf, n: fd in efds and n == 8)
        assert s.cmd('migrate-continue', {'state': 'pre-switchover'}) == \
            {'return': {}}
        held.wait_held(60)
        deadline = time.monotonic() + 30
        while not any(e['event'] == 'MIGRATION' and
                      e['data']['status'] == 'completed' for e in d.events):
            d.cmd('query-status')
            assert time.monotonic() < deadline, d.events
            time.sleep(0.02)
        st = d.cmd('query-status')['return']['status']
        assert st == mode, f'the destination said completed while {st}'
        held.release()
        held = None
        assert src.wait_status({'completed', 'failed'})['status'] == 'completed'
        if mode == 'paused':
            assert d.cmd('cont') == {'return': {}}
        verify_goes_on(src, dst)
    finally:
        if held:
            held.release()
        src.close()
        dst.close()


def libvirt_precopy(opts):
    """The QMP conversation libvirt has for a precopy migration
    (../shared/reference/libvirt-postcopy-conversation.md without its
    postcopy steps), word for word, against two ferry processes."""
    src = Vm('512M', 2)
    dst = Vm('512M', 2, incoming='defer', extra=['-S'])
    s, d = src.qmp, dst.qmp
    try:
        for q in (s, d):                                    # any process, at start
            assert 'return' in q.cmd('query-migrate-capabilities')
            assert q.cmd('migrate-set-capabilities', {'capabilities': [
                {'capability': 'events', 'state': True}]}) == {'return': {}}
        # Destination, prepare.
        saved = d.cmd('query-migrate-parameters')['return']
        assert d.cmd('migrate-set-capabilities', libvirt_caps(
            {'late-block-activate', 'return-path'})) == {'return': {}}
        assert d.cmd('migrate-set-parameters', {'tls-creds': '',
                                                'tls-hostname': ''}) == {'return': {}}
        try:
            socket.socket(socket.AF_INET6).close()
            uri = 'tcp:[::]:0'
        except OSError:
            uri = 'tcp:0.0.0.0:0'
        assert d.cmd('migrate-incoming', {'uri': uri}) == {'return': {}}
        assert d.event('MIGRATION')['data']['status'] == 'setup'
        port = int(dst.listen_uri().rsplit(':', 1)[1])
        # Source, perform.
        src.m.wait_line(r'^verify: round=1 ')
        assert s.cmd('query-migrate') == {'return': {}}
        s.cmd('query-migrate-parameters')
        assert s.cmd('migrate-set-capabilities', libvirt_caps(
            {'return-path', 'pause-before-switchover'})) == {'return': {}}
        assert s.cmd('migrate-set-parameters', {
            'tls-creds': '', 'tls-hostname': '',
            'max-bandwidth': 9223372036853727232}) == {'return': {}}
        conn = socket.create_connection(('127.0.0.1', port))
        assert send_fd(s, 'migrate', conn.fileno()) == {'return': {}}
        conn.close()
        assert s.cmd('migrate', {'resume': False, 'uri': 'fd:migrate'}) == \
            {'return': {}}
        # libvirt follows events, not query-migrate.
        seen = []
        while 'pre-switchover' not in seen:
            ev = s.event('MIGRATION', 120)
            seen.append(ev['data']['status'])
        assert seen[:2] == ['setup', 'active'], seen
        s.event('STOP')
        assert s.event('MIGRATION_PASS')['data']['pass'] == 1
        assert s.cmd('migrate-continue', {'state': 'pre-switchover'}) == \
            {'return': {}}
        assert s.event('MIGRATION', 60)['data']['status'] == 'device'
        assert s.event('MIGRATION', 60)['data']['status'] == 'completed'
        # Destination, finish: paused (-S) until libvirt's cont.
        while d.event('MIGRATION', 60)['data']['status'] != 'completed':
            pass
        assert d.cmd('query-status')['return']['status'] == 'paused'
        assert d.cmd('cont') == {'return': {}}
        d.event('RESUME')
        assert d.cmd('migrate-set-capabilities', libvirt_caps(set())) == \
            {'return': {}}
        assert d.cmd('migrate-set-parameters', saved) == {'return': {}}
        # Source, confirm.
        info = s.cmd('query-migrate')['return']
        assert info['status'] == 'completed' and info['ram']['remaining'] == 0
        assert s.cmd('query-status')['return']['status'] == 'postmigrate'
        verify_goes_on(src, dst)
    finally:
        src.close()
        dst.close()


def save_restore(opts):
    """file:: save a stopped VM to a file, start another process from it
    (paused, as its source was) and let it run; with and without offset=;
    and exec: through shell commands."""
    d = tmpdir()
    for uri_out, uri_in in [
            (f'file:{d}/vm.state', f'file:{d}/vm.state'),
            (f'file:{d}/at4k,offset=4096', f'file:{d}/at4k,offset=4096'),
            (f'exec:cat > {d}/vm.exec', f'exec:cat {d}/vm.exec')]:
        src = Vm('256M', 2)
        dst = None
        try:
            q = src.qmp
            src.m.wait_line(r'^verify: round=1 ')
            assert q.cmd('stop') == {'return': {}}
            q.cmd('migrate-set-parameters', {'max-bandwidth': 0})
            assert q.cmd('migrate', {'uri': uri_out}) == {'return': {}}, uri_out
            info = src.wait_status({'completed', 'failed'})
            assert info['status'] == 'completed', (uri_out, info)
            assert q.cmd('query-status')['return']['status'] == 'postmigrate'
            dst = Vm('256M', 2, incoming=uri_in)
            assert dst.wait_status({'completed', 'failed'})['status'] == \
                'completed', uri_in
            assert dst.qmp.cmd('query-status')['return']['status'] == 'paused'
            assert dst.qmp.cmd('cont') == {'return': {}}
            verify_goes_on(src, dst)
        finally:
            src.close()
            if dst:
                dst.close()
    v = Vm('128M', 1, append='idle')
    try:
        v.qmp.cmd('migrate-set-capabilities', {'capabilities': [
            {'capability': 'return-path', 'state': True}]})
        r = v.qmp.cmd('migrate', {'uri': f'file:{d}/x'})
        assert r['error']['desc'] == \
            'Return path is not supported with file: migration', r
        v.qmp.cmd('migrate-set-capabilities', {'capabilities': [
            {'capability': 'return-path', 'state': False}]})
        # A file that cannot be written says so, naming the file.
        v.qmp.cmd('migrate-set-parameters', {'max-bandwidth': 0})
        assert v.qmp.cmd('migrate', {'uri': 'file:/dev/full'}) == {'return': {}}
        info = v.wait_status({'failed', 'completed'})
        assert info['status'] == 'failed', info
        assert info['error-desc'].startswith(
            "Unable to write to file '/dev/full': No space left on device"), info
        r = v.qmp.cmd('migrate', {'uri': 'file:/nonexistent/dir/x'})
        assert r['error']['desc'] == ('cannot open migration file '
                                      '/nonexistent/dir/x: No such file or '
                                      'directory'), r
        assert v.qmp.cmd('query-status')['return']['status'] == 'running'
    finally:
        v.close()


def auto_converge(opts):
    """A guest dirtying 96 MiB/s against 32 MiB/s of bandwidth never
    converges; with auto-converge the vCPUs are throttled until it does."""
    params = {'max-bandwidth': 32 << 20, 'downtime-limit': 50,
              'cpu-throttle-initial': 60, 'cpu-throttle-increment': 20}
    src = Vm('64M', 1, append='dirty rate=96')
    dst = Vm('64M', 1, incoming='tcp:127.0.0.1:0')
    dst2 = None
    try:
        q = src.qmp
        src.m.wait_line(r'^dirty: second=1 ')
        q.cmd('migrate-set-parameters', params)
        q.cmd('migrate', {'uri': dst.listen_uri()})
        deadline = time.monotonic() + 30
        while q.cmd('query-migrate')['return'].get('ram', {}).get(
                'dirty-sync-count', 0) < 4:
            assert time.monotonic() < deadline, 'passes too slow'
            time.sleep(0.2)
        info = q.cmd('query-migrate')['return']
        assert info['status'] == 'active', info
        assert 'cpu-throttle-percentage' not in info, info
        q.cmd('migrate_cancel')
        assert src.wait_status({'cancelled'})['status'] == 'cancelled'
        assert q.cmd('query-status')['return']['status'] == 'running'
        dst.m.wait_exit(30)

        dst2 = Vm('64M', 1, incoming='tcp:127.0.0.1:0')
        q.cmd('migrate-set-capabilities', {'capabilities': [
            {'capability': 'auto-converge', 'state': True}]})
        q.cmd('migrate', {'uri': dst2.listen_uri()})
        throttled = 0
        deadline = time.monotonic() + 120
        while True:
            info = q.cmd('query-migrate')['return']
            throttled = max(throttled, info.get('cpu-throttle-percentage', 0))
            if info['status'] not in ('setup', 'active'):
                break
            assert time.monotonic() < deadline, f'did not converge: {info}'
            time.sleep(0.1)
        assert info['status'] == 'completed', info
        assert throttled >= 60, throttled
        # The guest goes on dirtying on the destination, unthrottled there.
        last = max(int(m.group(1)) for m in (re.match(r'^dirty: second=(\d+)', l)
                   for l in src.m.lines) if m)
        dst2.m.wait_line(rf'^dirty: second={last + 2} ', 30)
    finally:
        for v in (src, dst, dst2):
            if v:
                v.close()


def hmp_migration(opts):
    """HMP's migration commands: QEMU's syntax and output; migrate without
    -d holds the prompt until the migration ends."""
    hsock = os.path.join(tmpdir(), 'hmp.sock')
    src = Vm('256M', 1, extra=['-monitor', f'unix:{hsock},server=on,wait=off'])
    dst = Vm('256M', 1, incoming='tcp:127.0.0.1:0')
    try:
        run = HMP(hsock).run
        assert 'events: on\n' in run('info migrate_capabilities')
        assert run('migrate_set_capability xbzrle off') == ''
        assert "Capability 'xbzrle' is not supported" in \
            run('migrate_set_capability xbzrle on')
        assert run('migrate_set_parameter max-bandwidth 64') == ''   # MiB/s
        assert run('migrate_set_parameter downtime-limit 400') == ''
        p = run('info migrate_parameters')
        assert 'max-bandwidth: 67108864 bytes/second\n' in p, p
        assert 'downtime-limit: 400 ms\n' in p, p
        assert run('info migrate') == ''                # nothing yet
        assert run('migrate_set_parameter max-bandwidth 0') == ''
        src.m.wait_line(r'^verify: round=1 ')
        assert run(f'migrate {dst.listen_uri()}') == ''     # waits
        info = run('info migrate')
        assert info.startswith('Migration status: completed\n'), info
        for line in ('total time: ', 'downtime: ', 'transferred ram: ',
                     'total ram: 262144 kbytes', 'dirty sync count: '):
            assert line in info, (line, info)
        assert run('info status') == 'VM status: paused (postmigrate)\n'
        verify_goes_on(src, dst)
    finally:
        src.close()
        dst.close()


MEMFD_HUGE = 'memory-backend-memfd,size=512M,hugetlb=on,hugetlbsize=2M'


def B(mem, smp, uri, *append):
    return MachineOptions(extra=[mem, smp, uri, *append])


cases = [
    ('/migration/precopy/tcp/smp1-256M', basic, B('256M', 1, 'tcp:127.0.0.1:0')),
    ('/migration/precopy/tcp/smp2-1G', basic, B('1G', 2, 'tcp:127.0.0.1:0')),
    ('/migration/precopy/unix/smp4-512M', basic,
     B('512M', 4, 'unix:' + os.path.join(tmpdir(), 'mig.sock'))),
    # All of 6 GiB, 3 of them above 4 GiB, an eighth of it written: the
    # first write to host memory costs so much here that a guest writing
    # all of it took a minute.
    ('/migration/precopy/tcp/smp2-6G', basic,
     B('6G', 2, 'tcp:0.0.0.0:0', 'verify sparse=8')),
    # Each backend into each backend: test_memory.py.
    ('/migration/precopy/backend/ram-to-hugetlb-2M', backend,
     MachineOptions(extra=['memory-backend-ram,size=512M', MEMFD_HUGE, 256])),
    ('/migration/precopy/tcp-ipv6', ipv6, MachineOptions()),
    ('/migration/precopy/incoming-defer', defer, MachineOptions()),
    ('/migration/precopy/ping-pong', ping_pong, MachineOptions()),
    ('/migration/cancel-then-retry', cancel_then_retry, MachineOptions()),
    ('/migration/failure/destination-killed', dest_killed, MachineOptions()),
    ('/migration/failure/refused', refused, MachineOptions()),
    ('/migration/failure/destination-fails', destination_fails, MachineOptions()),
    ('/migration/bad-stream', bad_streams, MachineOptions()),
    ('/migration/stray-connections', stray_connections, MachineOptions()),
    ('/migration/qmp/capabilities-parameters', capabilities_parameters,
     MachineOptions()),
    ('/migration/hmp', hmp_migration, MachineOptions()),
    ('/migration/precopy/fd-getfd', fd_transport, MachineOptions()),
    ('/migration/precopy/pause-before-switchover', pause_before_switchover,
     MachineOptions()),
    ('/migration/libvirt/precopy', libvirt_precopy, MachineOptions()),
    ('/migration/precopy/completed-last/running', completed_last,
     MachineOptions(extra=('running',))),
    ('/migration/precopy/completed-last/paused', completed_last,
     MachineOptions(extra=('paused',))),
    ('/migration/save-restore/file-exec', save_restore, MachineOptions()),
    ('/migration/precopy/auto-converge', auto_converge, MachineOptions()),
]

if __name__ == '__main__':
    run_cases(cases)
