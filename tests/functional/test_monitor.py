#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""QMP and HMP sessions against a real ferry, bad input included."""
import contextlib
import json
import os
import socket
import stat
import subprocess
import time

from ferrytest import (FERRY, GUEST, HMP, QMP, Machine, MachineOptions,
                       STATUS_OK, run_cases, tmpdir)


def qmp_machine(extra=(), append='idle', serial=False):
    d = tmpdir()
    sock = os.path.join(d, 'qmp.sock')
    opts = MachineOptions(mem='128M', append=append,
                          extra=['-qmp', f'unix:{sock},server=on,wait=off'] +
                          list(extra))
    m = Machine(opts)
    return m, sock


def err(reply, cls, desc):
    assert 'error' in reply, reply
    assert reply['error']['class'] == cls, reply
    assert reply['error']['desc'] == desc, reply


def session(opts):
    """Negotiation, ids, query-status, query-version, query-commands."""
    m, sock = qmp_machine()
    with m:
        q = QMP(sock, negotiate=False)
        ver = q.greeting['QMP']['version']
        assert ver['qemu']['major'] >= 7 and ver['package'].startswith('ferry')
        assert q.greeting['QMP']['capabilities'] == ['oob']
        err(q.cmd('query-status'), 'CommandNotFound',
            "Expecting capabilities negotiation with 'qmp_capabilities'")
        assert q.cmd('qmp_capabilities') == {'return': {}}
        err(q.cmd('qmp_capabilities'), 'CommandNotFound',
            'Capabilities negotiation is already complete, command ignored')
        assert q.cmd('query-status', id='a1') == {
            'return': {'running': True, 'status': 'running'}, 'id': 'a1'}
        assert q.cmd('query-version')['return']['package'] == 'ferry-0.1.0'
        names = {c['name'] for c in q.cmd('query-commands')['return']}
        assert {'qmp_capabilities', 'query-status', 'stop', 'cont', 'quit',
                'query-version', 'query-commands'} <= names, names
        # The socket is the owner's only.
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        # Out-of-band: refused as a member before "oob" is enabled.
        q.send_raw(b'{"exec-oob": "migrate-pause", "id": 9}\n')
        r = q.reply()
        assert r['error']['desc'] == "QMP input member 'exec-oob' is unexpected", r


def oob(opts):
    """The oob capability, as QEMU and libvirt use it: enabled at
    negotiation, then exec-oob for the commands that allow it (the
    postcopy recovery ones), refused for the others."""
    m, sock = qmp_machine()
    with m:
        q = QMP(sock, negotiate=False)
        r = q.cmd('qmp_capabilities', {'enable': ['nope']})
        assert 'error' in r, r
        assert q.cmd('qmp_capabilities', {'enable': ['oob']}) == {'return': {}}
        q.send_raw(b'{"exec-oob": "migrate-pause", "id": "p"}\n')
        r = q.reply()
        assert r == {'error': {'class': 'GenericError', 'desc':
                               'migrate-pause is currently only supported '
                               'during postcopy-active or postcopy-recover '
                               'state'}, 'id': 'p'}, r
        q.send_raw(b'{"exec-oob": "query-status", "id": 1}\n')
        r = q.reply()
        assert r['error']['desc'] == 'The command query-status does not support OOB', r
        assert q.cmd('query-status')['return']['status'] == 'running'


def stop_cont(opts):
    """stop and cont change the state, emit STOP and RESUME to every client."""
    m, sock = qmp_machine()
    with m:
        a, b = QMP(sock), QMP(sock)
        c = QMP(sock, negotiate=False)      # still negotiating: no events
        assert a.cmd('stop') == {'return': {}}
        for q in (a, b):
            ev = q.event('STOP')
            assert set(ev['timestamp']) == {'seconds', 'microseconds'}
        assert b.cmd('query-status')['return'] == {'running': False,
                                                    'status': 'paused'}
        assert a.cmd('stop') == {'return': {}}      # again: no error
        assert a.cmd('cont') == {'return': {}}
        a.event('RESUME')
        b.event('RESUME')
        assert b.cmd('query-status')['return']['status'] == 'running'
        c.sock.settimeout(0.3)
        try:
            msg = c._read()
            raise AssertionError(f'negotiating client got {msg}')
        except (socket.timeout, TimeoutError):
            pass


