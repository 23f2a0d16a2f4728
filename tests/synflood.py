"""Forged opening datagrams on loopback, for the flood tests (not a test module).

A raw IPv4 socket (root) writes UDP datagrams whose source is 127.0.0.1 at a
port the test picks, carrying a Gannet SYN: what an attacker who spoofs
source addresses sends. Nothing listens at most of those ports, so every
answer the server sends there comes back as an ICMP port unreachable.

Run as a program it floods on its own (so that its CPU is not the test's):

    python tests/synflood.py PORT FIRST_PORT NPORTS PACED RATE BURST SEED

sends PACED SYNs at RATE per second, then BURST as fast as it can, from
source ports FIRST_PORT.. FIRST_PORT+NPORTS-1 in turn, and prints one JSON
line: {"sent": n, "bytes": b, "size": one SYN's size}."""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import sys
import time

import pytest

from gannet.wire.datagram import encode
from gannet.wire.segment import SYN, Segment

try:
    from programs import under_ci
except ImportError:  # run as a program
    def under_ci() -> bool:
        return False

LOOPBACK = socket.inet_aton("127.0.0.1")


def require_raw_socket() -> None:
    """Skip unless raw sockets can be opened (root); under CI, fail."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW).close()
    except PermissionError:
        if under_ci():
            pytest.fail("forging datagrams needs a raw socket (root)")
        pytest.skip("forging datagrams needs a raw socket (root)")


def forged_syn(rng: random.Random) -> bytes:
    """A SYN as a Gannet client sends it (every handshake option), from a
    random connection ID and initial sequence number."""
    seg = Segment(rng.getrandbits(32), 0, SYN, 0xFFFF, mss=1448, wscale=9, sack_permitted=True,
                  tsval=rng.getrandbits(32), tsecr=0, mode=0, max_packet=1472)
    return encode(0, rng.getrandbits(32) | 1, seg)


class Forger:
    """Sends UDP datagrams to 127.0.0.1:`port` from spoofed 127.0.0.1 ports."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.sent = 0
        self.bytes = 0  # UDP payload bytes sent (what the server receives)

    def send(self, sport: int, payload: bytes) -> None:
        udp = struct.pack("!HHHH", sport, self.port, 8 + len(payload), 0)  # checksum 0: none (IPv4)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + len(payload), 0, 0x4000, 64, socket.IPPROTO_UDP,
                         0, LOOPBACK, LOOPBACK)  # the kernel fills in the header checksum
        while True:
            try:
                self.sock.sendto(ip + udp + payload, ("127.0.0.1", 0))
                break
            except (BlockingIOError, OSError) as exc:
                if getattr(exc, "errno", None) not in (105, 11):  # ENOBUFS, EAGAIN: wait
                    raise
                os.sched_yield()
        self.sent += 1
        self.bytes += len(payload)

    def close(self) -> None:
        self.sock.close()


def flood(port: int, first: int, nports: int, paced: int, rate: float, burst: int, seed: int) -> dict:
    rng = random.Random(seed)
    forger = Forger(port)
    syns = [forged_syn(rng) for _ in range(256)]  # all one size
    start = time.monotonic()
    for k in range(paced + burst):
        if k < paced and k % 64 == 0:
            due = start + k / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        forger.send(first + k % nports, syns[k % len(syns)])
    forger.close()
    return {"sent": forger.sent, "bytes": forger.bytes, "size": len(syns[0])}


if __name__ == "__main__":
    a = sys.argv[1:]
    print(json.dumps(flood(int(a[0]), int(a[1]), int(a[2]), int(a[3]), float(a[4]), int(a[5]), int(a[6]))),
          flush=True)
