# SPDX-License-Identifier: GPL-2.0-or-later
"""The framework every functional test shares.

A test is a table of cases, each a name and an options object, run by
run_cases(), which prints TAP (one line per case, with the reason on a
skipped one) so that meson and make check count every case.  Machines
are real ferry (or QEMU) processes; their serial output is read line by
line and parsed as docs/test-guest.md documents it.
"""
import atexit
import contextlib
import ctypes
import dataclasses
import errno
import fcntl
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

FERRY = os.environ.get('FERRY', 'build/system/ferry')
# A sanitizer build (make check-sanitize): every ferry a case started is
# ended as a user would end it (SIGTERM: a clean quit), and what
# AddressSanitizer, LeakSanitizer or UBSan said fails the case.
SANITIZED = os.environ.get('FERRY_SANITIZED') == '1'
SANITIZER_ERRORS = ('ERROR: AddressSanitizer', 'ERROR: LeakSanitizer',
                    'runtime error:', 'WARNING: ThreadSanitizer')
GUEST = os.environ.get('GUEST', 'build/tests/guest/guest.elf')
QEMU = shutil.which('qemu-system-x86_64')
DEBUG_EXIT = 'isa-debug-exit,iobase=0xf4,iosize=4'
STATUS_OK = 1           # the guest wrote 0 to isa-debug-exit
STATUS_FAIL = 3         # the guest wrote 1


# Every machine started and not yet reaped: run_cases kills what a case
# left behind, so that a failed case cannot leave a guest spinning.
LIVE = []


def _die_with_parent():
    """In the child: get SIGKILL when the test process dies."""
    ctypes.CDLL(None, use_errno=True).prctl(1, 9)     # PR_SET_PDEATHSIG, SIGKILL


def thread_stacks(pid, frames=6):
    """What each thread of process @pid is doing, for a reply that never
    came: gdb's backtraces where gdb is installed, else each thread's
    name and the kernel function it sleeps in."""
    if shutil.which('gdb'):
        try:
            out = subprocess.run(
                ['gdb', '-p', str(pid), '-batch', '-nx',
                 '-ex', f'thread apply all bt {frames}'],
                capture_output=True, text=True, timeout=60).stdout
            return '\n'.join(line for line in out.splitlines()
                             if line.startswith(('Thread ', '#')))
        except subprocess.TimeoutExpired:
            pass
    rows = []
    try:
        for t in sorted(os.listdir(f'/proc/{pid}/task'), key=int):
            with open(f'/proc/{pid}/task/{t}/comm') as f:
                comm = f.read().strip()
            with open(f'/proc/{pid}/task/{t}/wchan') as f:
                rows.append(f'{t} {comm}: {f.read().strip() or "running"}')
    except OSError as e:
        rows.append(f'/proc/{pid}: {e}')
    return '\n'.join(rows)


def live_stacks():
    """thread_stacks of every machine still running."""
    return '\n'.join(f'=== {" ".join(m.args[:3])} (pid {m.proc.pid})\n'
                     f'{thread_stacks(m.proc.pid)}'
                     for m in list(LIVE) if m.proc.poll() is None)


class Skip(Exception):
    """Raised by a case that cannot run here; the message says why."""


@dataclasses.dataclass
class MachineOptions:
    """How to start one machine: the same fields for ferry and QEMU."""
    mem: str = '256M'           # None: leave -m out (a backend sizes RAM)
    smp: int = 1
    append: str = 'idle'
    kernel: str = GUEST
    debug_exit: bool = True
    extra: list = dataclasses.field(default_factory=list)
    qemu: bool = False      # run QEMU instead of ferry


