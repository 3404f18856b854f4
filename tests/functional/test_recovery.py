#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Postcopy recovery (docs/postcopy.md, "Recovery"): a postcopy whose
connection breaks pauses on both sides, keeps everything, and resumes
with migrate-recover on the destination and migrate resume=true on the
source, as often as it breaks.  The verify guest goes on clean on the
destination: every page came once, as the source had it."""
import contextlib
import os
import socket
import threading
import time

from ferrytest import (HMP, QMP, HeldRelay, HugePages, MachineOptions, Skip,
                       StallRelay, ThreadHeld, run_cases, tmpdir)
from test_migration import backend_args, send_fd, verify_goes_on
from test_postcopy import (cut_tcp, finish, libvirt_start, libvirt_switch,
                          pair, refuses_cont)

SRC_STATES = ['postcopy-recover-setup', 'postcopy-recover', 'postcopy-active']
DST_STATES = ['postcopy-recover', 'postcopy-active']


def events(vm):
    """The MIGRATION statuses received so far (after a round trip)."""
    vm.qmp.cmd('query-status')
    out = [e['data']['status'] for e in vm.qmp.events
           if e['event'] == 'MIGRATION']
    vm.qmp.events[:] = [e for e in vm.qmp.events if e['event'] != 'MIGRATION']
    return out


def start_slow(src, dst, bw=8 << 20, settle=0.3, **migrate_args):
    """Migrate and switch at once, the push slow enough that postcopy is
    still under way when the test breaks it, @settle seconds after."""
    src.m.wait_line(r'^verify: round=1 ', 120)
    src.qmp.cmd('migrate-set-parameters', {'max-bandwidth': 0,
                                           'max-postcopy-bandwidth': bw})
    r = src.qmp.cmd('migrate', {'uri': dst.listen_uri(), **migrate_args})
    assert r == {'return': {}}, r
    assert src.qmp.cmd('migrate-start-postcopy') == {'return': {}}
    src.wait_status({'postcopy-active'}, 30)
    dst.wait_status({'postcopy-active'}, 30)
    time.sleep(settle)


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


def resume_to_end(src, dst, uri=None):
    """The push unlimited, resume, and the migration completes with the
    guest going on clean on the destination."""
    src.qmp.cmd('migrate-set-parameters', {'max-postcopy-bandwidth': 0})
    resume(src, dst, uri)
    finish(src, dst, timeout=60)
    verify_goes_on(src, dst)


def pause(vm):
    r = vm.qmp.cmd('migrate-pause')
    assert r == {'return': {}}, r


def paused_pair(mem='512M', smp=1, bw=8 << 20):
    """A pair in postcopy, paused from the source with migrate-pause;
    the events so far are read."""
    src, dst = pair(mem, smp)
    start_slow(src, dst, bw=bw)
    pause(src)
    paused(src, dst)
    events(src), events(dst)
    return src, dst


def plain(opts):
    """QEMU's /postcopy/recovery/plain: migrate-pause on the source, then
    recover; the states go as QEMU 9.1's on each side."""
    preempt, = opts.extra
    src, dst = pair('512M', 2, preempt=preempt)
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
    # 512 MiB at the paused 8 MiB/s would take over a minute.
    assert time.monotonic() - t0 < 60
    verify_goes_on(src, dst)


