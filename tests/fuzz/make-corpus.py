#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Write the seed corpus for fuzz-stream: small valid and invalid streams
for the 16 MiB, 2-vCPU harness machine."""
import os
import struct
import sys

out = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(__file__) + '/corpus'
os.makedirs(out, exist_ok=True)


def header(size=16 << 20):
    # The main channel's header (magic, version 2, role 0, id), the block.
    return (struct.pack('<IIB', 0x59525246, 2, 0) + b'0123456789abcdef' +
            bytes([1, 6]) + b'pc.ram' + struct.pack('<QQ', size, 4096))


def pages(off, n, fill=b'\xab'):
    return bytes([2]) + struct.pack('<QI', off, n) + fill * (4096 * n)


def zero(off, n):
    return bytes([3]) + struct.pack('<QI', off, n)


def device(name, data):
    return bytes([5, len(name)]) + name + struct.pack('<I', len(data)) + data


seeds = {
    'header-only': header(),
    'pages-then-eof': header() + pages(0, 2) + zero(8192, 4) + bytes([4]) +
    struct.pack('<I', 1) + bytes([0xff]),
    'return-path': header() + bytes([6]) + pages(4096, 1) + bytes([0xff]),
    'ping': header() + bytes([6]) + pages(0, 1) + bytes([7]) +
    struct.pack('<I', 3) + pages(4096, 1) + bytes([0xff]),
    'runstate': header() + device(b'runstate', struct.pack('<I', 9)) + bytes([0xff]),
    'serial': header() + device(b'serial', bytes(7)) + bytes([0xff]),
    'vm-short': header() + device(b'vm', struct.pack('<I', 4) + b'abcd'),
    'cpu-short': header() + device(b'cpu1', struct.pack('<I', 8) + bytes(8)),
    'last-page': header() + pages((16 << 20) - 4096, 1),
    'bad-magic': b'QEVM' + bytes(12),
    'version-1': struct.pack('<II', 0x59525246, 1) + bytes([1, 6]) + b'pc.ram',
    'preempt-as-main': struct.pack('<IIB', 0x59525246, 2, 1) + bytes(16),
    # Postcopy's commands in QEMU's order, and out of it.
    'postcopy': header() + bytes([6, 0x10]) + struct.pack('<Q', 4096) +
    pages(0, 2) + bytes([0x11]) + struct.pack('<QQ', 4096, 1) + bytes([0x12]) +
    bytes([0x13]) + struct.pack('<I', 1) + bytes([0xff]) + pages(4096, 1) +
    zero(8192, 1) + bytes([0xff]),
    'postcopy-twice': header() + bytes([6, 0x10]) + struct.pack('<Q', 4096) +
    bytes([0x12]) + pages(0, 1) + pages(0, 1),
    'postcopy-order': header() + bytes([6, 0x12, 0x10]) + struct.pack('<Q', 4096) +
    bytes([0x12, 0x12]),
}
for name, data in seeds.items():
    with open(os.path.join(out, name), 'wb') as f:
        f.write(data)
