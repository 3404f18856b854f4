#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Migration over TLS (docs/tls.md): QEMU's tls-creds-psk and
tls-creds-x509 objects, the tls-creds, tls-hostname and tls-authz
parameters, on every channel (the stream, the return path, the preempt
channel, a recovery's reconnection).  Each good migration ends with the
verify guest clean on the destination; each refused one fails on the
source with an error that says why, and the source's guest runs on.
Certificates are made here with certtool, never checked in."""
import os
import re
import shutil
import socket
import subprocess

from ferrytest import HMP, Skip, MachineOptions, run_cases, tmpdir
from test_migration import Vm, migrate, verify_goes_on
from test_postcopy import finish, pair, switch_at_once

# The verify guest dirties about as fast as TLS carries on two shared
# CPUs, where plaintext runs ahead of it: a longer downtime lets precopy
# converge (the figures are docs/benchmarks.md's, not this test's).
PARAMS = {'max-bandwidth': 0, 'downtime-limit': 2000}

PSK_KEY = '9d2c5e3a1f0b4c7d8e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d'
WRONG_KEY = 'ab' * 32


def psk_dir(key=PSK_KEY, user='qemu'):
    d = tmpdir()
    with open(os.path.join(d, 'keys.psk'), 'w') as f:
        f.write(f'{user}:{key}\n')
    return d


def certtool(*args):
    if not shutil.which('certtool'):
        raise Skip('certtool (gnutls-bin) is not installed')
    subprocess.run(['certtool', *args], check=True, capture_output=True)


def make_ca(d, name):
    """A CA in @d: ca-key.pem, ca-cert.pem."""
    tmpl = os.path.join(d, f'{name}.tmpl')
    with open(tmpl, 'w') as f:
        f.write(f'cn = "{name}"\nca\ncert_signing_key\nexpiration_days = 2\n')
    key, cert = os.path.join(d, f'{name}-key.pem'), os.path.join(d, f'{name}-cert.pem')
    certtool('--generate-privkey', '--key-type=ecdsa', '--outfile', key)
    certtool('--generate-self-signed', '--load-privkey', key, '--template', tmpl,
             '--outfile', cert)
    return key, cert


def make_cert(d, ca, prefix, cn, server, dns=(), ips=()):
    """@prefix-cert.pem and @prefix-key.pem in @d, signed by @ca."""
    tmpl = os.path.join(d, f'{prefix}.tmpl')
    lines = [f'cn = "{cn}"', 'organization = "ferry tests"', 'expiration_days = 2',
             'signing_key', 'encryption_key',
             'tls_www_server' if server else 'tls_www_client']
    lines += [f'dns_name = "{n}"' for n in dns] + [f'ip_address = "{i}"' for i in ips]
    with open(tmpl, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    key = os.path.join(d, f'{prefix}-key.pem')
    certtool('--generate-privkey', '--key-type=ecdsa', '--outfile', key)
    certtool('--generate-certificate', '--load-privkey', key, '--load-ca-privkey',
             ca[0], '--load-ca-certificate', ca[1], '--template', tmpl,
             '--outfile', os.path.join(d, f'{prefix}-cert.pem'))


def x509_dirs():
    """Directories of credentials: 'server' and 'client' (one CA, the
    server's certificate for localhost and 127.0.0.1), 'client-rogue'
    (a client certificate of another CA), 'client-otherca' (a client
    that trusts only that other CA)."""
    base = tmpdir()
    ca = make_ca(base, 'ca')
    rogue = make_ca(base, 'rogue-ca')
    dirs = {}
    for name, cacert, signer, prefix, cn, server in (
            ('server', ca[1], ca, 'server', 'localhost', True),
            ('client', ca[1], ca, 'client', 'ferry-source', False),
            ('client-rogue', ca[1], rogue, 'client', 'ferry-rogue', False),
            ('client-otherca', rogue[1], ca, 'client', 'ferry-source', False)):
        d = os.path.join(base, name)
        os.mkdir(d)
        shutil.copy(cacert, os.path.join(d, 'ca-cert.pem'))
        make_cert(d, signer, prefix, cn, server, dns=('localhost',),
                  ips=('127.0.0.1',) if server else ())
        dirs[name] = d
    return dirs


def obj(vm, qom_type, oid, **props):
    r = vm.qmp.cmd('object-add', {'qom-type': qom_type, 'id': oid,
                                  **{k.replace('_', '-'): v for k, v in props.items()}})
    assert r == {'return': {}}, r


def tls_params(vm, creds, **extra):
    r = vm.qmp.cmd('migrate-set-parameters', {'tls-creds': creds, **extra})
    assert r == {'return': {}}, r


def refused(src, dst, words):
    """A migration that must fail on the source, its error naming the
    cause, with the source's guest running on, the destination still
    waiting for a good one."""
    for v in (src, dst):
        v.qmp.cmd('query-status')
        v.qmp.events.clear()
    assert src.qmp.cmd('migrate', {'uri': dst.listen_uri()}) == {'return': {}}
    info = src.wait_status({'completed', 'failed'}, 60)
    assert info['status'] == 'failed', info
    assert any(w in info.get('error-desc', '') for w in words), (words, info)
    assert src.qmp.cmd('query-status')['return'] == {'running': True,
                                                      'status': 'running'}
    assert dst.m.proc.poll() is None
    assert dst.qmp.cmd('query-migrate')['return']['status'] == 'setup'
    print("# refused:", info["error-desc"], flush=True)
    return info["error-desc"]


def dst_said(dst, patterns):
    """The destination, quit, said each of @patterns (regexes) when it
    refused a connection, in this order."""
    dst.qmp.cmd('quit')
    dst.m.wait_exit(30)
    err = dst.m.stderr()
    at = 0
    for p in patterns:
        m = re.compile('refused a connection to the incoming port: ' + p).search(err, at)
        assert m, (p, err)
        at = m.end()


def psk_listen(src, dst, d):
    """tls-creds-psk 'tls0' from @d on both sides, tls-creds set, and the
    destination listening (it came up with -incoming defer)."""
    obj(src, 'tls-creds-psk', 'tls0', dir=d, endpoint='client')
    obj(dst, 'tls-creds-psk', 'tls0', dir=d, endpoint='server')
    tls_params(src, 'tls0')
    tls_params(dst, 'tls0')
    assert dst.qmp.cmd('migrate-incoming', {'uri': 'tcp:127.0.0.1:0'}) == \
        {'return': {}}


def psk_precopy(opts):
    """Precopy over TLS-PSK, the credentials given both ways: -object on
    the destination, object-add on the source."""
    d = psk_dir()
    src = Vm('256M', 1)
    dst = Vm('256M', 1, incoming='defer',
             extra=['-object', f'tls-creds-psk,id=tls0,dir={d},endpoint=server'])
    try:
        obj(src, 'tls-creds-psk', 'tls0', dir=d, endpoint='client')
        tls_params(src, 'tls0')
        tls_params(dst, 'tls0')
        assert dst.qmp.cmd('migrate-incoming', {'uri': 'tcp:127.0.0.1:0'}) == \
            {'return': {}}
        src.m.wait_line(r'^verify: round=1 ', 120)
        migrate(src, dst, {**PARAMS, 'tls-creds': 'tls0'})
        verify_goes_on(src, dst)
    finally:
        src.close()
        dst.close()


def psk_refusals(opts):
    """A wrong key, a wrong username, a plaintext destination, a
    plaintext source: each is refused before any migration byte, the
    error says which, and a good migration follows on the same pair."""
    good, wrong, user = psk_dir(), psk_dir(WRONG_KEY), psk_dir(user='other')
    src = Vm('256M', 1)
    dst = Vm('256M', 1, incoming='defer')
    try:
        obj(dst, 'tls-creds-psk', 'srv', dir=good, endpoint='server')
        for oid, d in (('good', good), ('wrong', wrong), ('user', user)):
            obj(src, 'tls-creds-psk', oid, dir=d, endpoint='client',
                **({'username': 'other'} if oid == 'user' else {}))
        # Plaintext destination, TLS source.
        assert dst.qmp.cmd('migrate-incoming', {'uri': 'tcp:127.0.0.1:0'}) == \
            {'return': {}}
        src.m.wait_line(r'^verify: round=1 ', 120)
        tls_params(src, 'good')
        refused(src, dst, ['does it use TLS'])
        # The destination on TLS from here; a plaintext source is refused.
        tls_params(dst, 'srv')
        tls_params(src, '')
        refused(src, dst, ['it expects TLS (set tls-creds on this side too)'])
        tls_params(src, 'wrong')
        refused(src, dst, ['wrong PSK'])
        tls_params(src, 'user')
        refused(src, dst, ['wrong PSK', 'refused it'])
        # A server's credentials on the client's side.
        obj(src, 'tls-creds-psk', 'as-server', dir=good, endpoint='server')
        tls_params(src, 'as-server')
        refused(src, dst, ['Expected TLS credentials for a client endpoint'])
        tls_params(src, 'good')
        migrate(src, dst, PARAMS)
        verify_goes_on(src, dst)
        dst_said(dst, ['a TLS handshake came: the source has tls-creds set',
                       'TLS handshake failed: .*speaks plaintext',
                       'TLS handshake failed'])
    finally:
        src.close()
        dst.close()


def fd_refused(opts):
    """fd: is the only channel that will come: when its handshake fails
    the incoming migration fails (with why), it does not wait in setup
    for ever."""
    from test_migration import send_fd
    d = psk_dir()
    dst = Vm('64M', 1, incoming='defer')
    try:
        obj(dst, 'tls-creds-psk', 'srv', dir=d, endpoint='server')
        tls_params(dst, 'srv')
        a, b = socket.socketpair()
        assert send_fd(dst.qmp, 'mig', b.fileno()) == {'return': {}}
        b.close()
        assert dst.qmp.cmd('migrate-incoming', {'uri': 'fd:mig'}) == {'return': {}}
        a.sendall(b'FRRY' + bytes(60))          # a plaintext source
        info = dst.wait_status({'failed', 'completed'}, 20)
        assert info['status'] == 'failed' and 'plaintext' in info['error-desc'], info
        a.close()
    finally:
        dst.close()


def x509(opts):
    """x509 with verify-peer on both sides and tls-authz on the
    destination: a client certificate of another CA, a client that does
    not trust the server's CA, a hostname that does not match, a
    distinguished name the authz list denies: each refused, saying
    which.  Then the good one, with the hostname from the URI."""
    dirs = x509_dirs()
    src = Vm('256M', 1)
    dst = Vm('256M', 1, incoming='defer')
    try:
        obj(dst, 'tls-creds-x509', 'srv', dir=dirs['server'], endpoint='server',
            verify_peer=True)
        obj(dst, 'authz-list', 'auth0', policy='deny', rules=[
            {'match': '*CN=ferry-source', 'policy': 'allow', 'format': 'glob'}])
        obj(dst, 'authz-simple', 'nobody', identity='CN=nobody')
        tls_params(dst, 'srv', **{'tls-authz': 'auth0'})
        assert dst.qmp.cmd('migrate-incoming', {'uri': 'tcp:127.0.0.1:0'}) == \
            {'return': {}}
        for name in ('client', 'client-rogue', 'client-otherca'):
            obj(src, 'tls-creds-x509', name, dir=dirs[name], endpoint='client')
        src.m.wait_line(r'^verify: round=1 ', 120)
        tls_params(src, 'client-rogue')
        refused(src, dst, ['did not accept this side'])
        tls_params(src, 'client-otherca')
        refused(src, dst, ["The certificate hasn't got a known issuer"])
        tls_params(src, 'client', **{'tls-hostname': 'wrong.example'})
        refused(src, dst, ['Certificate does not match the hostname wrong.example'])
        tls_params(dst, 'srv', **{'tls-authz': 'nobody'})
        tls_params(src, 'client', **{'tls-hostname': ''})
        refused(src, dst, ['did not accept this side'])
        tls_params(dst, 'srv', **{'tls-authz': 'auth0'})
        migrate(src, dst, PARAMS)
        verify_goes_on(src, dst)
        dst_said(dst, ['TLS: The peer sent no certificate',
                       'TLS: TLS x509 authz check for .*CN=ferry-source is denied'])
    finally:
        src.close()
        dst.close()


def psk_postcopy(opts):
    """Postcopy (and with preempt, its second channel) over TLS-PSK, with
    TLS 1.3 key updates every 64 MiB written and every 64 MiB read on
    each side (16 MiB with @demand, on a 64 MiB guest), each of the side's own sending keys: a reader sends while
    its writer writes (the destination's load thread and fault thread,
    the source's return-path thread and migration thread: the rekey
    hazard), and the peer's reader takes key updates between records.
    GnuTLS refuses more than 8 a second, hence the bandwidth.  @demand:
    demand only after the first pass (migrate -p -n), so that with
    preempt nearly every page comes on the preempt channel, which the
    source only writes: several key updates there (it failed so, the
    destination's own request unanswered: tls-session.c)."""
    preempt, *demand = opts.extra
    demand = bool(demand and demand[0])
    d = psk_dir()
    env = {'FERRY_TLS_REKEY_BYTES': str((16 if demand else 64) << 20)}
    os.environ.update(env)
    try:
        src, dst = pair('64M' if demand else '256M', preempt=preempt,
                        dst_incoming='defer')
    finally:
        for k in env:
            del os.environ[k]
    try:
        psk_listen(src, dst, d)
        if demand:
            src.m.wait_line(r'^verify: round=1 ', 120)
            assert src.qmp.cmd('migrate-set-parameters',
                               {'max-bandwidth': 64 << 20}) == {'return': {}}
            assert src.qmp.cmd('migrate', {'uri': dst.listen_uri(),
                                           'x-postcopy-after-pass1': True,
                                           'x-postcopy-no-push': True}) == \
                {'return': {}}
        else:
            switch_at_once(src, dst, max_bandwidth=64 << 20,
                           max_postcopy_bandwidth=64 << 20)
        info, _ = finish(src, dst)
        if demand:
            # Most of the guest's pages, on the preempt channel.
            assert info['ram']['postcopy-bytes'] > 32 << 20, info['ram']
        verify_goes_on(src, dst)
        for v in (src, dst):
            v.qmp.cmd('quit')
            v.m.wait_exit(30)
            n = v.m.stderr().count('tls: key update on fd')
            assert n >= 2, (n, v.m.stderr()[-2000:])
    finally:
        src.close()
        dst.close()


def psk_recovery(opts):
    """Postcopy over TLS-PSK (with preempt: both channels) broken in the
    middle, paused on both sides, then resumed over new TLS connections
    (migrate-recover and migrate resume=true), to a clean guest."""
    from test_postcopy import cut_tcp
    from test_recovery import paused, start_slow
    preempt = opts.extra[0]
    d = psk_dir()
    src, dst = pair('512M', preempt=preempt, dst_incoming='defer')
    try:
        psk_listen(src, dst, d)
        start_slow(src, dst)
        cut_tcp(src, 2 if preempt else 1)
        paused(src, dst)
        assert dst.qmp.cmd('migrate-recover', {'uri': 'tcp:127.0.0.1:0'}) == \
            {'return': {}}
        src.qmp.cmd('migrate-set-parameters', {'max-postcopy-bandwidth': 0})
        assert src.qmp.cmd('migrate', {'uri': dst.listen_uri(), 'resume': True}) \
            == {'return': {}}
        finish(src, dst)
        verify_goes_on(src, dst)
    finally:
        src.close()
        dst.close()


def objects_and_errors(opts):
    """object-add and object-del, QEMU's errors for bad objects and
    parameters; file: and exec: refused while tls-creds is set."""
    d = psk_dir()
    hs = os.path.join(tmpdir(), 'hmp.sock')
    vm = Vm('64M', 1, extra=['-monitor', f'unix:{hs},server=on,wait=off'])
    try:
        q = vm.qmp
        # HMP: a thin layer over object-add and object-del.
        h = HMP(hs)
        assert h.run(f'object_add tls-creds-psk,id=h,dir={d},endpoint=server,'
                     'verify-peer=off').strip() == ''
        assert 'duplicate' in h.run(f'object_add tls-creds-psk,id=h,dir={d}')
        assert h.run('object_del h').strip() == ''
        assert "object 'h' not found" in h.run('object_del h')

        def err(cmd, args, words):
            r = q.cmd(cmd, args)
            assert 'error' in r and words in r['error']['desc'], (words, r)

        err('object-add', {'qom-type': 'tls-creds-psk', 'id': 'x',
                           'dir': '/nonexistent', 'endpoint': 'server'},
            'Unable to access credentials /nonexistent/keys.psk')
        err('object-add', {'qom-type': 'tls-creds-psk', 'id': 'x', 'dir': d,
                           'endpoint': 'sideways'},
            "does not accept value 'sideways'")
        err('object-add', {'qom-type': 'tls-creds-psk', 'id': 'x', 'dir': d,
                           'username': 'nobody'}, "Username 'nobody' not found")
        err('object-add', {'qom-type': 'tls-creds-x509', 'id': 'x', 'dir': d},
            'ca-cert.pem')
        err('object-add', {'qom-type': 'no-such-type', 'id': 'x'},
            "Parameter 'qom-type' does not accept value 'no-such-type'")
        err('object-add', {'qom-type': 'authz-simple', 'id': 'x'},
            "The 'identity' property must be set")
        err('object-add', {'qom-type': 'authz-list', 'id': 'x',
                           'rules': [{'policy': 'allow'}]}, "'rules[0].match'")
        # libvirt 9.0's older form: the properties in "props".
        assert q.cmd('object-add', {'qom-type': 'tls-creds-psk', 'id': 'p',
                                    'props': {'dir': d, 'endpoint': 'server'}}) == \
            {'return': {}}
        assert q.cmd('object-del', {'id': 'p'}) == {'return': {}}
        obj(vm, 'tls-creds-psk', 'c', dir=d)
        err('object-add', {'qom-type': 'tls-creds-psk', 'id': 'c', 'dir': d},
            "duplicate property 'c'")
        err('migrate-set-parameters', {'tls-creds': 'nope'},
            "No TLS credentials with id 'nope'")
        tls_params(vm, 'c')
        for uri in ('file:' + os.path.join(tmpdir(), 'f'), 'exec:cat >/dev/null'):
            err('migrate', {'uri': uri}, 'TLS is not supported with')
        # Deleted while set: the migration says so, the guest runs on.
        assert q.cmd('object-del', {'id': 'c'}) == {'return': {}}
        err('object-del', {'id': 'c'}, "object 'c' not found")
        lsock = socket.socket()
        lsock.bind(('127.0.0.1', 0))
        lsock.listen()
        assert q.cmd('migrate', {'uri': 'tcp:127.0.0.1:%d' %
                                 lsock.getsockname()[1]}) == {'return': {}}
        info = vm.wait_status({'failed'}, 30)
        assert "No TLS credentials with id 'c'" in info['error-desc'], info
        lsock.accept()[0].close()
        assert q.cmd('query-status')['return']['status'] == 'running'
        # A peer that accepts and never answers the handshake: cancel ends
        # the wait at once, and the guest runs on.
        obj(vm, 'tls-creds-psk', 'c', dir=d)
        assert q.cmd('migrate', {'uri': 'tcp:127.0.0.1:%d' %
                                 lsock.getsockname()[1]}) == {'return': {}}
        silent, _ = lsock.accept()
        assert q.cmd('query-migrate')['return']['status'] == 'setup'
        assert q.cmd('migrate_cancel') == {'return': {}}
        assert vm.wait_status({'cancelled', 'failed'}, 5)['status'] == 'cancelled'
        assert q.cmd('query-status')['return']['status'] == 'running'
        silent.close()
        lsock.close()
        tls_params(vm, '')
        assert q.cmd('query-migrate-parameters')['return']['tls-creds'] == ''
        # qom-list-types names the types (libvirt's probe looks).
        names = {t['name'] for t in q.cmd('qom-list-types')['return']}
        assert {'tls-creds-psk', 'tls-creds-x509', 'authz-list',
                'authz-simple'} <= names, names
    finally:
        vm.close()


cases = [
    ('/precopy/tls/psk', psk_precopy, MachineOptions()),
    ('/precopy/tls/psk/refusals', psk_refusals, MachineOptions()),
    ('/precopy/tls/x509', x509, MachineOptions()),
    ('/precopy/tls/fd-refused', fd_refused, MachineOptions()),
    ('/postcopy/tls/psk', psk_postcopy, MachineOptions(extra=(False,))),
    ('/postcopy/preempt/tls/psk', psk_postcopy, MachineOptions(extra=(True,))),
    ('/postcopy/preempt/tls/psk/demand-only', psk_postcopy,
     MachineOptions(extra=(True, True))),
    ('/postcopy/recovery/tls/psk', psk_recovery, MachineOptions(extra=(False,))),
    ('/postcopy/recovery/preempt/tls/psk', psk_recovery,
     MachineOptions(extra=(True,))),
    ('/tls/objects-and-errors', objects_and_errors, MachineOptions()),
]

if __name__ == '__main__':
    run_cases(cases)