def twice(opts):
    """Broken twice (the first time by the destination's migrate-pause,
    the second from the source's), recovered twice, through HMP the
    second time (migrate_recover, migrate -r)."""
    src, dst = pair('512M', 2)
    start_slow(src, dst, bw=4 << 20)
    pause(dst)
    paused(src, dst)
    # Out of band, as newer libvirt sends it (the oob capability).
    oob = QMP(dst.sock, negotiate=False)
    assert oob.cmd('qmp_capabilities', {'enable': ['oob']}) == {'return': {}}
    oob.send_raw(b'{"exec-oob": "migrate-recover", "arguments": '
                 b'{"uri": "tcp:127.0.0.1:0"}, "id": "oob-1"}\n')
    assert oob.reply() == {'return': {}, 'id': 'oob-1'}
    resume(src, dst, dst.listen_uri())
    time.sleep(0.5)
    assert HMP(src.hmp_sock).run('migrate_pause') == ''
    paused(src, dst)
    src.qmp.cmd('migrate-set-parameters', {'max-postcopy-bandwidth': 0})
    assert HMP(dst.hmp_sock).run('migrate_recover tcp:127.0.0.1:0') == ''
    uri = dst.listen_uri()
    assert HMP(src.hmp_sock).run(f'migrate -d -r {uri}') == ''
    finish(src, dst, timeout=60)
    verify_goes_on(src, dst)


def connection_cut(opts):
    """The RST cut (ss -K on both ends' connections), as a network
    failure: both pause on their own, then recover."""
    preempt, = opts.extra
    src, dst = pair('512M', 1, preempt=preempt)
    start_slow(src, dst)
    cut_tcp(src, 2 if preempt else 1)
    paused(src, dst)
    resume_to_end(src, dst)


def handshake_fails(opts):
    """QEMU's double-failures/handshake: the first resume goes to a peer
    that takes the connection and closes it: the source goes back to
    postcopy-paused (with its events), the destination never noticed;
    the second resume completes."""
    src, dst = paused_pair('512M', 2)
    ls = socket.socket()
    ls.bind(('127.0.0.1', 0))
    ls.listen(1)

    def close_it():
        c, _ = ls.accept()
        c.recv(64)
        c.close()
    threading.Thread(target=close_it, daemon=True).start()
    r = src.qmp.cmd('migrate', {'uri': f'tcp:127.0.0.1:{ls.getsockname()[1]}',
                                'resume': True})
    assert r == {'return': {}}, r
    si = src.wait_status({'postcopy-paused'}, 30)
    assert 'error-desc' in si, si
    assert events(src) == ['postcopy-recover-setup', 'postcopy-recover',
                           'postcopy-paused']
    assert dst.qmp.cmd('query-migrate')['return']['status'] == 'postcopy-paused'
    # Nobody listening at all: the connect (in the migration thread, as
    # QEMU's is asynchronous) fails, back to postcopy-paused saying why.
    port = ls.getsockname()[1]
    ls.close()
    r = src.qmp.cmd('migrate', {'uri': f'tcp:127.0.0.1:{port}', 'resume': True})
    assert r == {'return': {}}, r
    src.qmp.event('MIGRATION', 10)
    si = src.wait_status({'postcopy-paused'}, 30)
    assert 'Connection refused' in si['error-desc'], si
    assert events(src) == ['postcopy-paused']
    resume_to_end(src, dst)


class CutRelay:
    """Between a source's resumed stream and the destination: passes the
    source's first @upto bytes and everything the destination says, then
    (once the destination has answered) closes both: a break in the
    middle of the handshake, on both sides."""

    def __init__(self, dst_uri, upto):
        host, port = dst_uri[4:].rsplit(':', 1)
        self.dst, self.upto = (host, int(port)), upto
        self.ls = socket.socket()
        self.ls.bind(('127.0.0.1', 0))
        self.ls.listen(1)
        self.uri = f'tcp:127.0.0.1:{self.ls.getsockname()[1]}'
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        a, _ = self.ls.accept()
        b = socket.create_connection(self.dst)
        answered = threading.Event()

        def back():
            with contextlib.suppress(OSError):
                while d := b.recv(1 << 16):
                    a.sendall(d)
                    answered.set()
        threading.Thread(target=back, daemon=True).start()
        left = self.upto
        with contextlib.suppress(OSError):
            while left > 0 and (d := a.recv(min(left, 1 << 16))):
                b.sendall(d)
                left -= len(d)
        assert answered.wait(10), 'the destination did not answer RECV_BITMAP'
        time.sleep(0.2)
        for c in (a, b, self.ls):
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()


