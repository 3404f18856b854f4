#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""libvirt drives ferry as its emulator.

The probe conversation is replayed first without libvirt (what Debian
12's libvirt 9.0 sends QEMU 7.2, ../shared/reference/libvirt-observed.md
7.1): the fatal answers, and the two that crash libvirtd 9.0.  Then the
real libvirtd, in a mount and UTS namespace of its own whose libvirt
directories, /etc/passwd and /etc/group are private bind mounts, so that
the host's libvirt configuration and daemons are never touched (the
recipe of libvirt-observed.md 4), is driven with virsh only.
"""
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time

from ferrytest import (FERRY, GUEST, QMP, Machine, MachineOptions, Skip,
                       _die_with_parent, run_cases, tmpdir)

FERRY_ABS = os.path.abspath(FERRY)
GUEST_ABS = os.path.abspath(GUEST)

PROBE_ARGS = ['-S', '-no-user-config', '-nodefaults', '-nographic',
              '-machine', 'none,accel=kvm:tcg']

# The device types libvirt 9.0 asks device-list-properties about,
# whatever qom-list-types said: a list or DeviceNotFound for each.
PROBED_DEVICES = [
    'virtio-blk-pci', 'virtio-net-pci', 'virtio-scsi-pci', 'virtio-net-ccw',
    'virtio-scsi-ccw', 'vfio-pci', 'scsi-hd', 'ide-hd', 'PIIX4_PM',
    'usb-redir', 'usb-storage', 'kvm-pit', 'VGA', 'vmware-svga', 'qxl',
    'virtio-gpu-pci', 'virtio-gpu-device', 'ICH9-LPC', 'virtio-balloon-pci',
    'virtio-balloon-ccw', 'virtio-balloon-device', 'intel-iommu', 'mch',
    'nvdimm', 'pcie-root-port', 'usb-host', 'vhost-user-fs-device',
    'virtio-mem-pci', 'virtio-iommu-pci',
]


def start_probe(d):
    """ferry as libvirt's probe starts it: the parent exits 0 once the
    socket listens; the pidfile names the daemon."""
    sock, pidfile = os.path.join(d, 'qmp.monitor'), os.path.join(d, 'qmp.pid')
    p = subprocess.run([FERRY] + PROBE_ARGS +
                       ['-qmp', f'unix:{sock},server=on,wait=off',
                        '-pidfile', pidfile, '-daemonize'],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    with open(pidfile) as f:
        pid = int(f.read())
    os.kill(pid, 0)
    return sock, pidfile, pid


def wait_gone(pid, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError(f'pid {pid} did not end within {timeout} s')


def ok(reply):
    assert 'return' in reply, reply
    return reply['return']


def schema_has(schema, path):
    """libvirt's schema query: 'command/arg-type/member', with
    'ret-type' too; ^value for an enum value."""
    by_name = {e['name']: e for e in schema}
    parts = path.split('/')
    e = by_name.get(parts[0])
    if not e:
        return False
    for p in parts[1:]:
        if p in ('arg-type', 'ret-type'):
            e = by_name[e[p]]
            while e['meta-type'] == 'array':
                e = by_name[e['element-type']]
        elif p.startswith('^'):
            return e['meta-type'] == 'enum' and p[1:] in e['values']
        else:
            m = [x for x in e.get('members', []) if x['name'] == p]
            if not m:
                return False
            e = by_name[m[0]['type']]
    return True


def probe_conversation(opts):
    """The probe: machine-less, daemonized, and every answer libvirt
    needs, in its order."""
    d = tmpdir()
    sock, pidfile, pid = start_probe(d)
    try:
        q = QMP(sock)
        ver = ok(q.cmd('query-version'))
        assert (ver['qemu']['major'], ver['qemu']['minor']) >= (4, 2), ver
        assert ver['package'].startswith('ferry-'), ver
        assert ok(q.cmd('query-target')) == {'arch': 'x86_64'}
        schema = ok(q.cmd('query-qmp-schema'))
        names = {e['name'] for e in schema}
        commands = {c['name'] for c in ok(q.cmd('query-commands'))}
        # Every command is in the schema, and the schema has no other.
        assert commands == {e['name'] for e in schema
                            if e['meta-type'] == 'command'}, commands ^ names
        for e in schema:
            for ref in ('arg-type', 'ret-type', 'element-type'):
                if ref in e:
                    assert e[ref] in names, e
            for m in e.get('members', []):
                if 'type' in m:
                    assert m['type'] in names, (e, m)
        assert schema_has(schema, 'migrate/arg-type/resume')
        assert schema_has(schema, 'migrate-set-parameters/arg-type/max-postcopy-bandwidth')
        assert schema_has(schema, 'query-migrate-capabilities/ret-type/capability/^postcopy-preempt')
        assert not schema_has(schema, 'query-migrate/ret-type/blocked-reasons')
        assert not schema_has(schema, 'blockdev-add')
        assert ok(q.cmd('query-kvm')) == {'enabled': True, 'present': True}
        types = {t['name'] for t in ok(q.cmd('qom-list-types'))}
        assert {'none-machine', 'memory-backend-ram', 'memory-backend-file',
                'pc-i440fx-7.2-machine'} <= types, types
        # Only what ferry has: libvirt asks SEV, SGX, iothreads and the
        # TCG probe by these.
        assert not types & {'sev-guest', 'sgx-epc', 'iothread', 'tcg-accel'}
        for t in PROBED_DEVICES:
            r = q.cmd('device-list-properties', {'typename': t})
            assert r.get('error', {}).get('class') == 'DeviceNotFound', (t, r)
        props = ok(q.cmd('device-list-properties', {'typename': 'isa-debug-exit'}))
        assert {'iobase', 'iosize'} <= {p['name'] for p in props}, props
        # A list for every type, even one ferry lacks: an error crashes
        # libvirtd 9.0.
        for t in ('memory-backend-file', 'memory-backend-memfd',
                  'max-x86_64-cpu', 'none-machine', 'no-such-type'):
            assert isinstance(ok(q.cmd('qom-list-properties', {'typename': t})), list)
        backend = {p['name'] for p in
                   ok(q.cmd('qom-list-properties', {'typename': 'memory-backend-file'}))}
        assert {'size', 'mem-path', 'share', 'prealloc', 'reserve'} <= backend
        machines = ok(q.cmd('query-machines'))
        pc = [m for m in machines if m.get('alias') == 'pc']
        assert len(pc) == 1 and pc[0]['default-ram-id'] == 'pc.ram', machines
        machine_props = {p['name'] for p in
                         ok(q.cmd('qom-list-properties', {'typename': 'none-machine'}))}
        assert 'memory-backend' in machine_props, machine_props
        options = {o['option'] for o in ok(q.cmd('query-command-line-options'))}
        assert 'machine' in options and 'sandbox' not in options, options
        caps = {c['capability'] for c in ok(q.cmd('query-migrate-capabilities'))}
        assert {'postcopy-ram', 'return-path', 'events'} <= caps, caps
        # Not offered, so never asked: they crash or fail the probe.
        for c in ('query-cpu-definitions', 'query-cpu-model-expansion',
                  'query-hotpluggable-cpus'):
            assert c not in commands
        # A machine-less ferry refuses a migration, and says why.
        r = q.cmd('migrate', {'uri': 'tcp:127.0.0.1:1'})
        assert 'none' in r['error']['desc'], r
        assert ok(q.cmd('query-status'))['status'] == 'prelaunch'
        q.close()
    finally:
        # libvirt ends the probe with SIGTERM to the pidfile's pid.
        os.kill(pid, signal.SIGTERM)
        wait_gone(pid)
    assert not os.path.exists(pidfile)


def probe_refusals(opts):
    """What the probe's command line does not cover is refused clearly."""
    d = tmpdir()
    p = subprocess.run([FERRY, '-machine', 'none,accel=tcg', '-nodefaults'],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and 'accel' in p.stderr, p.stderr
    p = subprocess.run([FERRY, '-accel', 'tcg', '-machine', 'none'],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and 'only the kvm accelerator' in p.stderr, p.stderr
    # Without -nodefaults the serial port is on stdio, which -daemonize
    # cannot keep: QEMU refuses that too.
    p = subprocess.run([FERRY, '-machine', 'none', '-daemonize',
                        '-qmp', f'unix:{d}/q.sock,server=on,wait=off'],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and 'stdio' in p.stderr, p.stderr


def libvirt_command_line(d, mon_fd, serial_fd, mem_mib=256, extra=()):
    """The command line libvirt 9.0 makes for domain_xml() (its JSON
    -object and -device syntax, an inherited listening monitor socket,
    the serial file an fd set's fd), libvirt-observed.md 6.2."""
    key = os.path.join(d, 'master-key.aes')
    with open(key, 'wb') as f:
        f.write(os.urandom(32))
    return [FERRY_ABS, '-name', 'guest=ferrytest,debug-threads=on', '-S',
            '-object', json.dumps({'qom-type': 'secret', 'id': 'masterKey0',
                                   'format': 'raw', 'file': key}),
            '-machine', 'pc-i440fx-7.2,usb=off,dump-guest-core=off,'
                        'memory-backend=pc.ram',
            '-accel', 'kvm', '-cpu', 'host', '-m', str(mem_mib),
            '-object', json.dumps({'qom-type': 'memory-backend-ram',
                                   'id': 'pc.ram', 'size': mem_mib << 20}),
            '-overcommit', 'mem-lock=off',
            '-smp', '1,sockets=1,cores=1,threads=1',
            '-uuid', '6c0a3b7e-2f41-4d7a-9b35-0d1e2f3a4b5c',
            '-display', 'none', '-no-user-config', '-nodefaults',
            '-chardev', f'socket,id=charmonitor,fd={mon_fd},server=on,wait=off',
            '-mon', 'chardev=charmonitor,id=monitor,mode=control',
            '-rtc', 'base=utc', '-no-shutdown', '-no-acpi', '-boot', 'strict=on',
            '-kernel', GUEST_ABS, '-append', 'verify rounds=0',
            '-add-fd', f'set=0,fd={serial_fd},opaque=serial0-source',
            '-chardev', 'file,id=charserial0,path=/dev/fdset/0,append=on',
            '-device', json.dumps({'driver': 'isa-serial',
                                   'chardev': 'charserial0', 'id': 'serial0',
                                   'index': 0}),
            '-audiodev', json.dumps({'id': 'audio1', 'driver': 'none'}),
            '-msg', 'timestamp=on'] + list(extra)


def wait_file_line(path, needle, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path) as f:
            text = f.read()
        if needle in text:
            return text
        if 'FAIL' in text:
            raise AssertionError(f'guest reported: {text[-300:]}')
        time.sleep(0.1)
    raise AssertionError(f'no {needle!r} in {path} within {timeout} s')


def start_conversation(opts):
    """libvirt's command line and start conversation (6.2, 7.2): the
    monitor on a socket the caller listens on, the serial port on an fd
    set's file (appended to), vCPU thread ids, the peripheral tree, no
    block devices, and cont with RESUME; the guest runs."""
    d = tmpdir()
    ls = socket.socket(socket.AF_UNIX)
    ls.bind(os.path.join(d, 'monitor.sock'))
    ls.listen(1)
    log = os.path.join(d, 'serial.log')
    with open(log, 'w') as f:
        f.write('before\n')
    serial = os.open(log, os.O_WRONLY | os.O_APPEND)
    p = subprocess.Popen(libvirt_command_line(d, ls.fileno(), serial),
                         pass_fds=(ls.fileno(), serial), stderr=subprocess.PIPE,
                         text=True, preexec_fn=_die_with_parent)
    os.close(serial)
    ls.close()
    try:
        q = QMP(os.path.join(d, 'monitor.sock'))
        caps = ok(q.cmd('query-migrate-capabilities'))
        assert {c['capability'] for c in caps} >= {'events', 'postcopy-ram'}
        assert ok(q.cmd('migrate-set-capabilities', {'capabilities': [
            {'capability': 'events', 'state': True}]})) == {}
        chardevs = {c['label']: c for c in ok(q.cmd('query-chardev'))}
        assert chardevs['charserial0']['filename'] == 'file', chardevs
        assert chardevs['charmonitor']['filename'] == \
            f'unix:{d}/monitor.sock,server=on', chardevs
        cpus = ok(q.cmd('query-cpus-fast'))
        assert len(cpus) == 1 and cpus[0]['thread-id'] != p.pid, cpus
        with open(f'/proc/{p.pid}/task/{cpus[0]["thread-id"]}/comm') as f:
            assert f.read().strip() == 'CPU 0/KVM'
        r = q.cmd('qom-list', {'path': cpus[0]['qom-path']})
        assert r['error']['class'] == 'DeviceNotFound', r
        assert ok(q.cmd('query-named-block-nodes', {'flat': True})) == []
        periph = ok(q.cmd('qom-list', {'path': '/machine/peripheral'}))
        assert {'name': 'serial0', 'type': 'child<isa-serial>'} in periph, periph
        objs = {o['name'] for o in ok(q.cmd('qom-list', {'path': '/objects'}))}
        assert {'pc.ram', 'masterKey0'} <= objs, objs
        assert ok(q.cmd('query-block')) == []
        assert ok(q.cmd('query-status'))['status'] == 'prelaunch'
        assert ok(q.cmd('cont')) == {}
        q.event('RESUME')
        text = wait_file_line(log, 'verify: round=1 ')
        assert text.startswith('before\n'), text[:100]     # append=on
        q.cmd('quit')
        assert p.wait(30) == 0, p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def start_refusals(opts):
    """A domain ferry cannot run fails to start, naming what it lacks."""
    d = tmpdir()
    base = [FERRY, '-nodefaults', '-kernel', GUEST_ABS]
    for extra, words in (
            (['-device', 'virtio-blk-pci,drive=d0'],
             "'virtio-blk-pci' is not a valid device model name"),
            (['-device', json.dumps({'driver': 'e1000', 'id': 'net0'})],
             "'e1000' is not a valid device model name"),
            (['-device', 'VGA'], "'VGA' is not a valid device model name"),
            (['-drive', 'file=x.img'], '-drive: invalid option'),
            (['-chardev', 'pty,id=c0'], "'pty' is not a valid char driver"),
            (['-device', 'isa-serial,chardev=nope'], "chardev 'nope' not found"),
            (['-mon', 'chardev=nope,mode=control'], 'chardev "nope" not found'),
            (['-add-fd', 'set=0,fd=99'], 'fd is not valid'),
            (['-overcommit', 'mem-lock=on'], "'mem-lock=on' is not supported"),
            (['-object', f'secret,id=s0,file={d}/missing'], 'Unable to read'),
            (['-uuid', 'not-a-uuid'], 'Fail to parse UUID')):
        p = subprocess.run(base + extra, capture_output=True, text=True,
                           timeout=30)
        assert p.returncode == 1 and words in p.stderr, (extra, p.stderr)
    # -msg timestamp=on: QEMU's time prefix on each message.
    p = subprocess.run([FERRY, '-msg', 'timestamp=on', '-nodefaults',
                        '-kernel', os.path.join(d, 'missing')],
                       capture_output=True, text=True, timeout=30)
    assert re.match(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z ferry: '
                    r'could not load kernel', p.stderr), p.stderr


def raw_lines(q, n):
    """The next @n messages on @q's socket, events and replies in the
    order they came."""
    return [q._read() for _ in range(n)]


def events_before_reply(opts):
    """The MIGRATION event a migrate or migrate-incoming causes comes
    before the command's reply, as QEMU sends them: libvirt 9.0 reads a
    job whose "setup" came after the reply as not active, and cancelled
    the migration (before, virsh migrate failed: "job 'migration out' is
    not active")."""
    d = tmpdir()
    dst = Machine(MachineOptions(extra=['-incoming', 'defer', '-qmp',
                                        f'unix:{d}/dst.sock,server=on,wait=off']))
    src = Machine(MachineOptions(append='verify rounds=0', extra=[
        '-qmp', f'unix:{d}/src.sock,server=on,wait=off']))
    with dst, src:
        qd, qs = QMP(f'{d}/dst.sock'), QMP(f'{d}/src.sock')
        for q in (qd, qs):
            ok(q.cmd('migrate-set-capabilities', {'capabilities': [
                {'capability': 'events', 'state': True}]}))
        port = free_port()
        for q, cmd in ((qd, 'migrate-incoming'), (qs, 'migrate')):
            q.send_raw(json.dumps({'execute': cmd, 'arguments': {
                'uri': f'tcp:127.0.0.1:{port}'}}).encode() + b'\n')
            first, second = raw_lines(q, 2)
            assert first.get('event') == 'MIGRATION' and \
                first['data']['status'] == 'setup', (cmd, first)
            assert second == {'return': {}}, (cmd, second)
        deadline = time.monotonic() + 60
        while ok(qs.cmd('query-migrate'))['status'] != 'completed':
            assert time.monotonic() < deadline
            time.sleep(0.1)


# ---- A real libvirtd -----------------------------------------------------

LIBVIRT_DIRS = {'etc': '/etc/libvirt', 'run': '/run/libvirt',
                'lib': '/var/lib/libvirt', 'cache': '/var/cache/libvirt',
                'log': '/var/log/libvirt'}

QEMU_CONF = '''security_driver = "none"
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
'''


def tls_cert_dir():
    """One directory of x509 credentials for both daemons, as libvirt
    wants them (ca-cert.pem, server-*.pem, client-*.pem; the server's
    for 127.0.0.1, where --migrateuri points)."""
    from test_tls import x509_dirs
    dirs = x509_dirs()
    d = tmpdir()
    for side in ('server', 'client'):
        for f in os.listdir(dirs[side]):
            if f.endswith('.pem'):
                shutil.copy(os.path.join(dirs[side], f), d)
    return d


def need_libvirt():
    """Install libvirt's daemon, QEMU driver and virsh, or skip."""
    if not shutil.which('unshare'):
        raise Skip('unshare(1) is not installed')
    script = os.path.join(os.path.dirname(__file__), '..', '..', 'scripts',
                          'install-deps.sh')
    if not (shutil.which('libvirtd') and shutil.which('virsh')):
        p = subprocess.run(['sh', script, '--libvirt'], capture_output=True,
                           text=True, timeout=900)
        if p.returncode != 0:
            raise Skip(f'libvirt could not be installed: {p.stderr.strip()}')
    p = subprocess.run(['unshare', '--mount', '--uts', 'true'],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise Skip(f'no mount and UTS namespaces here: {p.stderr.strip()}')


class Libvirtd:
    """One libvirtd as a host of its own: its hostname, host UUID and
    libvirt directories, and a libvirt-qemu user in private copies of
    /etc/passwd and /etc/group (the driver resolves it before it reads
    qemu.conf)."""

    def __init__(self, hostname, host_uuid, tls_dir=None):
        self.dir = tmpdir()
        for sub, target in LIBVIRT_DIRS.items():
            os.makedirs(os.path.join(self.dir, sub))
            os.makedirs(target, exist_ok=True)      # the mount point
        self.log = os.path.join(self.dir, 'libvirtd.log')
        with open(os.path.join(self.dir, 'etc', 'libvirtd.conf'), 'w') as f:
            f.write('listen_tls = 0\nlisten_tcp = 0\n'
                    'unix_sock_group = "root"\nunix_sock_ro_perms = "0777"\n'
                    'unix_sock_rw_perms = "0770"\nauth_unix_ro = "none"\n'
                    'auth_unix_rw = "none"\n'
                    f'host_uuid = "{host_uuid}"\n'
                    'log_filters = "1:qemu 1:util.command 3:*"\n'
                    f'log_outputs = "1:file:{self.log}"\n')
        with open(os.path.join(self.dir, 'etc', 'qemu.conf'), 'w') as f:
            f.write(QEMU_CONF)
            if tls_dir:
                # virsh migrate --tls: libvirt's object-add of
                # tls-creds-x509 from here, verify-peer on.
                f.write(f'migrate_tls_x509_cert_dir = "{tls_dir}"\n'
                        'migrate_tls_x509_verify = 1\n')
        binds = [(os.path.join(self.dir, k), v) for k, v in LIBVIRT_DIRS.items()]
        for name, line in (('passwd', 'libvirt-qemu:x:64055:64055::'
                            '/var/lib/libvirt:/usr/sbin/nologin'),
                           ('group', 'libvirt-qemu:x:64055:')):
            with open(f'/etc/{name}') as f:
                text = f.read()
            if not any(x.startswith('libvirt-qemu:') for x in text.splitlines()):
                text += line + '\n'
            with open(os.path.join(self.dir, name), 'w') as f:
                f.write(text)
            binds.append((os.path.join(self.dir, name), f'/etc/{name}'))
        self.script = 'set -e\n' + f'hostname {hostname}\n' + ''.join(
            f'mount --bind {src} {dst}\n' for src, dst in binds) + \
            f'exec libvirtd --pid-file={self.dir}/libvirtd.pid\n'
        self.sock = os.path.join(self.dir, 'run', 'libvirt-sock')
        self.uri = f'qemu+unix:///system?socket={self.sock}'
        self.start()

    def start(self):
        with open(os.path.join(self.dir, 'stderr'), 'a') as err:
            self.proc = subprocess.Popen(
                ['unshare', '--uts', '--mount', '--propagation', 'private',
                 'sh', '-c', self.script], stdin=subprocess.DEVNULL,
                stdout=err, stderr=err, preexec_fn=_die_with_parent,
                env={k: v for k, v in os.environ.items() if k != 'G_DEBUG'})
        deadline = time.monotonic() + 60
        while subprocess.run(['virsh', '-c', self.uri, 'uri'],
                             capture_output=True).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f'libvirtd did not start: {self.tail()}')
            time.sleep(0.1)

    def restart(self):
        """libvirtd ends and comes back; its domains run on."""
        self.close(domains=False)
        self.start()

    def tail(self, n=30):
        out = []
        for f in ('stderr', 'libvirtd.log'):
            try:
                with open(os.path.join(self.dir, f)) as fh:
                    out += fh.read().splitlines()[-n:]
            except OSError:
                pass
        return '\n'.join(out)

    def virsh(self, *args, check=True, timeout=120):
        p = subprocess.run(['virsh', '-c', self.uri] + list(args),
                           capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f'virsh {" ".join(args)}: {p.stderr.strip()}\n'
                                 f'libvirtd:\n{self.tail()}')
        return p.stdout

    def close(self, domains=True):
        """End the daemon; with @domains, the guests it runs first (they
        outlive it otherwise: a failed case's would run on, taking CPU
        from every later one)."""
        if domains and self.proc.poll() is None:
            p = subprocess.run(['virsh', '-c', self.uri, 'list', '--name'],
                               capture_output=True, text=True, timeout=60)
            for name in p.stdout.split():
                subprocess.run(['virsh', '-c', self.uri, 'destroy', name],
                               capture_output=True, timeout=60)
        if domains:
            for pidfile in glob.glob(os.path.join(self.dir, 'run', 'qemu',
                                                  '*.pid')):
                try:
                    with open(pidfile) as f:
                        os.kill(int(f.read().strip()), signal.SIGKILL)
                except (OSError, ValueError):
                    pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def domain_xml(name, serial_log, mem_mib=256, emulator=None,
               cmdline='verify rounds=0', cpu="<cpu mode='host-passthrough' "
               "check='none'/>"):
    """A domain ferry runs (docs/libvirt.md): the test guest by direct
    kernel boot, its serial port on a file both ends append to."""
    return f'''<domain type='kvm'>
  <name>{name}</name>
  <memory unit='MiB'>{mem_mib}</memory>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{GUEST_ABS}</kernel>
    <cmdline>{cmdline}</cmdline>
  </os>
  {cpu}
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{emulator or FERRY_ABS}</emulator>
    <serial type='file'>
      <source path='{serial_log}' append='on'/>
      <target port='0'/>
    </serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
'''


def probe_pids():
    p = subprocess.run(['pgrep', '-f', f'{FERRY_ABS} .*-machine none'],
                       capture_output=True, text=True)
    return p.stdout.split()


def libvirt_probe(opts):
    """libvirtd probes ferry, lists its capabilities, and defines a
    domain with ferry as its emulator (before: "Failed to start QEMU
    binary ... for probing: ferry: -no-user-config: invalid option")."""
    need_libvirt()
    with Libvirtd('host1', '5a1c3d2e-7b4f-4a61-9c0d-1e2f3a4b5c61') as d:
        caps = d.virsh('domcapabilities', '--emulatorbin', FERRY_ABS,
                       '--arch', 'x86_64', '--virttype', 'kvm')
        assert '<machine>pc-i440fx-7.2</machine>' in caps, caps
        assert '<domain>kvm</domain>' in caps, caps
        assert FERRY_ABS in caps, caps
        xml = os.path.join(d.dir, 'ferrytest.xml')
        with open(xml, 'w') as f:
            f.write(domain_xml('ferrytest', os.path.join(d.dir, 'serial.log')))
        assert 'defined' in d.virsh('define', xml)
        dumped = d.virsh('dumpxml', 'ferrytest')
        assert "machine='pc-i440fx-7.2'" in dumped, dumped
        assert FERRY_ABS in dumped, dumped
        d.virsh('undefine', 'ferrytest')
        # libvirt ended every probe it started.
        assert not probe_pids(), probe_pids()
        # A domain ferry cannot run fails to start, naming what it lacks,
        # and leaves nothing running.
        img = os.path.join(d.dir, 'disk.img')
        with open(img, 'wb') as f:
            f.truncate(1 << 20)
        for name, dev, words in (
                ('withdisk', f"<disk type='file' device='disk'><driver "
                 f"name='qemu' type='raw'/><source file='{img}'/><target "
                 "dev='vda' bus='virtio'/></disk>", '-blockdev: invalid option'),
                # What the probe does not advertise libvirt refuses itself.
                ('withvga', "<video><model type='vga'/></video>",
                 "does not support video model 'vga'")):
            xml = os.path.join(d.dir, f'{name}.xml')
            text = domain_xml(name, os.path.join(d.dir, f'{name}.log'))
            with open(xml, 'w') as f:
                f.write(text.replace('  </devices>', f'    {dev}\n  </devices>'))
            p = subprocess.run(['virsh', '-c', d.uri, 'define', xml],
                               capture_output=True, text=True, timeout=120)
            if p.returncode == 0:
                p = subprocess.run(['virsh', '-c', d.uri, 'start', name],
                                   capture_output=True, text=True, timeout=120)
                assert domstate(d, name).startswith('shut off'), domstate(d, name)
                d.virsh('undefine', name)
            # libvirt quotes the emulator's error when it has read it
            # before its monitor connect fails; else it says only "failed
            # to connect to monitor socket" (seen once in CI), and the
            # error is in the domain's log.
            said = p.stderr
            dlog = os.path.join(d.dir, 'log', 'qemu', f'{name}.log')
            if os.path.exists(dlog):
                with open(dlog, errors='replace') as f:
                    said += f.read()
            assert p.returncode != 0 and words in said, (p.stderr, said[-800:])
            left = subprocess.run(['pgrep', '-f', f'{FERRY_ABS} .*guest={name}'],
                                  capture_output=True, text=True).stdout
            assert not left, left


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Guest:
    """The verify guest's serial log, which both ends append to."""

    def __init__(self, path):
        self.path = path

    def rounds(self):
        with open(self.path) as f:
            text = f.read()
        bad = [x for x in text.splitlines() if x.startswith('FAIL')]
        assert not bad, bad[:3]
        return len(re.findall(r'^verify: round=', text, re.M))

    def runs_on(self, timeout=60.0, more=3):
        """New rounds come: the guest runs (wherever it is)."""
        n = self.rounds()
        deadline = time.monotonic() + timeout
        while self.rounds() < n + more:
            if time.monotonic() > deadline:
                raise AssertionError(f'the guest stopped at round {n}')
            time.sleep(0.2)


def domstate(d, name='ferrytest'):
    p = subprocess.run(['virsh', '-c', d.uri, 'domstate', '--reason', name],
                       capture_output=True, text=True, timeout=60)
    return p.stdout.strip() if p.returncode == 0 else None


def wait_state(d, want, timeout=30.0, name='ferrytest'):
    """domstate --reason until it starts with @want (libvirt finishes a
    job's last steps after virsh returns on the other side)."""
    deadline = time.monotonic() + timeout
    while not (domstate(d, name) or '').startswith(want):
        assert time.monotonic() < deadline, (want, domstate(d, name))
        time.sleep(0.1)


def jobinfo(d, *extra):
    """virsh domjobinfo as a dict of its lines."""
    out = d.virsh('domjobinfo', 'ferrytest', *extra)
    return dict((k.strip(), v.strip()) for k, _, v in
                (line.partition(':') for line in out.splitlines() if ':' in line))


def wait_job(d, want, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = jobinfo(d)
        if want(info):
            return info
        time.sleep(0.1)
    raise AssertionError(f'job not as wanted within {timeout} s: {info}')


def sending(info):
    """A migration job past its start: data has been sent.  libvirt's job
    is Unbounded from its Begin phase, before it sends `migrate`; a
    migrate-postcopy then reaches a ferry (or QEMU) whose last migration
    ended, and is ignored as too late, as QEMU does, and a setspeed is
    overwritten by --bandwidth."""
    return (info.get('Job type') == 'Unbounded' and
            float(info.get('Data processed', '0 ').split()[0]) > 0)


def migrate_bg(src, dst, migrateuri, *flags):
    """virsh migrate --live @flags of ferrytest from @src to @dst, in the
    background: the Popen, to communicate() with."""
    return subprocess.Popen(['virsh', '-c', src.uri, 'migrate', '--live', *flags,
                             'ferrytest', dst.uri, '--migrateuri', migrateuri],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def libvirt_migrate(opts):
    """Two libvirt daemons as two hosts drive ferry: start, then every
    migration libvirt offers for postcopy, both ways, the guest verified
    after each: p2p converging in precopy; direct with virsh
    migrate-postcopy and domjobinfo; p2p --postcopy-after-precopy;
    p2p back, and domjobabort of its precopy (the source runs on); domjobabort
    --postcopy (both sides paused), then --postcopy-resume; destroy."""
    need_libvirt()
    tls = tls_cert_dir()
    with Libvirtd('host1', '5a1c3d2e-7b4f-4a61-9c0d-1e2f3a4b5c61', tls) as d1, \
         Libvirtd('host2', '9e8d7c6b-5a49-4382-b716-0f1e2d3c4b5a', tls) as d2:
        assert d2.virsh('hostname').strip() == 'host2'
        g = Guest(os.path.join(tmpdir(), 'serial.log'))
        xml = os.path.join(d1.dir, 'ferrytest.xml')
        with open(xml, 'w') as f:
            f.write(domain_xml('ferrytest', g.path))
        d1.virsh('define', xml)
        d1.virsh('start', 'ferrytest')
        g.runs_on()

        def uri():
            return f'tcp://127.0.0.1:{free_port()}'

        # 1: p2p, postcopy enabled, converging in precopy.
        # --persistent: each side keeps the definition, and with it the
        # completed job's figures (domjobinfo --completed).
        d1.virsh('migrate', '--live', '--p2p', '--postcopy', '--persistent',
                 'ferrytest', d2.uri, '--migrateuri', uri())
        wait_state(d2, 'running')
        assert not (domstate(d1) or '').startswith('running')
        g.runs_on()

        # 2: direct (virsh drives both), switched by virsh migrate-postcopy.
        # The push limited too: unlimited, it could send everything before
        # a guest starved of CPU (the host busy with other tests) touched
        # a missing page, and no request would come.
        mig = migrate_bg(d2, d1, uri(), '--postcopy', '--persistent',
                         '--bandwidth', '20', '--postcopy-bandwidth', '50')
        wait_job(d2, sending)
        d2.virsh('migrate-postcopy', 'ferrytest')
        out, err = mig.communicate(timeout=120)
        assert mig.returncode == 0, err
        done = jobinfo(d2, '--completed')
        assert done.get('Job type') == 'Completed', done
        assert int(done['Postcopy requests']) > 0, done
        assert int(done['Iteration']) >= 1, done
        assert int(done.get('Total downtime', '-1 ').split()[0]) >= 0, done
        wait_state(d1, 'running')
        g.runs_on()

        # 3: p2p, the switch after the first pass (libvirt's own).
        d1.virsh('migrate', '--live', '--p2p', '--postcopy',
                 '--postcopy-after-precopy', '--bandwidth', '50',
                 '--persistent', 'ferrytest', d2.uri, '--migrateuri', uri())
        wait_state(d2, 'running')
        # libvirt 9.0 takes the downtime from the source's query-migrate
        # when it confirms: one still postcopy-active has none (the
        # source's completed came after its cleanup, before).
        done = jobinfo(d1, '--completed')
        assert done.get('Job type') == 'Completed', done
        assert int(done.get('Total downtime', '-1 ').split()[0]) >= 0, done
        g.runs_on()

        # 4: p2p back, and domjobabort of its precopy: it fails, the
        # source runs on.
        mig = migrate_bg(d2, d1, uri(), '--p2p', '--bandwidth', '1')
        # Once data flows: the job is Unbounded from its Begin phase, and
        # libvirt applies --bandwidth only later, when it starts the
        # migration, over any migrate-setspeed given before that.
        wait_job(d2, sending)
        # migrate-setspeed during the precopy: max-bandwidth, taken at once
        # by ferry (getspeed alone reads libvirt's own copy).
        d2.virsh('migrate-setspeed', 'ferrytest', '2')
        assert d2.virsh('migrate-getspeed', 'ferrytest').strip() == '2'
        params = json.loads(d2.virsh('qemu-monitor-command', 'ferrytest',
                                     '{"execute":"query-migrate-parameters"}'))
        assert params['return']['max-bandwidth'] == 2 << 20, params
        d2.virsh('domjobabort', 'ferrytest')
        out, err = mig.communicate(timeout=120)
        assert mig.returncode != 0 and 'cancel' in err.lower(), err
        wait_state(d2, 'running')
        g.runs_on()

        # 5: domjobabort --postcopy pauses both sides; --postcopy-resume
        # recovers, and migrate-setspeed --postcopy lets it finish.
        mig = migrate_bg(d2, d1, uri(), '--postcopy', '--bandwidth', '20',
                         '--postcopy-bandwidth', '1')
        wait_job(d2, sending)
        d2.virsh('migrate-postcopy', 'ferrytest')
        # The pause once the destination's libvirt has finished taking
        # the guest (cont): one earlier fails its incoming job, and it
        # kills the destination, as it does QEMU.
        deadline = time.monotonic() + 30
        while domstate(d1) != 'running (post-copy)':
            assert time.monotonic() < deadline, domstate(d1)
            time.sleep(0.05)
        while (d2.virsh('domjobabort', '--postcopy', 'ferrytest', check=False),
               'post-copy failed' not in (domstate(d2) or ''))[1]:
            assert time.monotonic() < deadline, domstate(d2)
            time.sleep(0.1)
        out, err = mig.communicate(timeout=120)
        assert mig.returncode != 0, err
        wait_state(d2, 'paused (post-copy failed)')
        wait_state(d1, 'running (post-copy failed)')
        mig = migrate_bg(d2, d1, uri(), '--postcopy', '--postcopy-resume')
        time.sleep(1)
        d2.virsh('migrate-setspeed', '--postcopy', 'ferrytest', '100000',
                 check=False)
        out, err = mig.communicate(timeout=120)
        assert mig.returncode == 0, err
        wait_state(d1, 'running')
        g.runs_on()

        # 6: --tls (x509, verify-peer on both sides, the hostname the
        # migrate URI's), p2p there and direct postcopy back.
        d1.virsh('migrate', '--live', '--p2p', '--tls', '--persistent',
                 'ferrytest', d2.uri, '--migrateuri', uri())
        wait_state(d2, 'running')
        g.runs_on()
        mig = migrate_bg(d2, d1, uri(), '--tls', '--postcopy', '--bandwidth', '20')
        wait_job(d2, sending)
        d2.virsh('migrate-postcopy', 'ferrytest')
        out, err = mig.communicate(timeout=120)
        assert mig.returncode == 0, err
        wait_state(d1, 'running')
        g.runs_on()

        # libvirtd restarts and takes the running guest back (its
        # reconnect conversation: query-status, query-cpus-fast,
        # query-block, query-chardev, query-jobs, qom-list).
        d1.restart()
        wait_state(d1, 'running')
        g.runs_on()

        d1.virsh('destroy', 'ferrytest')
        wait_state(d1, 'shut off')


CASES = [
    ('/libvirt/probe-conversation', probe_conversation, None),
    ('/libvirt/probe-refusals', probe_refusals, None),
    ('/libvirt/start-conversation', start_conversation, None),
    ('/libvirt/start-refusals', start_refusals, None),
    ('/libvirt/events-before-reply', events_before_reply, None),
    ('/libvirt/probe', libvirt_probe, None),
    ('/libvirt/migrate', libvirt_migrate, None),
]

if __name__ == '__main__':
    run_cases(CASES)
