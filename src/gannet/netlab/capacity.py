"""How fast can the forwarder go? A UDP blast across a lab, counted by the forwarder.

    from gannet.netlab import measure_capacity
    cap = measure_capacity(seconds=2)   # a fresh lab without impairments
    cap["pps"], cap["mbit"]             # what the forwarder delivered

A sender in namespace a writes `size`-byte IP packets (UDP, connected
socket) as fast as it can to a socket in namespace b that never reads (the
kernel discards them there, without ICMP); the forwarder's own counters,
reset after a warm-up, give the delivered packet and bit rates. The offered
load is larger than what passes (the TUN queue in a drops the rest, shown as
`kernel_dropped`), so the result is the forwarder's ceiling on this machine:
it shares 2 cores with the sender and the receiving kernel stack.
"""

from __future__ import annotations

import sys
import time

SINK = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.bind((sys.argv[1], 9))
print("ok", flush=True)
time.sleep(float(sys.argv[2]))
"""

BLASTER = r"""
import socket, sys, time
dst, size, dur = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((dst, 9))
buf = b"\x00" * (size - 28)
send = s.send
end = time.monotonic() + dur
n = 0
while time.monotonic() < end:
    for _ in range(200):
        try:
            send(buf)
            n += 1
        except OSError:
            pass
print(n, flush=True)
"""


def measure_on(lab, seconds: float = 2.0, size: int = 1400, direction: str = "a->b",
               warmup: float = 0.3) -> dict:
    src, dst = ("a", "b") if direction == "a->b" else ("b", "a")
    total = seconds + warmup + 1.0
    sink = lab.popen(dst, [sys.executable, "-c", SINK, lab.addr(dst), str(total + 2)],
                     stdout=__import__("subprocess").PIPE, text=True)
    try:
        sink.stdout.readline()
        blaster = lab.popen(src, [sys.executable, "-c", BLASTER, lab.addr(dst), str(size),
                                  str(total)], stdout=__import__("subprocess").PIPE, text=True)
        try:
            time.sleep(warmup)
            lab.reset_stats()
            time.sleep(seconds)
            st = lab.stats()
        finally:
            blaster.kill()
            blaster.wait(timeout=5)
    finally:
        sink.kill()
        sink.wait(timeout=5)
    link = st["links"][direction]
    interval = st["interval"]
    return {
        "size": size,
        "seconds": interval,
        "pps": link["tx_packets"] / interval,
        "mbit": link["tx_bytes"] * 8 / interval / 1e6,
        "offered_pps": (link["rx_packets"] + link["kernel_dropped"]) / interval,
        "kernel_dropped": link["kernel_dropped"],
        "forwarder_cpu": st["forwarder"]["cpu_load"],
        "saturated": bool(lab.saturated(st)),
    }


def measure_capacity(seconds: float = 2.0, size: int = 1400, seed: int = 0) -> dict:
    """Measure on a fresh lab with a perfect link (root needed)."""
    from .lab import Netlab
    with Netlab(seed=seed) as lab:
        return measure_on(lab, seconds=seconds, size=size)