def handshake_broken(opts):
    """QEMU's double-failures/reconnect: both sides are in the handshake
    (the destination in postcopy-recover, its bitmap sent) when the
    connection breaks; both return to postcopy-paused, and a second
    recovery completes."""
    src, dst = paused_pair('512M', 2)
    # The channel header, the RAM block record (1 + 1 + 6 + 8 + 8) and
    # RECV_BITMAP (1 + 1 + 6): the destination answers, RESUME is lost.
    relay = CutRelay(recover_listen(dst), 25 + 24 + 8)
    assert src.qmp.cmd('migrate', {'uri': relay.uri, 'resume': True}) == \
        {'return': {}}
    si = src.wait_status({'postcopy-paused'}, 30)
    di = dst.wait_status({'postcopy-paused'}, 30)
    assert 'error-desc' in si and 'error-desc' in di, (si, di)
    assert events(src) == ['postcopy-recover-setup', 'postcopy-recover',
                           'postcopy-paused']
    assert events(dst) == ['postcopy-recover', 'postcopy-paused']
    resume_to_end(src, dst)


def silent_partition(opts):
    """The path goes silent (no RST, no FIN: a relay that stops
    forwarding): TCP notices nothing, since the relay's kernel still
    acknowledges; the destination pauses when a vCPU has waited its
    x-postcopy-stall-timeout with no page coming, the source when no
    heartbeat has come for its own; both say why; then it is recovered
    on a path that works."""
    preempt, = opts.extra
    timeout_ms = 2000
    src, dst = pair('512M', 2, preempt=preempt)
    for v in (src, dst):
        assert v.qmp.cmd('migrate-set-parameters', {
            'x-postcopy-stall-timeout': timeout_ms}) == {'return': {}}
    relay = StallRelay(dst.listen_uri())
    src.m.wait_line(r'^verify: round=1 ', 120)
    src.qmp.cmd('migrate-set-parameters', {'max-bandwidth': 0,
                                           'max-postcopy-bandwidth': 8 << 20})
    assert src.qmp.cmd('migrate', {'uri': relay.uri}) == {'return': {}}
    assert src.qmp.cmd('migrate-start-postcopy') == {'return': {}}
    src.wait_status({'postcopy-active'}, 30)
    dst.wait_status({'postcopy-active'}, 30)
    time.sleep(0.5)
    t0 = time.monotonic()
    relay.stall()
    si, di = paused(src, dst, timeout=30)
    noticed = time.monotonic() - t0
    print(f'# noticed in {noticed:.1f} s: {si["error-desc"]} / {di["error-desc"]}')
    # Generous: the check itself fires at the timeout; the bound only
    # keeps a check that never fires (TCP's 15 minutes) from passing.
    assert noticed < timeout_ms / 1000 + 5, noticed
    assert 'x-postcopy-stall-timeout' in di['error-desc'], di
    assert 'x-postcopy-stall-timeout' in si['error-desc'], si
    resume_to_end(src, dst)
    relay.close()


def unix_socket(opts):
    """The whole postcopy over unix: sockets, recovered over another."""
    preempt, = opts.extra
    path = os.path.join(tmpdir(), 'mig.sock')
    src, dst = pair('512M', 1, preempt=preempt, dst_incoming=f'unix:{path}')
    start_slow(src, dst)
    pause(src)
    paused(src, dst)
    resume_to_end(src, dst, recover_listen(dst, f'unix:{path}.2'))


def fd_passed(opts):
    """libvirt's way: the resumed stream's socket made outside and passed
    to both with getfd; migrate-recover fd:, migrate resume fd:."""
    src, dst = paused_pair('512M', 1)
    a, b = socket.socketpair()
    assert send_fd(dst.qmp, 'rec', b.fileno()) == {'return': {}}
    assert send_fd(src.qmp, 'migrate', a.fileno()) == {'return': {}}
    a.close(), b.close()
    assert dst.qmp.cmd('migrate-recover', {'uri': 'fd:rec'}) == {'return': {}}
    resume_to_end(src, dst, 'fd:migrate')


