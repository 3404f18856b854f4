#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Install the Debian packages that ferry needs to build and test, and only
# those that are missing.  Idempotent; silent when everything is present.
#
#   scripts/install-deps.sh          build and test dependencies, with the
#                                    reference QEMU the functional tests
#                                    compare the test guest under
#   scripts/install-deps.sh --bench  also gnuplot, for the benchmark plots
#   scripts/install-deps.sh --fuzz   also clang and its libFuzzer runtime
#   scripts/install-deps.sh --libvirt  also Debian's libvirt daemon, its
#                                    QEMU driver and virsh, which
#                                    tests/functional/test_libvirt.py
#                                    drives ferry with
set -eu

pkgs="gcc make meson ninja-build pkg-config binutils libglib2.0-dev \
libjson-glib-dev liburing-dev libnuma-dev libcmocka-dev libgnutls28-dev gnutls-bin \
python3 qemu-system-x86"
if [ "${1:-}" = "--bench" ]; then
    pkgs="$pkgs gnuplot-nox"
fi
if [ "${1:-}" = "--fuzz" ]; then
    pkgs="$pkgs clang libclang-rt-dev"
fi
if [ "${1:-}" = "--libvirt" ]; then
    pkgs="libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients"
fi

missing=""
for p in $pkgs; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: missing packages:$missing (no apt-get here; install them by hand)" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
        echo "install-deps: missing packages:$missing (run as root to install)" >&2
        exit 1
    fi
fi
echo "install-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
