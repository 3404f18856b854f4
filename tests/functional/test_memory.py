#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Every guest RAM backend on the destination x {precopy, postcopy,
postcopy-preempt}, as the kernel's userfaultfd selftests run every test
on every memory type.  The source runs plain anonymous RAM (the stream
carries pages, not the backend); the destination the backend of the row.
Each case ends with the verify guest going on clean on the destination:
every page as the source last had it, the pages the guest zeroed inside
its own image still zero, and no page read as zero or as the backend's
old contents where the migration should have brought it.

A backend that cannot do postcopy safely must refuse it at the start,
with a clear error; then the row checks the refusal instead."""
import atexit
import contextlib
import os
import shutil
import tempfile

from ferrytest import HugePages, MachineOptions, Skip, run_cases
from test_migration import Vm, backend_args, migrate, verify_goes_on
from test_postcopy import caps, finish, switch_at_once

SIZE = '256M'
HUGE = 'hugetlb=on,hugetlbsize=2M'


def kept_file(where='/dev/shm'):
    """A named file that already holds data, as a backing store kept
    from before: memory-backend-file maps it as it is."""
    d = tempfile.mkdtemp(prefix='ferry-test-', dir=where)
    atexit.register(shutil.rmtree, d, ignore_errors=True)
    path = os.path.join(d, 'kept.ram')
    with open(path, 'wb') as f:
        for _ in range(256):
            f.write(b'\xa5' * (1 << 20))
    return path


# name: (backend properties or a function giving them, 2 MiB pages needed
#        on each side, postcopy refused: the error's text, or None).  With
#        huge pages the source has them too: postcopy needs one page size.
BACKENDS = {
    'ram': ('memory-backend-ram', 0, None),
    'ram-prealloc': ('memory-backend-ram,prealloc=on', 0, None),
    'ram-shared': ('memory-backend-ram,share=on', 0, None),
    'ram-shared-prealloc': ('memory-backend-ram,share=on,prealloc=on', 0, None),
    'memfd': ('memory-backend-memfd', 0, None),
    'memfd-prealloc': ('memory-backend-memfd,prealloc=on', 0, None),
    'memfd-private': ('memory-backend-memfd,share=off', 0, None),
    'memfd-private-prealloc': ('memory-backend-memfd,share=off,prealloc=on', 0,
                               None),
    'memfd-hugetlb': (f'memory-backend-memfd,{HUGE}', 128, None),
    'memfd-hugetlb-private-prealloc':
        (f'memory-backend-memfd,{HUGE},share=off,prealloc=on', 128, None),
    'file-shm': ('memory-backend-file,mem-path=/dev/shm,share=on', 0, None),
    'file-shm-private-prealloc':
        ('memory-backend-file,mem-path=/dev/shm,share=off,prealloc=on', 0, None),
    'file-kept': (lambda: f'memory-backend-file,mem-path={kept_file()},share=on',
                  0, None),
    'file-kept-private':
        (lambda: f'memory-backend-file,mem-path={kept_file()},share=off', 0,
         'maps its file privately'),
    # A file on a disk: userfaultfd serves anonymous, shmem and hugetlb
    # memory only.
    'file-disk': (lambda: f'memory-backend-file,mem-path={kept_file("/tmp")},'
                  'share=on', 0, 'cannot be registered with userfaultfd'),
}


def backend_obj(props):
    props = props() if callable(props) else props
    return f'{props},size={SIZE}'


def run(opts):
    name, mode = opts.extra
    props, hugepages, refused = BACKENDS[name]
    with HugePages(2 * hugepages) if hugepages else contextlib.nullcontext():
        src = Vm(None, 2, extra=backend_args(backend_obj(props))) if hugepages \
            else Vm(SIZE, 2)
        dst = Vm(None, 2, incoming='tcp:127.0.0.1:0',
                 extra=backend_args(backend_obj(props)))
        try:
            src.m.wait_line(r'^verify: round=1 ', 120)
            if mode == 'precopy':
                migrate(src, dst)
                verify_goes_on(src, dst)
                return
            for v in (src, dst):
                caps(v, postcopy_ram=True, postcopy_blocktime=True,
                     postcopy_preempt=mode == 'preempt')
            switch_at_once(src, dst)
            if refused:
                # -incoming on the command line: it exits, saying why.
                assert dst.m.wait_exit(60) == 1
                assert refused in dst.m.stderr(), dst.m.stderr()
                si = src.wait_status({'failed', 'completed'}, 60)
                assert si['status'] == 'failed', si
                # The source's guest never stopped for good: it runs on.
                assert src.qmp.cmd('query-status')['return']['status'] == 'running'
                last = src.last_round()
                src.m.wait_line(rf'^verify: round={last + 1} ', 60)
                return
            finish(src, dst)
            verify_goes_on(src, dst)
        finally:
            src.close()
            dst.close()


def guarded(opts):
    if opts.extra[1] != 'precopy' and \
            not os.path.exists('/proc/sys/vm/unprivileged_userfaultfd') and \
            not os.path.exists('/dev/userfaultfd'):
        raise Skip('this kernel has no userfaultfd')
    run(opts)


cases = [(f'/memory/{name}/{mode}', guarded, MachineOptions(extra=[name, mode]))
         for name in BACKENDS for mode in ('precopy', 'postcopy', 'preempt')]

if __name__ == '__main__':
    run_cases(cases)
