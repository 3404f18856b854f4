#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# make demo: boot the test guest under ferry, watch it check its memory
# on two vCPUs for a few seconds, ask QMP how it is, stop it, then show
# the userfaultfd floor of this machine, then migrate a running guest
# with postcopy between two ferry processes (scripts/demo.py).
set -eu
build=${1:-build}
dir=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
sock=$dir/qmp.sock

echo "== ferry: the test guest, verify workload, 2 vCPUs, 1 GiB"
echo "\$ ferry -m 1G -smp 2 -kernel guest.elf -append verify -serial stdio \\"
echo "        -qmp unix:$sock,server=on,wait=off"
"$build/system/ferry" -m 1G -smp 2 -kernel "$build/tests/guest/guest.elf" \
    -append "verify cpus=2" -serial stdio \
    -qmp "unix:$sock,server=on,wait=off" &
pid=$!
sleep 4
echo "== QMP: query-status, then quit"
python3 - "$sock" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile('rw')
json.loads(f.readline())                       # the greeting
for cmd in ('qmp_capabilities', 'query-status', 'quit'):
    f.write(json.dumps({'execute': cmd}) + '\n')
    f.flush()
    while True:
        msg = json.loads(f.readline())
        if 'event' not in msg:
            break
    print(f'-> {cmd}\n<- {json.dumps(msg)}')
PY
wait $pid || true
echo "== the guest checked every page of its RAM each round: no FAIL line"
echo
echo "== the userfaultfd floor this machine gives postcopy"
"$build/bench/uffd-floor" --quick
echo
echo "== live migration with postcopy"
FERRY="$build/system/ferry" GUEST="$build/tests/guest/guest.elf" \
    python3 "$(dirname "$0")/demo.py"
