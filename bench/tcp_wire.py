"""Gannet's engine on the TCP wire against the kernel's TCP, across a veth pair.

    sudo python bench/tcp_wire.py [--bytes 200MB] [--rounds 3] [--json]

Two network namespaces joined by a veth pair at MTU 1500 (made here, removed
at the end). Each round runs, one after the other on the same path:

- kernel -> kernel: Python sockets both ends (the reference);
- Gannet TCP -> kernel: `gannet.open_connection(wire="tcp")` sending to a
  kernel socket receiver;
- kernel -> Gannet TCP: a kernel socket sender to `gannet.start_server(wire="tcp")`;
- the same two with the TUN carrier (`tcp_carrier="tun"`, gannet.io.tuntcp):
  Gannet owns an address of its own behind a TUN device in its namespace,
  which forwards between that device and the veth (`ip_forward=1`, a route
  to that address across the veth): TSO writes and GRO reads.

Every transfer is verified (byte count and CRC32C at the receiver against
the sender's). Goodput is bytes over the receiver's time from the first
byte to end of stream. The ratios are taken inside each round (same
conditions), then their median is reported, as bench/compare.py does.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

NS = ("gtw-a", "gtw-b")
ADDR = ("10.78.0.1", "10.78.0.2")
TUN_NET = ("10.78.1.0/24", "10.78.2.0/24")  # routed to each namespace, for its TUN carrier
TUN_ADDR = ("10.78.1.2", "10.78.2.2")
PORT = 7400

COMMON = r"""
import json, sys, time
from crc32c import crc32c
BLOCK = bytes(range(256)) * 4096  # 1 MiB
def report(**kw):
    print(json.dumps(kw), flush=True)
"""

KERNEL_SINK = COMMON + r"""
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1)
print("ready", flush=True)
c, _ = s.accept()
buf = bytearray(1 << 20); view = memoryview(buf)
n, crc, first = 0, 0, None
while True:
    k = c.recv_into(buf)
    if not k:
        break
    if first is None:
        first = time.monotonic()
    crc = crc32c(view[:k], crc); n += k
report(bytes=n, crc=crc, seconds=time.monotonic() - first)
"""

KERNEL_SOURCE = COMMON + r"""
import socket
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
c = socket.create_connection((host, port)); crc, left = 0, n
while left:
    piece = BLOCK[:left]; c.sendall(piece); crc = crc32c(piece, crc); left -= len(piece)
c.shutdown(socket.SHUT_WR); c.recv(1); c.close()
report(sent=n, crc=crc)
"""

GANNET_SOURCE = COMMON + r"""
import asyncio, gannet
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tun = sys.argv[4] if len(sys.argv) > 4 else None  # the TUN carrier's own address
extra = {"tcp_carrier": "tun", "local_addr": (tun, 0)} if tun else {}
async def main():
    r, w = await gannet.open_connection(host, port, wire="tcp", **extra)
    crc, left = 0, n
    while left:
        piece = BLOCK[:left]; w.write(piece); await w.drain(); crc = crc32c(piece, crc); left -= len(piece)
    w.write_eof(); await r.read(); w.close()
    st = w.get_extra_info("stats")
    report(sent=n, crc=crc, retransmits=st.retransmits)
asyncio.run(main())
"""

GANNET_SINK = COMMON + r"""
import asyncio, gannet
async def main():
    done = asyncio.get_running_loop().create_future()
    async def handle(reader, writer):
        n, crc, first = 0, 0, None
        while data := await reader.read(1 << 20):
            if first is None:
                first = time.monotonic()
            crc = crc32c(data, crc); n += len(data)
        t = time.monotonic() - first
        writer.close()
        done.set_result((n, crc, t))
    tun = len(sys.argv) > 3
    server = await gannet.start_server(handle, sys.argv[3] if tun else sys.argv[1], int(sys.argv[2]),
                                       wire="tcp", **({"tcp_carrier": "tun"} if tun else {}))
    print("ready", flush=True)
    n, crc, t = await done
    await asyncio.sleep(0.1)
    server.close()
    report(bytes=n, crc=crc, seconds=t)
