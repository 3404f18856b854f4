#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# make demo: boot the test guest under ferry, let it check its memory for
# a few rounds on two vCPUs, then show the userfaultfd floor of this
# machine.  Live migration joins the demo when it lands.
set -eu
build=${1:-build}
echo "== ferry: booting the test guest (verify, 2 vCPUs, 1 GiB, 5 rounds)"
echo "\$ $build/system/ferry -m 1G -smp 2 -kernel $build/tests/guest/guest.elf \\"
echo "      -append 'verify rounds=5' -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=4"
status=0
"$build/system/ferry" -m 1G -smp 2 -kernel "$build/tests/guest/guest.elf" \
    -append "verify rounds=5" -serial stdio \
    -device isa-debug-exit,iobase=0xf4,iosize=4 || status=$?
if [ "$status" -ne 1 ]; then
    echo "== the guest failed (exit status $status)" >&2
    exit 1
fi
echo "== guest memory intact: exit status 1 is isa-debug-exit's success"
echo
echo "== the userfaultfd floor this machine gives postcopy"
"$build/bench/uffd-floor" --quick
