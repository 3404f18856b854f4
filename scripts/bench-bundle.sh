#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Pack what the scaling benchmarks need into DIR inside the checkout, to
# run them on a larger host that has /dev/kvm but not Debian's packages:
# ferry, the test guest and bench/uffd-scale from BUILD, with every
# library they load except the C library's own.
#
#   scripts/bench-bundle.sh [BUILD] [DIR]      (default: build .dev)
#
# With QEMU=1, DIR/qemu.tar.gz holds this host's qemu-system-x86_64, its
# libraries and the firmware the benches' machines load, laid out as
# QEMU finds them (beside its binary); run.sh unpacks it and puts it
# first on PATH, so that the QEMU 7.2 rows run there too.
#
# Then, on that host, in a copy of the checkout with DIR in it:
#   DIR/run.sh [OUT]    # probe, bench/uffd-scale, bench/fault-scale.py
# UFFD_RUNS tunes the first; RUNS, VCPUS, MEMS, MEM and BUDGET (seconds)
# the fault-scale run.  POSTCOPY_RUNS=N adds N runs of bench/postcopy.py
# (ferry, and QEMU where bundled, with and without preempt; POSTCOPY_SIZES,
# default 1G,4G) after
# it, and FAULT_SCALE=0 leaves fault-scale out.
set -euo pipefail
build=${1:-build}
dir=${2:-.dev}
for f in system/ferry tests/guest/guest.elf bench/uffd-scale; do
    [ -e "$build/$f" ] || { echo "bench-bundle: no $build/$f (make build)" >&2; exit 1; }
done
mkdir -p "$dir/lib"
cp "$build/system/ferry" "$build/tests/guest/guest.elf" "$build/bench/uffd-scale" "$dir/"
for b in "$build/system/ferry" "$build/bench/uffd-scale"; do
    ldd "$b" | awk '/=> \//{print $3}'
done | sort -u | grep -v -E '/(libc|libm|libpthread|libdl|ld-linux[^/]*)\.so' |
    xargs -r cp -L -t "$dir/lib/"
if [ "${QEMU:-0}" = 1 ]; then
    qemu=$(command -v qemu-system-x86_64) || { echo "bench-bundle: no qemu-system-x86_64" >&2; exit 1; }
    q=$(mktemp -d)
    mkdir -p "$q/bin" "$q/lib" "$q/wrap" "$q/share/qemu" "$q/share/seabios" "$q/lib/ipxe/qemu"
    cp "$qemu" "$q/bin/"
    ldd "$qemu" | awk '/=> \//{print $3}' |
        grep -v -E '/(libc|libm|libpthread|libdl|ld-linux[^/]*)\.so' | xargs -r cp -L -t "$q/lib/"
    # What a machine of the benches opens (strace of one): the BIOS, its
    # VGA BIOS, the multiboot loader, the vAPIC patch and the NIC's ROM.
    share=$(dirname "$qemu")/../share
    cp -L "$share/qemu/kvmvapic.bin" "$share/qemu/multiboot_dma.bin" "$share/qemu/linuxboot_dma.bin" "$q/share/qemu/"
    cp -L "$share/seabios/bios-256k.bin" "$share/seabios/vgabios-stdvga.bin" "$q/share/seabios/"
    cp -L "$(dirname "$qemu")/../lib/ipxe/qemu/efi-e1000.rom" "$q/lib/ipxe/qemu/"
    cat > "$q/wrap/qemu-system-x86_64" <<'WRAP'
#!/bin/sh
# The bundled QEMU with its own libraries; it finds its firmware beside it.
q=$(cd "$(dirname "$0")/.." && pwd)
LD_LIBRARY_PATH=$q/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} exec "$q/bin/qemu-system-x86_64" "$@"
WRAP
    chmod +x "$q/wrap/qemu-system-x86_64"
    tar -C "$q" -czf "$dir/qemu.tar.gz" .
    rm -rf "$q"
fi
cat > "$dir/run.sh" <<'RUN'
#!/bin/bash
# Written by scripts/bench-bundle.sh: run from the checkout that holds it.
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
out=${1:-${OUT:-$here/out}}
mkdir -p "$out"
export LD_LIBRARY_PATH=$here/lib PYTHONUNBUFFERED=1
only='ferry;ferry, preempt'
if [ -e "$here/qemu.tar.gz" ]; then
    mkdir -p /tmp/ferry-qemu && tar -C /tmp/ferry-qemu -xzf "$here/qemu.tar.gz"
    export PATH=/tmp/ferry-qemu/wrap:$PATH
    only="$only;QEMU 7.2;QEMU 7.2, preempt"
fi
t0=$(date +%s)
{
    nproc; uname -a; grep -m1 'model name' /proc/cpuinfo
    ls -l /dev/kvm /dev/userfaultfd 2>&1; ls /sys/module | grep -i kvm
    grep -E 'MemTotal|HugePages_(Total|Free)' /proc/meminfo
    ldd "$here/ferry" | grep 'not found'
    command -v qemu-system-x86_64 && qemu-system-x86_64 --version | head -1
} > "$out/probe.txt" 2>&1
cat "$out/probe.txt"
timeout 150 "$here/uffd-scale" --runs "${UFFD_RUNS:-3}" --doc "$out/uffd-scale.md" \
    --section uffd-scale-host > "$out/uffd-scale.txt" 2>&1
echo "uffd-scale: exit $? after $(( $(date +%s) - t0 )) s"
grep '^|' "$out/uffd-scale.txt"
[ -c /dev/kvm ] || { echo "no /dev/kvm: no fault-scale"; exit 0; }
left=$(( ${BUDGET:-430} - ($(date +%s) - t0) ))
if [ "${FAULT_SCALE:-1}" != 0 ]; then
    FERRY=$here/ferry GUEST=$here/guest.elf timeout "$left" python3 bench/fault-scale.py \
        --runs "${RUNS:-1}" --vcpus "${VCPUS:-16,2,8,4,1}" --mems "${MEMS:-anon,memfd}" \
        --mem "${MEM:-256M}" --doc "$out/fault-scale.md" --section fault-scale-host \
        --title 'Demand faults as vCPUs grow, larger host' > "$out/fault-scale.log" 2>&1
    echo "fault-scale: exit $? after $(( $(date +%s) - t0 )) s"
    grep -E '^  failed' "$out/fault-scale.log" | sort | uniq -c
    grep '^|' "$out/fault-scale.log" | tail -45
fi
left=$(( ${BUDGET:-430} - ($(date +%s) - t0) ))
if [ -n "${POSTCOPY_RUNS:-}" ] && [ "$left" -gt 30 ]; then
    FERRY=$here/ferry GUEST=$here/guest.elf timeout "$left" python3 bench/postcopy.py \
        --runs "$POSTCOPY_RUNS" --sizes "${POSTCOPY_SIZES:-1G,4G}" \
        --only "$only" --thread-cpu > "$out/postcopy.log" 2>&1
    echo "postcopy: exit $? after $(( $(date +%s) - t0 )) s"
    grep -E '^  failed|^\| [0-9]+GiB|^CPU per|^  (all|dst|src)' "$out/postcopy.log" | tail -60
fi
RUN
chmod +x "$dir/run.sh"
du -sh "$dir"