def recover_on_connect(opts):
    """libvirt 9.0's --postcopy-resume order: migrate-recover on the
    destination's tcp port, then the source's libvirt connects to it and
    only then passes the socket to the source (getfd, migrate resume
    fd:), returns from that at once, and finishes the destination's job,
    which fails if the destination still says postcopy-paused.  So the
    destination is postcopy-recover on the connection, as QEMU 7.2 on
    accept, before the source has written a byte: it waited for the
    channel header, which the source writes after its migrate, and
    /libvirt/migrate failed 5 times in 36 on a loaded host."""
    src, dst = paused_pair('512M', 1)
    src.qmp.cmd('migrate-set-parameters', {'max-postcopy-bandwidth': 0})
    events(src), events(dst)
    host, port = recover_listen(dst)[len('tcp:'):].rsplit(':', 1)
    conn = socket.create_connection((host, int(port)))
    ev = dst.qmp.event('MIGRATION', 10)['data']['status']
    assert ev == 'postcopy-recover', ev
    assert events(src) == [], 'the source was told nothing yet'
    assert send_fd(src.qmp, 'migrate', conn.fileno()) == {'return': {}}
    conn.close()
    resume_to_end(src, dst, 'fd:migrate')


def stray_during_recovery(opts):
    """A connection to the recovery's port that is not the paused
    migration's (here: one that sends nothing in time, then one with a
    wrong header) makes the destination postcopy-recover, then paused
    again, saying why; the real source still recovers through the same
    listener."""
    src, dst = paused_pair('512M', 1)
    uri = recover_listen(dst)
    host, port = uri[len('tcp:'):].rsplit(':', 1)
    with socket.create_connection((host, int(port))) as c:
        c.sendall(b'NOT A MIGRATION STREAM' * 4)
        st = [dst.qmp.event('MIGRATION', 10)['data']['status'] for _ in range(2)]
    assert st == ['postcopy-recover', 'postcopy-paused'], st
    d = dst.qmp.cmd('query-migrate')['return']
    assert d['status'] == 'postcopy-paused' and d.get('error-desc'), d
    src.qmp.cmd('migrate-set-parameters', {'max-postcopy-bandwidth': 0})
    r = src.qmp.cmd('migrate', {'uri': uri, 'resume': True})
    assert r == {'return': {}}, r
    src.wait_status({'postcopy-active', 'completed'}, 30)
    dst.wait_status({'postcopy-active', 'completed'}, 30)
    finish(src, dst, timeout=60)
    verify_goes_on(src, dst)


def pause_is_paused(opts):
    """migrate-pause returns once its side is postcopy-paused: a client
    acts on the reply.  libvirt 9.0's domjobabort --postcopy sends it to
    the source, marks the domain "paused (post-copy failed)" and a
    --postcopy-resume right after begins with the source's query-migrate,
    refusing unless it says postcopy-paused ("QEMU reports migration is
    still running": /libvirt/migrate failed so on a loaded host, the
    push, held to 1 MB/s, asleep for its share of the link when the
    connection was shut down).  Each side in turn, the push as slow."""
    src, dst = pair('512M', 1)
    start_slow(src, dst, bw=1 << 20)
    for vm, other in ((src, dst), (dst, src)):
        if vm is dst:
            resume(src, dst)
            time.sleep(0.3)
        pause(vm)
        st = vm.qmp.cmd('query-migrate')['return']
        assert st['status'] == 'postcopy-paused' and st.get('error-desc'), st
        other.wait_status({'postcopy-paused'}, 30)
    resume_to_end(src, dst)