class Machine:
    """A running ferry or QEMU process whose serial output we read."""

    def __init__(self, opts: MachineOptions):
        if opts.qemu and not QEMU:
            raise Skip('qemu-system-x86_64 is not installed')
        if not os.access('/dev/kvm', os.R_OK | os.W_OK):
            raise Skip('/dev/kvm is not usable')
        args = [QEMU, '-enable-kvm', '-cpu', 'host,-arch-capabilities',
                '-display', 'none', '-monitor', 'none', '-no-reboot'] \
            if opts.qemu else [FERRY]
        if opts.mem:
            args += ['-m', opts.mem]
        args += ['-smp', str(opts.smp), '-kernel', opts.kernel,
                 '-append', opts.append, '-serial', 'stdio']
        if opts.debug_exit:
            args += ['-device', DEBUG_EXIT]
        args += opts.extra
        self.args = args
        self.qemu = opts.qemu
        self.report = None      # what a sanitizer said, once ended
        self._err = None
        self.lines = []
        self.times = []         # time.time() at which each line was read
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     bufsize=1, preexec_fn=_die_with_parent)
        LIVE.append(self)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            with self._cond:
                self.times.append(time.time())
                self.lines.append(line.rstrip('\n'))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_line(self, pattern, timeout=60.0):
        """The first output line matching @pattern (a regex), with its match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    m = rx.search(line)
                    if m:
                        return m
                    if line.startswith('FAIL'):
                        raise AssertionError(f'guest reported: {line}')
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and
                                 not self._reader.is_alive()):
                    raise AssertionError(
                        f'no line matching {pattern!r} within {timeout}s; '
                        f'output: {self.lines[-5:]}; stderr: {self.stderr()}')
                self._cond.wait(min(left, 0.5))

    def wait_exit(self, timeout=60.0):
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f'did not exit within {timeout}s; output: '
                                 f'{self.lines[-5:]}')
        self._reader.join(5)
        return status

    def stderr(self):
        if self.proc.poll() is None:
            return ''
        if self._err is None:
            self._err = self.proc.stderr.read() if self.proc.stderr else ''
        return self._err

    def _sanitized_end(self):
        """End a sanitized ferry with SIGTERM; what its sanitizers said."""
        if self.proc.poll() is None:
            self.proc.send_signal(15)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                return 'ferry did not end within 60 s of SIGTERM'
        err = self.stderr()
        found = [line for line in err.splitlines()
                 if any(e in line for e in SANITIZER_ERRORS)]
        if not found:
            return None
        i = err.find(found[0])
        return f'{self.args[:4]}: {err[i:i + 4000]}'

    def kill(self):
        if SANITIZED and not self.qemu and self.report is None:
            self.report = self._sanitized_end() or ''
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        # A daemon thread still inside a read of the pipe at interpreter
        # exit holds the reader's lock, and Python aborts ("could not
        # acquire lock ... at interpreter shutdown"): wait for its EOF.
        self._reader.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()


def run_ferry(args, timeout=30):
    """Run ferry to completion with @args; (status, stdout, stderr)."""
    p = subprocess.run([FERRY] + args, capture_output=True, text=True,
                       timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def todo(reason, fn):
    """A case that hits a known, open bug: it runs, and a failure is
    reported as TODO with @reason rather than failing the suite."""
    def run(opts):
        fn(opts)
    run.todo = reason
    return run


def _end_machines():
    """Kill what a case left behind; what sanitizers said, if anything."""
    reports = []
    while LIVE:
        m = LIVE.pop()
        m.kill()
        if m.report:
            reports.append(m.report)
    return reports


def run_cases(cases):
    """Run [(name, fn, opts)] and print TAP; exit 1 if any case failed.
    FERRY_CASES, a regular expression, runs only the cases it finds."""
    only = os.environ.get('FERRY_CASES')
    if only:
        cases = [c for c in cases if re.search(only, c[0])]
    print(f'1..{len(cases)}', flush=True)
    failed = 0
    for i, (name, fn, opts) in enumerate(cases, 1):
        t0 = time.monotonic()
        try:
            fn(opts)
            reports = _end_machines()
            if reports:
                raise AssertionError('sanitizer: ' + '\n'.join(reports))
            print(f'ok {i} - {name} # {time.monotonic() - t0:.1f}s', flush=True)
        except Skip as e:
            print(f'ok {i} - {name} # SKIP {e}', flush=True)
        except Exception as e:     # noqa: BLE001 - any failure fails the case
            if getattr(fn, 'todo', None):
                # A known bug: reported as TODO, with its last lines.
                print(f'not ok {i} - {name} # TODO {fn.todo}', flush=True)
                for line in traceback.format_exception(e)[-1:]:
                    for sub in line.rstrip().splitlines():
                        print(f'# {sub}', flush=True)
                continue
            failed += 1
            print(f'not ok {i} - {name}', flush=True)
            for line in traceback.format_exception(e):
                for sub in line.rstrip().splitlines():
                    print(f'# {sub}', flush=True)
        finally:
            _end_machines()
    sys.exit(1 if failed else 0)


def tmpdir():
    """A private directory for sockets and files, removed when the
    process exits (every run left one behind in /tmp before), unless
    FERRY_KEEP_TMP is set: then it stays, for the logs in it."""
    d = tempfile.mkdtemp(prefix='ferry-test-')
    if not os.environ.get('FERRY_KEEP_TMP'):
        atexit.register(shutil.rmtree, d, ignore_errors=True)
    return d


class HugePages:
    """Make @n free huge pages of @kib KiB available, and put the pool
    back after.  Tests run in parallel: a lock file keeps two of them
    from resizing the pool at once."""

    def __init__(self, n, kib=2048):
        self.n, self.saved, self.lock = n, None, None
        self.hp = f'/sys/kernel/mm/hugepages/hugepages-{kib}kB/'
        self.what = f'{kib >> 10} MiB'

    def __enter__(self):
        self.lock = open('/tmp/ferry-hugepages.lock', 'w')
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        try:
            free = int(open(self.hp + 'free_hugepages').read())
            total = int(open(self.hp + 'nr_hugepages').read())
        except OSError:
            self.__exit__()
            raise Skip(f'no {self.what} hugetlb pool on this host')
        if free < self.n:
            try:
                with open(self.hp + 'nr_hugepages', 'w') as f:
                    f.write(str(total + self.n - free))
                self.saved = total
            except OSError as e:
                self.__exit__()
                raise Skip(f'cannot reserve {self.n} huge pages: {e}')
            if int(open(self.hp + 'free_hugepages').read()) < self.n:
                self.__exit__()
                raise Skip(f'fewer than {self.n} free {self.what} pages '
                           'could be reserved')
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            with open(self.hp + 'nr_hugepages', 'w') as f:
                f.write(str(self.saved))
            self.saved = None
        if self.lock:
            self.lock.close()
            self.lock = None


class QMP:
    """A QMP client: negotiation, commands, events kept aside."""

    def __init__(self, path=None, addr=None, timeout=10.0, negotiate=True):
        import json
        import socket
        self._json = json
        if path:
            self.sock = socket.socket(socket.AF_UNIX)
            target = path
        else:
            self.sock = socket.socket(socket.AF_INET)
            target = addr
        self.timeout = timeout
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock.connect(target)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.sock.settimeout(timeout)
        # Our own buffer, not makefile(): a read that times out leaves
        # a file object unusable ("cannot read from timed out object"),
        # and event() may time out by design.
        self.buf = b''
        self.events = []
        self.greeting = self._read()
        if negotiate:
            assert self.cmd('qmp_capabilities') == {'return': {}}

    def read_line(self):
        """The next line as it came, with its end."""
        while b'\n' not in self.buf:
            d = self.sock.recv(1 << 16)
            if not d:
                raise EOFError('QMP connection closed')
            self.buf += d
        line, _, self.buf = self.buf.partition(b'\n')
        return line + b'\n'

    def _read(self):
        return self._json.loads(self.read_line())

    def send_raw(self, data: bytes):
        self.sock.sendall(data)

    def reply(self):
        """The next reply; events that come first are kept in .events.
        One that does not come within the timeout fails with what every
        running machine's threads were doing."""
        while True:
            try:
                msg = self._read()
            except TimeoutError:
                raise TimeoutError(f'no QMP reply within {self.timeout} s; '
                                   f'threads:\n{live_stacks()}') from None
            if 'event' in msg:
                self.events.append(msg)
            else:
                return msg

    def cmd(self, name, args=None, **extra):
        req = {'execute': name, **extra}
        if args is not None:
            req['arguments'] = args
        self.send_raw(self._json.dumps(req).encode() + b'\n')
        return self.reply()

    def event(self, name, timeout=10.0):
        """Wait for event @name (already received, or coming)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e['event'] == name:
                    return self.events.pop(i)
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                msg = self._read()
            finally:
                # The next command waits its whole timeout, not what
                # was left of this wait.
                self.sock.settimeout(self.timeout)
            if 'event' not in msg:
                raise AssertionError(f'unexpected reply {msg}')
            self.events.append(msg)

    def close(self):
        self.sock.close()


class HMP:
    """An HMP console on a unix socket: run a line, get its output."""

    PROMPT = b'(ferry) '

    def __init__(self, path, timeout=60.0):
        import socket
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.sock.settimeout(timeout)
        self._buf = b''
        self.banner = self.until_prompt()

    def until_prompt(self):
        """What the console printed before its next prompt."""
        while self.PROMPT not in self._buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError('HMP connection closed')
            self._buf += data
        out, _, self._buf = self._buf.partition(self.PROMPT)
        return out.decode()

    def run(self, line):
        self.sock.sendall(line.encode() + b'\n')
        return self.until_prompt()

    def send(self, line):
        """A line whose answer never comes (quit)."""
        self.sock.sendall(line.encode() + b'\n')


# ---- The migration stream, as a relay or a fake peer reads it ---------

def read_exact(c, n):
    b = b''
    while len(b) < n:
        got = c.recv(n - len(b))
        assert got, 'the source closed the stream'
        b += got
    return b


def read_header(c):
    """The main channel's header (docs/migration-stream.md), as read:
    the channel's (magic, version, role, id), then the RAM block's."""
    head = read_exact(c, 25 + 2)
    magic, _, role = struct.unpack('<IIB', head[:9])
    assert magic == 0x59525246 and role == 0
    assert head[25] == 1                    # RAM_BLOCK
    return head + read_exact(c, head[26] + 16)     # name, size, page size


# Records of a fixed length after their type byte.
FIXED = {0x03: 12, 0x04: 4, 0x06: 0, 0x07: 4, 0x10: 8, 0x11: 16, 0x12: 0,
         0xff: 0}


def read_record(c):
    """One record of the stream after its header: (type, its bytes)."""
    t = read_exact(c, 1)
    if t[0] in FIXED:
        return t[0], t + read_exact(c, FIXED[t[0]])
    if t[0] == 0x02:                        # RAM_PAGES u64 offset, u32 count
        h = read_exact(c, 12)
        return t[0], t + h + read_exact(c, struct.unpack('<QI', h)[1] * 4096)
    if t[0] == 0x05:                        # DEVICE u8 len, name, u32 length
        n = read_exact(c, 1)
        name = read_exact(c, n[0])
        ln = read_exact(c, 4)
        return t[0], t + n + name + ln + read_exact(c, struct.unpack('<I', ln)[0])
    if t[0] == 0x13:                        # POSTCOPY_RUN u32 length
        ln = read_exact(c, 4)
        return t[0], t + ln + read_exact(c, struct.unpack('<I', ln)[0])
    raise AssertionError(f'unknown record 0x{t[0]:02x}')


class Relay:
    """A TCP relay between a source and a destination that passes each
    end's close on to the other, as the network would.  On the first
    connection (the main stream) it forwards @after records past the
    switch's LISTEN (the first of them is RUN; with @switch False, past
    the header), then sends @inject in place of the next record and goes
    on relaying bytes as they come; with @stall, it then stops reading
    from the source (a path that no longer drains) but still passes on
    what the destination says.  On connection @channel 1 (the preempt
    channel) it does the same after the channel header.  Other
    connections are relayed as they are."""

    def __init__(self, dst_uri, inject, after, channel=0, switch=True,
                 stall=False):
        self.dst = dst_uri[4:].rsplit(':', 1)
        self.inject, self.after, self.channel = inject, after, channel
        self.switch, self.stall = switch, stall
        self.injected = threading.Event()
        self.ls = socket.socket()
        self.ls.bind(('127.0.0.1', 0))
        self.ls.listen(2)
        self.uri = f'tcp:127.0.0.1:{self.ls.getsockname()[1]}'
        self.socks = [self.ls]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        n = 0
        with contextlib.suppress(OSError):
            while True:
                a, _ = self.ls.accept()
                b = socket.create_connection((self.dst[0], int(self.dst[1])))
                self.socks += [a, b]
                down, up = threading.Event(), threading.Event()
                fwd = (self._main if n == 0 else self._preempt) \
                    if n == self.channel else self._pipe
                n += 1
                threading.Thread(target=fwd, args=(a, b, down, up),
                                 daemon=True).start()
                threading.Thread(target=self._pipe, args=(b, a, up, down),
                                 daemon=True).start()

    @staticmethod
    def _pipe(a, b, ended, other):
        """Bytes from @a to @b, then @a's end to @b.  If @b is gone, @a
        is ended too, once the other direction (@other) has passed on
        what @b said last (a destination's SHUT before its close)."""
        try:
            while d := a.recv(1 << 16):
                try:
                    b.sendall(d)
                except OSError:
                    other.wait(10)
                    a.shutdown(socket.SHUT_RDWR)
                    break
        except OSError:
            pass
        with contextlib.suppress(OSError):
            b.shutdown(socket.SHUT_WR)
        ended.set()

    def _main(self, a, b, ended, other):
        try:
            b.sendall(read_header(a))
            t = None
            while self.switch and t != 0x12:
                t, rec = read_record(a)
                b.sendall(rec)
            for _ in range(self.after):
                t, rec = read_record(a)
                if t == 0xff:
                    break
                b.sendall(rec)
            else:
                self._replace(a, b, ended, other)
                return
        except (OSError, AssertionError):
            pass
        self._give_up(b, ended)

    def _replace(self, a, b, ended, other):
        """@inject in place of @a's next record, then relay (or stall).
        The push's PING marks (its window) are passed on, not replaced:
        the record meant is the next one that carries something."""
        while True:
            t, rec = read_record(a)
            if t != 0x07:
                break
            b.sendall(rec)
        b.sendall(self.inject)
        self.injected.set()
        if not self.stall:
            self._pipe(a, b, ended, other)

    @staticmethod
    def _give_up(b, ended):
        with contextlib.suppress(OSError):
            b.shutdown(socket.SHUT_WR)
        ended.set()

    def _preempt(self, a, b, ended, other):
        """The preempt channel: @after records, then @inject in place of
        the next one."""
        try:
            b.sendall(read_exact(a, 25))        # the channel header
            for _ in range(self.after):
                b.sendall(read_record(a)[1])
            self._replace(a, b, ended, other)
            return
        except (OSError, AssertionError):
            pass
        self._give_up(b, ended)

    def close(self):
        for c in self.socks:
            c.close()


class StallRelay:
    """A TCP relay for every connection to it, both ways, until stall():
    from then on it forwards nothing and closes nothing, as a partition
    that drops packets silently would look to each side (the relay's
    kernel still acknowledges what fits in its buffers)."""

    def __init__(self, dst_uri):
        """@dst_uri: tcp:HOST:PORT."""
        host, port = dst_uri[4:].rsplit(':', 1)
        self.dst = (host, int(port))
        self.stalled = threading.Event()
        self.ls = socket.socket()
        self.ls.bind(('127.0.0.1', 0))
        self.ls.listen(4)
        self.port = self.ls.getsockname()[1]
        self.uri = f'tcp:127.0.0.1:{self.port}'
        self.socks = [self.ls]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        with contextlib.suppress(OSError):
            while True:
                a, _ = self.ls.accept()
                b = socket.create_connection(self.dst)
                self.socks += [a, b]
                threading.Thread(target=self._forward, args=(a, b),
                                 daemon=True).start()
                threading.Thread(target=self._pipe, args=(b, a),
                                 daemon=True).start()

    def _forward(self, a, b):
        """The connecting side's bytes, @a to @b."""
        self._pipe(a, b)

    def _pipe(self, a, b):
        with contextlib.suppress(OSError):
            while not self.stalled.is_set():
                d = a.recv(1 << 16)
                if not d:
                    b.shutdown(socket.SHUT_WR)
                    return
                if self.stalled.is_set():
                    return
                b.sendall(d)

    def stall(self):
        self.stalled.set()

    def close(self):
        for c in self.socks:
            with contextlib.suppress(OSError):
                c.close()


class HeldRelay(StallRelay):
    """A relay that forwards the first @first bytes of the connecting
    side (a channel header, say) and the rest only once release() is
    called (the other way at once): a test can let a handshake go on
    exactly when it has set the peer up."""

    def __init__(self, dst_uri, first=0):
        self.released = threading.Event()
        self.first = first
        super().__init__(dst_uri)

    def _forward(self, a, b):
        with contextlib.suppress(OSError):
            head = b''
            while len(head) < self.first:
                d = a.recv(self.first - len(head))
                if not d:
                    break
                head += d
            b.sendall(head)
        self.released.wait()
        self._pipe(a, b)

    def release(self):
        self.released.set()


class ThreadHeld:
    """One thread of another process stopped (ptrace's PTRACE_INTERRUPT
    stops the thread it names, not its process) for the with block: a
    test can hold a ferry's main thread while its other threads go on."""

    PTRACE_DETACH, PTRACE_SEIZE, PTRACE_INTERRUPT = 17, 0x4206, 0x4207
    WALL = 0x40000000

    def __init__(self, tid):
        self.tid = tid
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long,
                                     ctypes.c_void_p, ctypes.c_void_p]

    def _ptrace(self, req):
        if self.libc.ptrace(req, self.tid, None, None) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f'ptrace({req:#x}, {self.tid}): {os.strerror(e)}')

    def __enter__(self):
        try:
            self._ptrace(self.PTRACE_SEIZE)
        except OSError as e:
            if e.errno in (errno.EPERM, errno.EACCES):
                raise Skip(f'ptrace is not allowed here: {e}') from None
            raise
        self._ptrace(self.PTRACE_INTERRUPT)
        os.waitpid(self.tid, self.WALL)     # it has stopped
        return self

    def __exit__(self, *exc):
        self._ptrace(self.PTRACE_DETACH)


