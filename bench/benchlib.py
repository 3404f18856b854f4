# SPDX-License-Identifier: GPL-2.0-or-later
"""Helpers the Python benchmarks share: statistics and docs/benchmarks.md."""
import os
import platform
import socket
import statistics
import threading
import time


def median_range(values):
    """'median (min-max)' of @values."""
    return (statistics.median(values), min(values), max(values))


def cell(values, fmt):
    """'median (min-max)' of @values, each formatted by @fmt."""
    med, lo, hi = median_range(values)
    return f'{fmt(med)} ({fmt(lo)}-{fmt(hi)})'


def free_port():
    """A TCP port on 127.0.0.1 free just now."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def event_time(ev):
    """A QMP event's timestamp, in seconds (time.time()'s clock)."""
    return ev['timestamp']['seconds'] + ev['timestamp']['microseconds'] / 1e6


def machine_line():
    model = 'unknown CPU'
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    model = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    return (f'{model}, {os.cpu_count()} CPUs, Linux {platform.release()}; '
            f'{time.strftime("%Y-%m-%d")}')


def update_section(path, name, title, body):
    """Replace the section @name of @path (markers bench:NAME:begin/end)."""
    begin, end = f'<!-- bench:{name}:begin -->', f'<!-- bench:{name}:end -->'
    section = f'{begin}\n## {title}\n\n{body}{end}'
    try:
        text = open(path).read()
    except FileNotFoundError:
        text = '# Benchmarks\n'
    b = text.find(begin)
    e = text.find(end, b)
    if b >= 0 and e >= 0:
        text = text[:b] + section + text[e + len(end):]
    else:
        text = text.rstrip('\n') + '\n\n' + section + '\n'
    with open(path, 'w') as f:
        f.write(text)


def ram_backend_args(mem, prealloc):
    """-object memory-backend-ram for @mem with prealloc on or off, as the
    machine's RAM (QEMU names the RAM block after the backend, so both
    sides of a migration need one); [] for @prealloc None (plain -m)."""
    if prealloc is None:
        return []
    return ['-object', f'memory-backend-ram,id=m,size={mem},'
            f'prealloc={"on" if prealloc else "off"}',
            '-machine', 'memory-backend=m']


def vm_with_qmp(qemu, mem, append, incoming, extra=()):
    """A ferry (or QEMU) machine with a QMP socket, listening with
    -incoming defer if @incoming: (Machine, QMP).  The caller has put
    tests/functional on sys.path."""
    from ferrytest import Machine, MachineOptions, tmpdir
    sock = os.path.join(tmpdir(), 'qmp.sock')
    args = ['-qmp', f'unix:{sock},server=on,wait=off'] + list(extra)
    if incoming:
        args += ['-incoming', 'defer']
    m = Machine(MachineOptions(mem=mem, smp=1, extra=args, qemu=qemu,
                               append=append))
    return m, wait_qmp(m, sock)


def wait_qmp(m, sock, timeout=30):
    """@m's QMP on @sock once the socket is there; a machine that never
    opens it is ended, and the assertion says its stderr."""
    from ferrytest import QMP
    try:
        deadline = time.monotonic() + timeout
        while not os.path.exists(sock):
            assert time.monotonic() < deadline, m.stderr()
            time.sleep(0.02)
        return QMP(sock)
    except BaseException:
        m.kill()
        raise


class ThreadCPU:
    """CPU run time per thread of some processes over a span
    (/proc/PID/task/TID/schedstat), sampled every @period seconds from
    start() to stop(), so that a thread that ends inside the span counts
    up to its last sample.  @procs: {label: pid}.  stop() returns
    {'label:thread name': ms}, threads of one name summed."""

    def __init__(self, procs, period=0.005):
        self.procs, self.period = procs, period
        self.first, self.last = {}, {}
        self.done = threading.Event()
        self.thread = None

    def _sample(self):
        out = {}
        for label, pid in self.procs.items():
            try:
                tids = os.listdir(f'/proc/{pid}/task')
            except OSError:
                continue
            for tid in tids:
                base = f'/proc/{pid}/task/{tid}/'
                try:
                    name = open(base + 'comm').read().strip()
                    ns = int(open(base + 'schedstat').read().split()[0])
                except (OSError, ValueError, IndexError):
                    continue        # ended between the listing and the read
                out[(label, tid, name)] = ns
        return out

    def _run(self):
        while not self.done.wait(self.period):
            self.last.update(self._sample())

    def start(self):
        self.first = self._sample()
        self.last = dict(self.first)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def stop(self):
        self.done.set()
        self.thread.join()
        self.last.update(self._sample())
        out = {}
        for key, ns in self.last.items():
            name = f'{key[0]}:{key[2]}'
            out[name] = out.get(name, 0) + (ns - self.first.get(key, 0)) / 1e6
        return out
