"""The kernel socket buffers an endpoint asks for, and what Linux grants.

A process with CAP_NET_ADMIN may pass net.core.rmem_max and wmem_max with
SO_RCVBUFFORCE and SO_SNDBUFFORCE; Python's socket module does not name
those options, and without them the receive buffer was capped at the
default 4 MB (about a hundred of path MTU discovery's 64 KB datagrams,
fewer than a bulk sender keeps in flight on loopback: the overflow was a
loss). Linux reports twice what was set (its bookkeeping overhead)."""

import os
import socket
import sys

import pytest

from gannet.io import endpoint
from gannet.io.endpoint import RECV_BUFFER, SEND_BUFFER, make_udp_socket

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux's socket options and /proc")


def may_pass_limits() -> bool:
    """CAP_NET_ADMIN (capability 12) in the effective set."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> 12 & 1)
    return False


def core_limit(name: str) -> int:
    with open(f"/proc/sys/net/core/{name}") as f:
        return int(f.read())


def test_the_force_options_have_linux_numbers():
    # asm-generic/socket.h, which x86 and ARM use
    if os.uname().machine in ("x86_64", "aarch64"):
        assert (endpoint.SO_SNDBUFFORCE, endpoint.SO_RCVBUFFORCE) == (32, 33)


def test_the_kernel_grants_the_buffers_asked_for_where_the_process_may_pass_the_limits():
    sock = make_udp_socket(socket.AF_INET, ("127.0.0.1", 0))
    try:
        rcv = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        snd = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    finally:
        sock.close()
    if may_pass_limits():
        assert (rcv, snd) == (2 * RECV_BUFFER, 2 * SEND_BUFFER)
    else:
        assert rcv == 2 * min(RECV_BUFFER, core_limit("rmem_max"))
        assert snd == 2 * min(SEND_BUFFER, core_limit("wmem_max"))