def pause_while_recovering(opts):
    """migrate-pause on the destination while it is postcopy-recover for a
    connection that has not yet said what it is (it sends nothing): the
    connection is dropped and the destination is postcopy-paused, saying
    so; a migrate-recover after it and the source's resume complete."""
    src, dst = paused_pair('512M', 1)
    host, port = recover_listen(dst)[len('tcp:'):].rsplit(':', 1)
    with socket.create_connection((host, int(port))) as c:
        ev = dst.qmp.event('MIGRATION', 10)['data']['status']
        assert ev == 'postcopy-recover', ev
        pause(dst)
        d = dst.qmp.cmd('query-migrate')['return']
        assert d['status'] == 'postcopy-paused', d
        assert 'migrate-pause' in d.get('error-desc', ''), d
        c.settimeout(10)
        assert c.recv(64) == b'', 'the connection stays open'
    assert events(dst) == ['postcopy-paused']
    resume_to_end(src, dst)


def demand_only(opts):
    """migrate -p -n: no push; broken while the guest asks for pages,
    every page after the break comes on demand through the resumed
    stream (requests waiting at the break asked again)."""
    src, dst = pair('128M', 1)
    hmp = HMP(src.hmp_sock)
    src.m.wait_line(r'^verify: round=1 ', 120)
    assert hmp.run('migrate_set_parameter max-bandwidth 0') == ''
    assert hmp.run(f'migrate -d -p -n {dst.listen_uri()}') == ''
    src.wait_status({'postcopy-active'}, 60)
    time.sleep(0.3)
    before = src.qmp.cmd('query-migrate')['return']['ram']['postcopy-requests']
    pause(src)
    paused(src, dst)
    resume(src, dst)
    info, _ = finish(src, dst, timeout=120)
    assert info['ram']['postcopy-requests'] > before + 100, (before, info['ram'])
    verify_goes_on(src, dst)


def hugepages(opts):
    """2 MiB pages: a huge page half received at the break is dropped and
    comes again whole; the guest's memory checks out."""
    with HugePages(2 * 256 + 8):
        src, dst = pair(None, 2, extra=backend_args(
            'memory-backend-memfd,size=512M,hugetlb=on,hugetlbsize=2M'))
        # At once: on a quiet host the guest asked for all 256 huge pages
        # within the usual 0.3 s, and the migration completed first.
        start_slow(src, dst, bw=16 << 20, settle=0)
        pause(src)
        paused(src, dst)
        resume_to_end(src, dst)


def destination_killed(opts):
    """The destination dies while paused: the source stays paused with
    all its state (its guest's newest memory was there: running it here
    would fork the guest's history), says so, and a resume to nobody is
    refused; cont stays refused."""
    src, dst = paused_pair('512M', 1)
    uri = recover_listen(dst)
    dst.m.kill()
    events(src)
    r = src.qmp.cmd('migrate', {'uri': uri, 'resume': True})
    assert r == {'return': {}}, r
    si = src.wait_status({'postcopy-paused'}, 30)
    assert 'Connection refused' in si['error-desc'], si
    assert events(src)[-1] == 'postcopy-paused'
    si = src.qmp.cmd('query-migrate')['return']
    assert si['status'] == 'postcopy-paused' and 'error-desc' in si, si
    refuses_cont(src)
    assert src.m.proc.poll() is None