asyncio.run(main())
"""


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True)


def setup() -> None:
    teardown()
    for ns in NS:
        sh("ip", "netns", "add", ns)
    sh("ip", "link", "add", "gtw0", "netns", NS[0], "type", "veth", "peer", "name", "gtw1",
       "netns", NS[1])
    for ns, dev, addr in ((NS[0], "gtw0", ADDR[0]), (NS[1], "gtw1", ADDR[1])):
        sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
        sh("ip", "-n", ns, "link", "set", dev, "mtu", "1500", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    # Each namespace's TUN network is reached through it.
    sh("ip", "-n", NS[1], "route", "add", TUN_NET[0], "via", ADDR[0])
    sh("ip", "-n", NS[0], "route", "add", TUN_NET[1], "via", ADDR[1])


def teardown() -> None:
    for ns in NS:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def popen(ns: str, script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", script, *args],
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def last(proc: subprocess.Popen, timeout: float) -> dict:
    out, _ = proc.communicate(timeout=timeout)
    return json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])


def transfer(sender: str, receiver: str, tun_src: bool, tun_dst: bool, nbytes: int) -> dict:
    sink = popen(NS[1], receiver, ADDR[1], str(PORT), *([TUN_ADDR[1]] if tun_dst else []))
    assert sink.stdout.readline().strip() == "ready"
    dst = TUN_ADDR[1] if tun_dst else ADDR[1]
    src = popen(NS[0], sender, dst, str(PORT), str(nbytes), *([TUN_ADDR[0]] if tun_src else []))
    s, r = last(src, 600), last(sink, 60)
    ok = s["sent"] == r["bytes"] == nbytes and s["crc"] == r["crc"]
    return {"mb_s": nbytes / r["seconds"] / 1e6, "verified": ok, **{k: v for k, v in s.items()
                                                                    if k == "retransmits"}}


PAIRS = {  # sender, receiver, TUN carrier at the sender, at the receiver
    "kernel -> kernel": (KERNEL_SOURCE, KERNEL_SINK, False, False),
    "Gannet TCP -> kernel": (GANNET_SOURCE, KERNEL_SINK, False, False),
    "kernel -> Gannet TCP": (KERNEL_SOURCE, GANNET_SINK, False, False),
    "Gannet TCP (TUN) -> kernel": (GANNET_SOURCE, KERNEL_SINK, True, False),
    "kernel -> Gannet TCP (TUN)": (KERNEL_SOURCE, GANNET_SINK, False, True),
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bytes", default="200MB")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", action="store_true")
    p.add_argument("--only", default="", help="comma-separated row names (kernel -> kernel always runs)")
    args = p.parse_args()
    from gannet.units import parse_size

    nbytes = parse_size(args.bytes)
    if os.geteuid() != 0:
        print("bench/tcp_wire.py needs root (namespaces, raw sockets)", file=sys.stderr)
        return 1
    pairs = {k: v for k, v in PAIRS.items() if k == "kernel -> kernel" or not args.only
             or k in args.only.split(",")}
    setup()
    rounds = []
    try:
        for i in range(args.rounds):
            row = {name: transfer(*spec, nbytes=nbytes) for name, spec in pairs.items()}
            rounds.append(row)
            print(f"round {i + 1}: " + ", ".join(f"{k} {v['mb_s']:.1f} MB/s" for k, v in row.items()),
                  file=sys.stderr, flush=True)
            time.sleep(0.5)
    finally:
        teardown()
    summary = {}
    for name in pairs:
        rates = [r[name]["mb_s"] for r in rounds]
        ratios = [r[name]["mb_s"] / r["kernel -> kernel"]["mb_s"] for r in rounds]
        summary[name] = {"median_mb_s": statistics.median(rates),
                         "median_x_kernel": statistics.median(ratios),
                         "verified": all(r[name]["verified"] for r in rounds)}
    if args.json:
        print(json.dumps({"bytes": nbytes, "rounds": rounds, "summary": summary}, indent=1))
    else:
        print(f"| Path (veth, MTU 1500, {args.bytes}, {args.rounds} rounds) | Goodput MB/s "
              "(median) | x kernel->kernel (median of same-round ratios) | Verified |")
        print("|---|---:|---:|---|")
        for name, s in summary.items():
            print(f"| {name} | {s['median_mb_s']:,.1f} | {s['median_x_kernel']:.3f} | "
                  f"{'ok' if s['verified'] else 'FAILED'} |")
    return 0 if all(s["verified"] for s in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