def thread_id(pid, name, timeout=30.0):
    """The id of @pid's thread named @name (ferry names its threads)."""
    deadline = time.monotonic() + timeout
    while True:
        for tid in os.listdir(f'/proc/{pid}/task'):
            with contextlib.suppress(OSError):
                with open(f'/proc/{pid}/task/{tid}/comm') as f:
                    if f.read().strip() == name:
                        return int(tid)
        assert time.monotonic() < deadline, f'no thread {name} in {pid}'
        time.sleep(0.05)


class SyscallHeld:
    """Thread @tid stopped at its next entry into system call @nr whose
    second argument is @arg, or whose arguments @where(rdi, rsi, rdx)
    accepts (ptrace's syscall stops), until release(): a test can hold one
    step of a ferry's thread and look at what the others do meanwhile.
    x86-64 only.  The tracer is a thread of its own, since every ptrace
    request must come from the thread that attached."""

    PTRACE_GETREGS, PTRACE_SYSCALL = 12, 24
    O_TRACESYSGOOD, EVENT_STOP = 1, 128
    ENOSYS_RET = (1 << 64) - errno.ENOSYS    # rax at a syscall's entry

    def __init__(self, tid, nr, arg=None, where=None):
        self.tid, self.nr = tid, nr
        self.where = where or (lambda rdi, rsi, rdx: rsi == arg)
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long,
                                     ctypes.c_void_p, ctypes.c_void_p]
        self.held = threading.Event()
        self._release = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self._trace, daemon=True)
        self.thread.start()

    def _ptrace(self, req, data=None):
        if self.libc.ptrace(req, self.tid, None, data) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f'ptrace({req:#x}, {self.tid}): {os.strerror(e)}')

    def _trace(self):
        try:
            self._ptrace(ThreadHeld.PTRACE_SEIZE, self.O_TRACESYSGOOD)
            self._ptrace(ThreadHeld.PTRACE_INTERRUPT)
            os.waitpid(self.tid, ThreadHeld.WALL)
            regs = (ctypes.c_ulonglong * 27)()   # struct user_regs_struct
            sig = 0
            while True:
                self._ptrace(self.PTRACE_SYSCALL, sig or None)
                sig = 0
                _, st = os.waitpid(self.tid, ThreadHeld.WALL)
                if not os.WIFSTOPPED(st):
                    return                          # it ended
                if os.WSTOPSIG(st) == signal.SIGTRAP | 0x80:
                    self._ptrace(self.PTRACE_GETREGS, ctypes.addressof(regs))
                    # orig_rax, rax, rdi, rsi, rdx: words 15, 10, 14, 13, 12.
                    if (regs[10] == self.ENOSYS_RET and regs[15] == self.nr
                            and self.where(regs[14], regs[13], regs[12])):
                        self.held.set()
                        self._release.wait()
                        self._ptrace(ThreadHeld.PTRACE_DETACH)
                        return
                elif st >> 16 != self.EVENT_STOP:
                    sig = os.WSTOPSIG(st)           # a signal: deliver it
        except OSError as e:
            self.error = e
            self.held.set()

    def wait_held(self, timeout):
        assert self.held.wait(timeout), 'the system call never came'
        if self.error:
            if self.error.errno in (errno.EPERM, errno.EACCES):
                raise Skip(f'ptrace is not allowed here: {self.error}')
            raise self.error

    def release(self):
        self._release.set()
        self.thread.join(10)