def errors(opts):
    """QEMU's refusals, word for word, in the wrong states."""
    src, dst = pair('256M', 1)
    for v in (src, dst):
        r = v.qmp.cmd('migrate-pause')
        assert r['error']['desc'] == ('migrate-pause is currently only '
                                      'supported during postcopy-active or '
                                      'postcopy-recover state'), r
        r = v.qmp.cmd('migrate-recover', {'uri': 'tcp:127.0.0.1:0'})
        assert r['error']['desc'] == ('Migrate recover can only be run when '
                                      'postcopy is paused.'), r
    r = src.qmp.cmd('migrate', {'uri': dst.listen_uri(), 'resume': True})
    assert r['error']['desc'] == 'Cannot resume if there is no paused migration', r
    start_slow(src, dst, bw=4 << 20)
    r = dst.qmp.cmd('migrate-recover', {'uri': 'tcp:127.0.0.1:0'})
    assert r['error']['desc'] == ('Migrate recover can only be run when '
                                  'postcopy is paused.'), r
    r = src.qmp.cmd('migrate', {'uri': dst.listen_uri(), 'resume': True})
    assert r['error']['desc'] == 'Cannot resume if there is no paused migration', r
    pause(src)
    paused(src, dst)
    r = src.qmp.cmd('migrate-recover', {'uri': 'tcp:127.0.0.1:0'})
    assert r['error']['desc'] == ('Migrate recover can only be run when '
                                  'postcopy is paused.'), r
    r = dst.qmp.cmd('migrate-recover', {'uri': 'file:/tmp/never'})
    assert r['error']['desc'] == 'Postcopy is not supported with file: migration', r
    r = src.qmp.cmd('migrate', {'uri': 'exec:cat', 'resume': True})
    assert r['error']['desc'] == 'Postcopy is not supported with exec: migration', r
    uri = recover_listen(dst)
    r = dst.qmp.cmd('migrate-recover', {'uri': 'tcp:127.0.0.1:0'})
    assert r['error']['desc'] == 'Migrate recovery is triggered already', r
    r = dst.qmp.cmd('migrate', {'uri': uri, 'resume': True})
    assert r['error']['desc'] == 'Cannot resume if there is no paused migration', r
    resume_to_end(src, dst, uri)


def events_first(opts):
    """After a resume the destination's postcopy-active is on its monitor
    before the source can say postcopy-active.  libvirt's
    --postcopy-resume calls the destination's Finish once the source is
    active, and fails the job ("job 'migration in' failed in post-copy
    phase") if the last event it has there is still postcopy-paused.  The
    destination's main thread, which writes the events, is held (ptrace)
    over the whole handshake: the source must not go on meanwhile
    (before: RESUME_ACK went out with the event still queued)."""
    src, dst = paused_pair('512M', 2)
    src.qmp.cmd('migrate-set-parameters', {'max-postcopy-bandwidth': 0})
    events(src), events(dst)
    # The channel header (docs/migration-stream.md) goes through: the
    # destination reads it before it takes the connection.
    relay = HeldRelay(recover_listen(dst), first=25)
    try:
        r = src.qmp.cmd('migrate', {'uri': relay.uri, 'resume': True})
        assert r == {'return': {}}, r
        # The connection is in and its load thread started: what is
        # left is the handshake, with nothing from the source yet.
        ev = dst.qmp.event('MIGRATION', 30)['data']['status']
        assert ev == 'postcopy-recover', ev
        with ThreadHeld(dst.m.proc.pid):
            relay.release()
            got, deadline = [], time.monotonic() + 3
            with contextlib.suppress(TimeoutError, socket.timeout):
                while 'postcopy-active' not in got:
                    got.append(src.qmp.event(
                        'MIGRATION', max(0.01, deadline - time.monotonic()))
                        ['data']['status'])
            if 'postcopy-active' in got:
                d = None
                with contextlib.suppress(TimeoutError, socket.timeout):
                    d = dst.qmp.event('MIGRATION', 0.2)['data']['status']
                assert d == 'postcopy-active', (
                    f'the source said postcopy-active ({got}) before the '
                    f'destination did ({d})')
        ev = dst.qmp.event('MIGRATION', 30)['data']['status']
        assert ev == 'postcopy-active', ev
        while 'postcopy-active' not in got:
            got.append(src.qmp.event('MIGRATION', 30)['data']['status'])
        assert got == SRC_STATES, got
        finish(src, dst, timeout=60)
        verify_goes_on(src, dst)
    finally:
        relay.close()


