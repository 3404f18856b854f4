#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Pack what the scaling benchmarks need into DIR inside the checkout, to
# run them on a larger host that has /dev/kvm but not Debian's packages:
# ferry, the test guest and bench/uffd-scale from BUILD, with every
# library they load except the C library's own.
#
#   scripts/bench-bundle.sh [BUILD] [DIR]      (default: build .dev)
#
# Then, on that host, in a copy of the checkout with DIR in it:
#   DIR/run.sh [OUT]    # probe, bench/uffd-scale, bench/fault-scale.py
# UFFD_RUNS tunes the first; RUNS, VCPUS, MEMS, MEM and BUDGET (seconds)
# the fault-scale run.  POSTCOPY_RUNS=N adds N runs of bench/postcopy.py
# (ferry with and without preempt, POSTCOPY_SIZES, default 1G,4G) after
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
cat > "$dir/run.sh" <<'RUN'
#!/bin/bash
# Written by scripts/bench-bundle.sh: run from the checkout that holds it.
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
out=${1:-${OUT:-$here/out}}
mkdir -p "$out"
export LD_LIBRARY_PATH=$here/lib PYTHONUNBUFFERED=1
t0=$(date +%s)
{
    nproc; uname -a; grep -m1 'model name' /proc/cpuinfo
    ls -l /dev/kvm /dev/userfaultfd 2>&1; ls /sys/module | grep -i kvm
    grep -E 'MemTotal|HugePages_(Total|Free)' /proc/meminfo
    ldd "$here/ferry" | grep 'not found'
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
        --only 'ferry;ferry, preempt' --thread-cpu > "$out/postcopy.log" 2>&1
    echo "postcopy: exit $? after $(( $(date +%s) - t0 )) s"
    grep -E '^  failed|^\| [0-9]+GiB|^CPU per|^  (all|dst|src)' "$out/postcopy.log" | tail -60
fi
RUN
chmod +x "$dir/run.sh"
du -sh "$dir"
