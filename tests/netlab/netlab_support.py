"""Shared helpers of the netlab tests that need root (not a test module)."""

import os
import shutil

import pytest


def skip_unless_netlab_possible() -> None:
    """Call at module level: skip the module with a clear reason if netlab cannot run."""
    if os.geteuid() != 0:
        pytest.skip("netlab tests need root (network namespaces, TUN)", allow_module_level=True)
    if shutil.which("ip") is None:
        pytest.skip("netlab tests need the `ip` command (iproute2)", allow_module_level=True)
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("netlab tests need /dev/net/tun", allow_module_level=True)


# Receives UDP datagrams carrying "seq time" for `dur` seconds; prints JSON
# [[seq, arrival_monotonic], ...] at the end.
UDP_SINK = r"""
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
s.settimeout(0.2)
end = time.monotonic() + float(sys.argv[3])
got = []
while time.monotonic() < end:
    try:
        data = s.recv(65535)
    except socket.timeout:
        continue
    got.append([int(data.split(b" ")[0]), time.monotonic()])
print(json.dumps(got), flush=True)
"""

# Sends n datagrams "seq ..." of `size` bytes to host:port, one every `gap` seconds.
UDP_SEND = r"""
import socket, sys, time
host, port, n, gap, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
t0 = time.monotonic()
for i in range(n):
    msg = str(i).encode() + b" "
    s.sendto(msg + b"x" * (size - len(msg)), (host, port))
    if gap:
        delay = t0 + (i + 1) * gap - time.monotonic()
        if delay > 0:
            time.sleep(delay)
"""

# TCP server: accept one connection, read to EOF, print "bytes seconds" (first byte to EOF).
TCP_SINK = r"""
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
print("ready", flush=True)
c, _ = s.accept()
n, t0 = 0, None
while True:
    d = c.recv(1 << 16)
    if not d:
        break
    if t0 is None:
        t0 = time.monotonic()
    n += len(d)
print(n, time.monotonic() - t0, flush=True)
"""

TCP_SEND = r"""
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
c.sendall(b"x" * int(sys.argv[3]))
c.close()
"""