def events_read(opts):
    """After a resume the destination's postcopy-active is not only
    written to its monitors before the source can say postcopy-active,
    but read by them (within a bound): libvirt 9.0 handles an event in
    the thread that reads it, and on a busy host it had not yet read the
    one written a moment before when the source, told the resume was
    done, made it finish the destination's job, which it failed ("job
    'migration in' failed in post-copy phase": /libvirt/migrate failed so
    3 times in 20 on a loaded host).  Here the destination's monitor
    client reads nothing for 30 ms after the resume: the source must not
    be postcopy-active before that read (before: about 1 ms after the
    resume, the events unread)."""
    src, dst = paused_pair('512M', 2)
    src.qmp.cmd('migrate-set-parameters', {'max-postcopy-bandwidth': 0})
    events(src), events(dst)
    uri = recover_listen(dst)
    r = src.qmp.cmd('migrate', {'uri': uri, 'resume': True})
    assert r == {'return': {}}, r
    time.sleep(0.03)
    read_at = time.time()
    ev = [dst.qmp.event('MIGRATION', 30) for _ in range(2)]
    assert [e['data']['status'] for e in ev] == DST_STATES, ev
    while True:
        e = src.qmp.event('MIGRATION', 30)
        if e['data']['status'] == 'postcopy-active':
            break
    active = e['timestamp']['seconds'] + e['timestamp']['microseconds'] / 1e6
    assert active >= read_at - 0.002, (
        f'the source was postcopy-active {(read_at - active) * 1000:.1f} ms '
        'before the destination\'s events were read')
    finish(src, dst, timeout=60)
    verify_goes_on(src, dst)


def libvirt_recovery(opts):
    """libvirt's conversation (../shared/reference/libvirt-observed.md,
    mig4 and mig5), word for word: virsh migrate --postcopy
    --postcopy-bandwidth, domjobabort --postcopy (migrate-pause on the
    source), then virsh migrate --postcopy-resume: on the destination
    query-migrate (postcopy-paused, with socket-address) and migrate-recover
    on tcp:[::]:PORT (libvirt 9.0 sends it in band; newer ones out of
    band, as /postcopy/recovery/twice does); on the source query-migrate,
    max-postcopy-bandwidth, getfd and migrate resume on fd:migrate."""
    from test_migration import Vm
    src = Vm('512M', 2)
    dst = Vm('512M', 2, incoming='defer', extra=['-S'])
    try:
        libvirt_start(src, dst, {'max-bandwidth': 64 << 20,
                                 'max-postcopy-bandwidth': 8 << 20})
        libvirt_switch(src, dst)
        time.sleep(0.5)
        # virsh domjobabort --postcopy
        assert src.qmp.cmd('migrate-pause') == {'return': {}}
        for v in (src, dst):
            while v.qmp.event('MIGRATION', 30)['data']['status'] != 'postcopy-paused':
                pass
        # virsh migrate --postcopy-resume: the destination first.
        d = dst.qmp.cmd('query-migrate')['return']
        assert d['status'] == 'postcopy-paused' and d['socket-address'], d
        r = dst.qmp.cmd('migrate-recover', {'uri': 'tcp:[::]:0'}, id='libvirt-42')
        assert r == {'return': {}, 'id': 'libvirt-42'}, r
        port = dst.qmp.cmd('query-migrate')['return']['socket-address'][0]['port']
        assert src.qmp.cmd('query-migrate')['return']['status'] == 'postcopy-paused'
        src.qmp.cmd('migrate-set-parameters', {'max-postcopy-bandwidth': 0})
        sock = socket.create_connection(('127.0.0.1', int(port)))
        send_fd(src.qmp, 'migrate', sock.fileno())
        sock.close()
        assert src.qmp.cmd('migrate', {'detach': True, 'resume': True,
                                       'uri': 'fd:migrate'}) == {'return': {}}
        got = []
        while got[-1:] != ['completed']:
            got.append(src.qmp.event('MIGRATION', 60)['data']['status'])
        assert got == SRC_STATES + ['completed'], got
        got = []
        while got[-1:] != ['completed']:
            got.append(dst.qmp.event('MIGRATION', 60)['data']['status'])
        assert got == DST_STATES + ['completed'], got
        verify_goes_on(src, dst)
    finally:
        src.close()
        dst.close()