def bad_input(opts):
    """Every kind of bad input gets an error reply; the session goes on."""
    m, sock = qmp_machine()
    with m:
        q = QMP(sock)
        cases = [
            (b'{ bad json\n', 'GenericError', 'JSON parse error, invalid character'),
            (b'[1, 2]\n', 'GenericError', 'QMP input must be a JSON object'),
            (b'"hello"\n', 'GenericError', 'QMP input must be a JSON object'),
            (b'{"arguments": {}}\n', 'GenericError', "QMP input lacks member 'execute'"),
            (b'{"execute": 42}\n', 'GenericError', "QMP input member 'execute' must be a string"),
            (b'{"execute": "stop", "arguments": [1]}\n', 'GenericError',
             "QMP input member 'arguments' must be an object"),
            (b'{"execute": "stop", "bogus": 1}\n', 'GenericError',
             "QMP input member 'bogus' is unexpected"),
            (b'{"execute": "no-such-command"}\n', 'CommandNotFound',
             'The command no-such-command has not been found'),
            (b'{"execute": "stop", "arguments": {"x": 1}}\n', 'GenericError',
             "Parameter 'x' is unexpected"),
            (b'{"a": "' + b'x' * (2 << 20) + b'"}\n', 'GenericError',
             'JSON message too large'),
            (b'[' * 2000 + b']' * 2000 + b'\n', 'GenericError',
             'JSON nesting depth limit exceeded'),
            # Never closed: answered at once, and the next line is read.
            (b'[' * 100000 + b'\n', 'GenericError',
             'JSON nesting depth limit exceeded'),
        ]
        for data, cls, desc in cases:
            q.send_raw(data)
            err(q.reply(), cls, desc)
            assert q.cmd('query-status')['return']['status'] == 'running'
        # Two requests in one write, one request over several.
        q.send_raw(b'{"execute":"query-status","id":1}{"execute":"query-status","id":2}')
        assert q.reply()['id'] == 1 and q.reply()['id'] == 2
        for piece in (b'{"exec', b'ute": "query-', b'status", "id": 3}'):
            q.send_raw(piece)
            time.sleep(0.05)
        assert q.reply()['id'] == 3
        # An id comes back exactly as it was sent, whatever JSON it is.
        for raw in (b'18446744073709551616', b'-9223372036854775809',
                    b'1.5e300', b'1e999', b'"caf\\u00e9"', b'{"a": [1, null]}',
                    b'[]', b'0.1000000000000000055511151231257827'):
            q.send_raw(b'{"execute": "query-status", "id": ' + raw + b'}\n')
            line = q.read_line()
            assert line.rstrip().endswith(b'"id": ' + raw + b'}'), (raw, line)
            assert b'return' in line, line
        # A client that disconnects mid-message leaves the others alone.
        r = QMP(sock)
        r.send_raw(b'{"execute": "stop"')
        r.close()
        assert q.cmd('query-status')['return']['status'] == 'running'


def tcp_and_quit(opts):
    """QMP over TCP; quit replies, emits SHUTDOWN and ends with status 0."""
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    m = Machine(MachineOptions(mem='128M', extra=[
        '-qmp', f'tcp:127.0.0.1:{port},server=on,wait=off']))
    with m:
        q = QMP(addr=('127.0.0.1', port))
        assert q.cmd('quit') == {'return': {}}
        ev = q.event('SHUTDOWN')
        assert ev['data'] == {'guest': False, 'reason': 'host-qmp-quit'}, ev
        assert m.wait_exit(10) == 0


