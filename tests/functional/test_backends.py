#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Guest RAM backends (-object memory-backend-*): the guest's memory check
passes on each, and /proc shows the memory really is what was asked for."""
import subprocess

from ferrytest import (GUEST, HugePages, Machine, MachineOptions, Skip,
                       run_cases, run_ferry, tmpdir)

def ram_mapping(pid, size):
    """The smaps entry of the guest RAM mapping (the one of @size bytes)."""
    entries, cur = [], None
    for line in open(f'/proc/{pid}/smaps'):
        parts = line.split()
        if '-' in parts[0] and len(parts) >= 5 and ':' not in parts[0]:
            lo, hi = (int(x, 16) for x in parts[0].split('-'))
            cur = {'size': hi - lo, 'path': ' '.join(parts[5:]), 'start': lo}
            entries.append(cur)
        elif cur is not None and parts[0].endswith(':') and len(parts) >= 2:
            cur[parts[0][:-1]] = parts[1]
    found = [e for e in entries if e['size'] == size]
    assert found, f'no mapping of {size} bytes in /proc/{pid}/smaps'
    return found[0]


def numa_policy(pid, start):
    for line in open(f'/proc/{pid}/numa_maps'):
        addr, policy = line.split()[:2]
        if int(addr, 16) == start:
            return policy
    return None


def boot_backend(opts):
    """The guest verifies its memory on the backend; /proc is read while
    the guest is sure to be running (no round limit), then two more
    clean rounds are required."""
    obj, size, check = opts.extra
    m_opts = MachineOptions(mem=None, smp=2, append='verify cpus=2',
                            extra=['-object', obj, '-machine', 'memory-backend=m'])
    with Machine(m_opts) as m:
        m.wait_line(r'^verify: round=0 ', 120)
        mapping = ram_mapping(m.proc.pid, size)
        check(m.proc.pid, mapping)
        m.wait_line(r'^verify: round=2 ', 120)
        assert m.proc.poll() is None, 'ferry exited'


def private_anon(pid, e):
    assert e['path'] == '', e           # anonymous
    assert e['KernelPageSize'] == '4', e


def shared_anon(pid, e):
    assert e['path'].startswith('/dev/zero'), e     # shared anonymous = shmem
    assert int(e['Rss']) >= 256 * 1024, e           # prealloc=on: all there


def memfd(pid, e):
    assert e['path'].startswith('/memfd:m'), e
    assert e['KernelPageSize'] == '4', e


def memfd_huge(pid, e):
    assert e['path'].startswith('/memfd:m'), e
    assert e['KernelPageSize'] == '2048', e


def shm_file(pid, e):
    assert '/dev/shm/ferry_backend.' in e['path'], e


def hugetlbfs_file(pid, e):
    assert 'ferry_backend.' in e['path'], e
    assert e['KernelPageSize'] == '2048', e


def numa_bind(pid, e):
    assert numa_policy(pid, e['start']) == 'bind:0', numa_policy(pid, e['start'])


def with_hugepages(n, fn):
    def run(opts):
        with HugePages(n):
            fn(opts)
    return run


def hugetlbfs(opts):
    """memory-backend-file on a hugetlbfs mount (one is made if none is)."""
    mnt = None
    for line in open('/proc/mounts'):
        dev, path, fstype = line.split()[:3]
        if fstype == 'hugetlbfs':
            mnt = path
            break
    made = None
    if not mnt:
        made = tmpdir()
        r = subprocess.run(['mount', '-t', 'hugetlbfs', 'none', made],
                           capture_output=True, text=True)
        if r.returncode:
            raise Skip(f'no hugetlbfs mount and cannot mount one: {r.stderr.strip()}')
        mnt = made
    try:
        with HugePages(128):
            opts.extra = [f'memory-backend-file,id=m,size=256M,mem-path={mnt},share=on',
                          256 << 20, hugetlbfs_file]
            boot_backend(opts)
    finally:
        if made:
            subprocess.run(['umount', made])


BAD = [
    (['-machine', 'memory-backend=nope'], "Memory backend 'nope' not found"),
    (['-object', 'memory-backend-ram,id=m,size=256M', '-machine',
      'memory-backend=m', '-m', '512M'], "does not match the size of memory-backend 'm'"),
    (['-object', 'memory-backend-ram,size=1G'], "Parameter 'id' is missing"),
    (['-object', 'memory-backend-ram,id=m'], "can't create backend with size 0"),
    (['-object', 'memory-backend-ram,id=m,size=1G,colour=red'],
     "Property 'memory-backend-ram.colour' not found"),
    (['-object', 'memory-backend-ram,id=m,size=1G,share=maybe'], "invalid value 'maybe' for 'share'"),
    (['-object', 'memory-backend-ram,id=m,size=1G', '-object',
      'memory-backend-ram,id=m,size=1G'], "duplicate ID 'm' for object"),
    (['-object', 'memory-backend-file,id=m,size=1G'], 'mem-path property not set'),
    (['-object', 'iothread,id=t'], 'invalid object type: iothread'),
    (['-object', 'memory-backend-file,id=m,size=64M,mem-path=/nonexistent/dir/f',
      '-machine', 'memory-backend=m'], "can't open backing store /nonexistent/dir/f"),
    (['-object', 'memory-backend-ram,id=m,size=64M,host-nodes=7,policy=bind',
      '-machine', 'memory-backend=m'], "host-nodes '7'"),
]


def bad_backends(opts):
    for args, want in BAD:
        status, out, err = run_ferry(['-kernel', GUEST, '-serial', 'none'] + args)
        assert status == 1, (args, status, err)
        assert want in err and err.count('\n') == 1, (args, err)


def B(obj, size, check):
    return MachineOptions(extra=[obj, size, check])


cases = [
    ('/backend/ram/private', boot_backend,
     B('memory-backend-ram,id=m,size=512M', 512 << 20, private_anon)),
    ('/backend/ram/shared-prealloc', boot_backend,
     B('memory-backend-ram,id=m,size=256M,share=on,prealloc=on', 256 << 20, shared_anon)),
    ('/backend/memfd', boot_backend,
     B('memory-backend-memfd,id=m,size=512M', 512 << 20, memfd)),
    ('/backend/memfd/hugetlb-2M', with_hugepages(128, boot_backend),
     B('memory-backend-memfd,id=m,size=256M,hugetlb=on,hugetlbsize=2M', 256 << 20,
       memfd_huge)),
    ('/backend/file/dev-shm', boot_backend,
     B('memory-backend-file,id=m,size=256M,mem-path=/dev/shm,share=on', 256 << 20,
       shm_file)),
    ('/backend/file/hugetlbfs', hugetlbfs, MachineOptions()),
    ('/backend/numa/bind-node0', boot_backend,
     B('memory-backend-ram,id=m,size=256M,host-nodes=0,policy=bind', 256 << 20,
       numa_bind)),
    ('/backend/errors', bad_backends, MachineOptions()),
]

if __name__ == '__main__':
    run_cases(cases)