def fault_shards(opts):
    """x-postcopy-fault-threads (and x-postcopy-minor-faults): guest RAM
    in two ranges, each with its own userfaultfd and fault thread, and
    each vCPU rewriting its own (verify split=1), cut while both run on
    the destination; after the resume pages are
    still asked for, both ranges took faults, and the guest checks out.
    With MINOR faults the push's pages wait in the page cache, unmapped,
    across the pause, and some are mapped on a touch (minor faults)."""
    obj, minor, preempt = opts.extra
    # Each vCPU rewrites its own half of RAM, the range of one thread.
    src, dst = pair(None, 2, append='verify split=1 cpus=2', preempt=preempt,
                    extra=backend_args(obj))
    r = dst.qmp.cmd('migrate-set-parameters',
                    {'x-postcopy-fault-threads': 2,
                     'x-postcopy-minor-faults': minor})
    assert r == {'return': {}}, r
    start_slow(src, dst)
    cut_tcp(src, 2 if preempt else 1)
    paused(src, dst)
    before = [sh['requests'] for sh in
              dst.qmp.cmd('query-migrate')['return']['x-postcopy-fault-shards']]
    resume_to_end(src, dst)
    shards = dst.qmp.cmd('query-migrate')['return']['x-postcopy-fault-shards']
    assert len(shards) == 2, shards
    assert all(sh['faults'] for sh in shards), shards
    assert sum(sh['requests'] for sh in shards) > sum(before), (before, shards)
    if minor:
        assert sum(sh['minor'] for sh in shards) > 0, shards


CASES = [
    ('/postcopy/recovery/plain', plain, MachineOptions(extra=[False])),
    ('/postcopy/preempt/recovery/plain', plain, MachineOptions(extra=[True])),
    ('/postcopy/recovery/twice', twice, MachineOptions()),
    ('/postcopy/recovery/connection-cut', connection_cut, MachineOptions(extra=[False])),
    ('/postcopy/preempt/recovery/connection-cut', connection_cut,
     MachineOptions(extra=[True])),
    ('/postcopy/recovery/double-failures/handshake', handshake_fails,
     MachineOptions()),
    ('/postcopy/recovery/double-failures/reconnect', handshake_broken,
     MachineOptions()),
    ('/postcopy/recovery/unix', unix_socket, MachineOptions(extra=[False])),
    ('/postcopy/preempt/recovery/unix', unix_socket, MachineOptions(extra=[True])),
    ('/postcopy/recovery/fd', fd_passed, MachineOptions()),
    ('/postcopy/recovery/recover-on-connect', recover_on_connect, MachineOptions()),
    ('/postcopy/recovery/stray-connection', stray_during_recovery, MachineOptions()),
    ('/postcopy/recovery/pause-is-paused', pause_is_paused, MachineOptions()),
    ('/postcopy/recovery/pause-while-recovering', pause_while_recovering,
     MachineOptions()),
    ('/postcopy/recovery/demand-only', demand_only, MachineOptions()),
    ('/postcopy/recovery/hugetlb-2M', hugepages, MachineOptions()),
    ('/postcopy/recovery/destination-killed', destination_killed, MachineOptions()),
    ('/postcopy/recovery/errors', errors, MachineOptions()),
    ('/postcopy/recovery/libvirt', libvirt_recovery, MachineOptions()),
    ('/postcopy/recovery/events-first', events_first, MachineOptions()),
    ('/postcopy/recovery/events-read', events_read, MachineOptions()),
    ('/postcopy/recovery/silent-partition', silent_partition,
     MachineOptions(extra=[False])),
    ('/postcopy/preempt/recovery/silent-partition', silent_partition,
     MachineOptions(extra=[True])),
    ('/postcopy/recovery/fault-threads', fault_shards,
     MachineOptions(extra=['memory-backend-memfd,size=512M', False, False])),
    ('/postcopy/preempt/recovery/minor', fault_shards,
     MachineOptions(extra=['memory-backend-memfd,size=512M', True, True])),
]

if __name__ == '__main__':
    run_cases(CASES)