def rss_kib(pid):
    for line in open(f'/proc/{pid}/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1])
    raise AssertionError('no VmRSS')


def qmp_memory(opts):
    """libvirt polls a VM for its whole life: many calls cost no memory
    (every reply's JSON tree leaked: 18 KB a query-migrate-capabilities).
    A client that sends and never reads is not read from either once its
    replies pile up (QEMU suspends the monitor): ferry does not grow, and
    the client still gets every reply in order when it reads."""
    import threading
    m, sock = qmp_machine()
    with m:
        q = QMP(sock)
        req = b'{"execute": "query-migrate-capabilities"}\n'

        def calls(n):
            for _ in range(n // 100):
                q.send_raw(req * 100)
                for _ in range(100):
                    assert 'return' in q.reply()
        calls(2000)
        before = rss_kib(m.proc.pid)
        calls(20000)
        grew = rss_kib(m.proc.pid) - before
        assert grew < 4096, f'{grew} KiB more after 20,000 calls'

        # Sends and does not read: its writes block once ferry stops
        # reading; ferry's memory stays bounded.
        lazy = socket.socket(socket.AF_UNIX)
        lazy.connect(sock)
        lazy.settimeout(30)
        f = lazy.makefile('rwb')
        f.readline()                                # greeting
        f.write(b'{"execute": "qmp_capabilities"}\n')
        f.flush()
        assert b'return' in f.readline()
        n = 50000
        sent = []

        def send():
            with contextlib.suppress(OSError):
                for i in range(n // 1000):
                    lazy.sendall((b'{"execute": "query-migrate-capabilities", '
                                  b'"id": %d}\n' % i) * 1000)
                    sent.append(i)
        t = threading.Thread(target=send, daemon=True)
        t.start()
        before = rss_kib(m.proc.pid)
        time.sleep(3)
        grew = rss_kib(m.proc.pid) - before
        assert grew < 8192, f'{grew} KiB more with a client not reading'
        assert len(sent) < n // 1000, 'ferry read everything without answering'
        # Another session is served meanwhile.
        assert QMP(sock).cmd('query-status')['return']['status'] == 'running'
        # The client reads: every reply comes, in order.
        for i in range(n // 1000):
            for _ in range(1000):
                r = json.loads(f.readline())
                assert r['id'] == i and 'return' in r, r
        t.join(30)


def signals(opts):
    """SIGTERM, SIGINT and SIGHUP end ferry as QEMU: SHUTDOWN with reason
    host-signal, exit status 0, its monitor sockets removed (libvirt
    stops its probe and its domains so).  Also with a migration waiting
    on -incoming."""
    import signal as sig
    for signo in (sig.SIGTERM, sig.SIGINT, sig.SIGHUP):
        d = tmpdir()
        qs, hs = os.path.join(d, 'qmp.sock'), os.path.join(d, 'hmp.sock')
        m = Machine(MachineOptions(mem='128M', extra=[
            '-qmp', f'unix:{qs},server=on,wait=off',
            '-monitor', f'unix:{hs},server=on,wait=off',
            '-incoming', 'tcp:127.0.0.1:0']))
        with m:
            q = QMP(qs)
            m.proc.send_signal(signo)
            ev = q.event('SHUTDOWN')
            assert ev['data'] == {'guest': False, 'reason': 'host-signal'}, ev
            assert m.wait_exit(10) == 0, signo
            assert not os.path.exists(qs) and not os.path.exists(hs), signo


def prelaunch(opts):
    """-S: the guest waits in prelaunch until cont, then runs."""
    m, sock = qmp_machine(extra=['-S'], append='verify rounds=2')
    with m:
        q = QMP(sock)
        assert q.cmd('query-status')['return'] == {'running': False,
                                                    'status': 'prelaunch'}
        time.sleep(0.3)
        assert not m.lines, m.lines             # the guest has not run
        assert q.cmd('cont') == {'return': {}}
        q.event('RESUME')
        m.wait_line(r'^verify: done', 60)
        assert m.wait_exit(30) == STATUS_OK


def hmp(opts):
    """HMP: help, info status, stop, cont, errors, quit; QEMU's texts."""
    d = tmpdir()
    hsock = os.path.join(d, 'hmp.sock')
    m, qsock = qmp_machine(extra=['-monitor', f'unix:{hsock},server=on,wait=off'])
    with m:
        q = QMP(qsock)
        h = HMP(hsock, timeout=5)
        assert "type 'help' for more information" in h.banner
        run = h.run

        help_text = run('help')
        for c in ('cont|c', 'info', 'quit|q', 'stop|s', 'help|?'):
            assert c in help_text, help_text
        assert run('info status') == 'VM status: running\n'
        assert run('stop') == ''
        q.event('STOP')
        assert run('info status') == 'VM status: paused\n'
        assert run('c') == ''
        q.event('RESUME')
        assert run('info status') == 'VM status: running\n'
        assert run('frobnicate') == "unknown command: 'frobnicate'\n"
        assert run('info nothing') == "unknown command: 'info nothing'\n"
        assert 'info status' in run('info')
        assert run('') == ''
        h.send('quit')
        ev = q.event('SHUTDOWN')
        assert ev['data']['reason'] == 'host-qmp-quit'
        assert m.wait_exit(10) == 0


def hmp_stdio(opts):
    """-monitor stdio: the console on the terminal; quit ends the process."""
    p = subprocess.run([FERRY, '-m', '128M', '-kernel', GUEST, '-append', 'idle',
                        '-serial', 'none', '-monitor', 'stdio', '-S'],
                       input='info status\ncont\ninfo status\nquit\n',
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, (p.returncode, p.stderr)
    assert p.stdout.count('(ferry) ') >= 4, p.stdout
    assert 'VM status: paused (prelaunch)\n' in p.stdout, p.stdout
    assert 'VM status: running\n' in p.stdout, p.stdout


def daemonize(opts):
    """-daemonize: the parent returns 0 once the VM is up; pidfile; quit."""
    d = tmpdir()
    sock, pidfile, serial = (os.path.join(d, n) for n in
                             ('qmp.sock', 'ferry.pid', 'serial.txt'))
    p = subprocess.run([FERRY, '-m', '128M', '-kernel', GUEST, '-append', 'idle',
                        '-serial', f'file:{serial}', '-daemonize',
                        '-pidfile', pidfile,
                        '-qmp', f'unix:{sock},server=on,wait=off'],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    pid = int(open(pidfile).read())
    try:
        deadline = time.monotonic() + 20
        while 'idle' not in open(serial).read():
            assert time.monotonic() < deadline, 'the guest never said idle'
            time.sleep(0.05)
        q = QMP(sock)
        assert q.cmd('query-status')['return']['status'] == 'running'
        q.cmd('quit')
        deadline = time.monotonic() + 10
        while os.path.exists(f'/proc/{pid}') and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(f'/proc/{pid}'), 'daemon still running'
        assert not os.path.exists(pidfile)
    finally:
        if os.path.exists(f'/proc/{pid}'):
            os.kill(pid, 9)
    bad = subprocess.run([FERRY, '-kernel', GUEST, '-daemonize'],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and 'cannot be used with stdio' in bad.stderr


def bad_monitor_options(opts):
    """Monitor options that cannot work are refused at start, clearly."""
    for args, want in [
        (['-qmp', 'unix:/nonexistent-dir/x.sock,server=on,wait=off'],
         'Failed to bind socket to /nonexistent-dir/x.sock'),
        (['-qmp', 'unix:/tmp/x.sock'], 'give server=on,wait=off'),
        (['-qmp', 'pty'], 'expected unix:PATH, tcp:HOST:PORT or fd:N'),
        (['-monitor', 'unix:/tmp/y.sock,server=on,wait=off,bogus=1'],
         "unknown option 'bogus=1'"),
        # The real cause, not 'Address already in use'.
        (['-qmp', f'unix:{tmpdir()},server=on,wait=off'],
         'exists and is not a socket'),
    ]:
        p = subprocess.run([FERRY, '-kernel', GUEST, '-serial', 'none'] + args,
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 1, (args, p.returncode)
        assert want in p.stderr and p.stderr.count('\n') == 1, (args, p.stderr)
        assert 'Address already in use' not in p.stderr, (args, p.stderr)


O = MachineOptions()


def cpu_seconds(pid):
    f = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf('SC_CLK_TCK')


def fd_limit(opts):
    """At its fd limit ferry cannot accept a connection that waits: it
    backs off (QMP, HMP and the incoming port) instead of spinning on a
    listening socket that stays readable, and takes the connections once
    fds are free again."""
    import resource
    d = tmpdir()
    qs, hs = os.path.join(d, 'qmp.sock'), os.path.join(d, 'hmp.sock')

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    p = subprocess.Popen([FERRY, '-m', '64M', '-kernel', GUEST, '-append', 'idle',
                          '-qmp', f'unix:{qs},server=on,wait=off',
                          '-monitor', f'unix:{hs},server=on,wait=off',
                          '-incoming', 'tcp:127.0.0.1:0'],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         preexec_fn=low_limit)
    try:
        q = QMP(qs)
        a = q.cmd('query-migrate')['return']['socket-address'][0]
        clients = []
        targets = ((socket.AF_UNIX, qs), (socket.AF_UNIX, hs),
                   (socket.AF_INET, (a['host'], int(a['port']))))
        deadline = time.monotonic() + 20
        # Connect until ferry holds 64 fds, then one more to each: those
        # wait in the backlogs.
        while len(os.listdir(f'/proc/{p.pid}/fd')) < 64:
            assert time.monotonic() < deadline, 'ferry never reached its limit'
            c = socket.socket(socket.AF_UNIX)
            c.setblocking(False)
            c.connect_ex(qs)                # a full backlog: EAGAIN
            clients.append(c)
            time.sleep(0.01)
        for family, addr in targets:
            c = socket.socket(family)
            c.setblocking(False)
            c.connect_ex(addr)
            clients.append(c)
        time.sleep(0.5)
        t0 = cpu_seconds(p.pid)
        time.sleep(2)
        used = cpu_seconds(p.pid) - t0
        # An idle guest and three accept watches backing off: well under
        # the 2 s a spinning watch takes.
        assert used < 0.5, f'{used:.2f} s of CPU in 2 s at the fd limit'
        for c in clients:
            c.close()
        q2 = QMP(qs, timeout=5)
        assert q2.cmd('query-status')['return']['status'] == 'inmigrate'
        assert q.cmd('query-status')['return']['status'] == 'inmigrate'
    finally:
        p.kill()
        p.wait()


cases = [
    ('/monitor/qmp/session', session, O),
    ('/monitor/qmp/oob', oob, O),
    ('/monitor/qmp/stop-cont-events', stop_cont, O),
    ('/monitor/qmp/bad-input', bad_input, O),
    ('/monitor/qmp/tcp-quit', tcp_and_quit, O),
    ('/monitor/qmp/prelaunch-cont', prelaunch, O),
    ('/monitor/signals', signals, O),
    ('/monitor/qmp/memory', qmp_memory, O),
    ('/monitor/hmp/session', hmp, O),
    ('/monitor/hmp/stdio', hmp_stdio, O),
    ('/monitor/daemonize', daemonize, O),
    ('/monitor/bad-options', bad_monitor_options, O),
    ('/monitor/fd-limit', fd_limit, O),
]

if __name__ == '__main__':
    run_cases(cases)
