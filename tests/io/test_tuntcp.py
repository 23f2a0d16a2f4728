"""The TUN carrier (gannet.io.tuntcp): Gannet's TCP on an address of its own,
in a network namespace the test makes, against the kernel's TCP.

Bulk both ways verified by SHA-256; the carrier's offloads shown in use
(TSO writes that the kernel segmented, GRO-merged segments read as one);
malformed segments reaching the device dropped and counted while a
connection runs; nothing left behind (device, route) after the process
ends, even when killed."""

import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = [
    pytest.mark.netns,
    pytest.mark.timeout(180),
    pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/net/tun")
                       or shutil.which("ip") is None, reason="needs root, ip and /dev/net/tun"),
]

GANNET = "10.79.0.2"  # the address the TUN carrier owns
KERNEL = "10.79.1.1"  # the kernel peer's, on the namespace's lo
PORT = 7500
BULK = 20_000_000
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}

# Gannet's side: a server (mode "serve": read to EOF, answer the SHA-256) or a
# client (mode "send": send BULK seeded bytes, read the digest); prints its
# result and the carrier's counters as JSON.
GANNET_SIDE = r"""
import asyncio, hashlib, json, random, sys
import gannet
mode, addr, port, peer, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
block = random.Random(5).randbytes(1 << 20)

def counters(aep):
    io, ep = aep.io_stats, aep.ep
    return {"gso_calls": io.gso_calls, "gso_datagrams": io.gso_datagrams, "gro_batches": io.gro_batches,
            "recv_calls": io.recv_calls, "drop_reasons": ep.drop_reasons,
            "malformed": ep.stats.malformed_dropped}

async def serve():
    done = asyncio.get_running_loop().create_future()
    async def handle(reader, writer):
        h, got = hashlib.sha256(), 0
        while data := await reader.read(1 << 20):
            h.update(data); got += len(data)
        writer.write(h.hexdigest().encode()); await writer.drain(); writer.close()
        done.set_result((got, h.hexdigest(), writer.get_extra_info("endpoint")))
    server = await gannet.start_server(handle, addr, port, wire="tcp", tcp_carrier="tun", insecure=True)
    print("ready", flush=True)
    got, digest, aep = await asyncio.wait_for(done, 120)
    await asyncio.sleep(0.3)
    print(json.dumps({"bytes": got, "sha256": digest, **counters(aep)}), flush=True)
    server.close()

async def send():
    r, w = await gannet.open_connection(peer, port, wire="tcp", tcp_carrier="tun", local_addr=(addr, 0))
    aep = w.get_extra_info("endpoint")
    h, left = hashlib.sha256(), n
    while left:
        piece = block[:left]; w.write(piece); await w.drain(); h.update(piece); left -= len(piece)
    w.write_eof()
    answer = await asyncio.wait_for(r.read(), 60)
    print(json.dumps({"bytes": n, "sha256": h.hexdigest(), "answer": answer.decode(), **counters(aep)}),
          flush=True)
    w.close()

asyncio.run(serve() if mode == "serve" else send())
"""

KERNEL_SINK = r"""
import hashlib, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1); s.settimeout(60)
print("ready", flush=True)
c, _ = s.accept(); c.settimeout(60)
h = hashlib.sha256()
while data := c.recv(1 << 20):
    h.update(data)
c.sendall(h.hexdigest().encode()); c.close()
"""

KERNEL_SOURCE = r"""
import hashlib, json, random, socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
block = random.Random(5).randbytes(1 << 20)
c = socket.create_connection((host, port), timeout=60)
h, left = hashlib.sha256(), n
while left:
    piece = block[:left]; c.sendall(piece); h.update(piece); left -= len(piece)
c.shutdown(socket.SHUT_WR)
answer = b""
while data := c.recv(100):
    answer += data
print(json.dumps({"sha256": h.hexdigest(), "answer": answer.decode()}), flush=True)
"""


@pytest.fixture
def ns():
    name = f"gtt{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for cmd in (["link", "set", "lo", "up"], ["addr", "add", f"{KERNEL}/32", "dev", "lo"]):
            subprocess.run(["ip", "-n", name, *cmd], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def run_in(ns, script, *args):
    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", script, *map(str, args)],
                            stdout=subprocess.PIPE, text=True, env=ENV)


def result(proc, timeout=150):
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    return json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])


def links(ns):
    return subprocess.run(["ip", "-n", ns, "-o", "link"], capture_output=True, text=True).stdout


def test_kernel_to_gannet_bulk_through_gro(ns):
    server = run_in(ns, GANNET_SIDE, "serve", GANNET, PORT, "-", 0)
    try:
        assert server.stdout.readline().strip() == "ready"
        client = run_in(ns, KERNEL_SOURCE, GANNET, PORT, BULK)
        sent = result(client)
        got = result(server)
    finally:
        for p in (server,):
            if p.poll() is None:
                p.kill()
    assert got["bytes"] == BULK
    assert got["sha256"] == sent["sha256"] == sent["answer"]
    # The kernel's TSO segments reached Gannet whole: fewer reads than
    # 1448-byte segments, and GSO-typed ones among them.
    assert got["gro_batches"] > 0
    assert got["recv_calls"] < BULK // 1448 // 2
    assert got["malformed"] == 0
    assert "gtun" not in links(ns)  # the device went with the process


def test_gannet_to_kernel_bulk_through_tso(ns):
    sink = run_in(ns, KERNEL_SINK, KERNEL, PORT)
    try:
        assert sink.stdout.readline().strip() == "ready"
        client = run_in(ns, GANNET_SIDE, "send", GANNET, PORT, KERNEL, BULK)
        got = result(client)
        sink.wait(30)
    finally:
        if sink.poll() is None:
            sink.kill()
    assert got["answer"] == got["sha256"]  # what the kernel read is what was sent
    # Most of the data left as TSO packets the kernel cut into segments.
    assert got["gso_calls"] > 0
    assert got["gso_datagrams"] > BULK // 1448 // 2
    assert "gtun" not in links(ns)


# Malformed segments sent at the Gannet address while a transfer runs: a
# raw socket writes them with IP_HDRINCL, the kernel routes them to the TUN
# device without looking inside.
HOSTILE = r"""
import socket, struct, sys, time
from gannet.wire import ipv4, tcp
src, dst, port = socket.inet_aton(sys.argv[1]), socket.inet_aton(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
def send(segment):
    s.sendto(ipv4.build(src, dst, len(segment)) + segment, (sys.argv[2], 0))
def header(offset_words, opts=b"", flags=0x10):
    return struct.pack("!HHIIBBHHH", 40000, port, 1, 1, offset_words << 4, flags, 1000, 0, 0) + opts
def checksummed(seg):
    c = tcp.checksum(seg, src, dst)
    return seg[:16] + struct.pack("!H", c) + seg[18:]
for _ in range(10):
    bad = bytearray(checksummed(header(5) + b"data")); bad[-1] ^= 0xFF
    send(bytes(bad))                                   # checksum mismatch
    send(checksummed(header(3)))                       # data offset below 5
    send(checksummed(header(6, b"\x01\x01\x01\x02")))  # an option without its length byte
    send(checksummed(header(6, b"\x08\x01\x00\x00")))  # option length below 2
    time.sleep(0.01)
print("sent", flush=True)
"""


def test_malformed_segments_are_dropped_and_counted_during_a_transfer(ns):
    server = run_in(ns, GANNET_SIDE, "serve", GANNET, PORT, "-", 0)
    try:
        assert server.stdout.readline().strip() == "ready"
        client = run_in(ns, KERNEL_SOURCE, GANNET, PORT, BULK)
        hostile = run_in(ns, HOSTILE, KERNEL, GANNET, PORT)
        hostile.communicate(timeout=60)
        assert hostile.returncode == 0
        sent = result(client)
        got = result(server)
    finally:
        if server.poll() is None:
            server.kill()
    assert got["sha256"] == sent["sha256"] == sent["answer"]
    reasons = got["drop_reasons"]
    assert reasons.get("checksum mismatch") == 10
    assert reasons.get("data offset 3 is below 5") == 10
    assert reasons.get("option 2 truncated (no length byte)") == 10
    assert reasons.get("option 8 has length 1 (below 2)") == 10
    assert sum(reasons.values()) == got["malformed"] == 40


def test_killed_owner_leaves_no_device_or_route(ns):
    holder = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c",
         "import time\nfrom gannet.io.tuntcp import TunSocket\n"
         f"s = TunSocket({GANNET!r}, {PORT})\nprint(s.name, flush=True)\ntime.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        name = holder.stdout.readline().strip()
        assert name.startswith("gtun")
        assert name in links(ns)
        routes = subprocess.run(["ip", "-n", ns, "route"], capture_output=True, text=True).stdout
        assert f"{GANNET} dev {name}" in routes
    finally:
        holder.kill()
        holder.wait(20)
    assert name not in links(ns)
    routes = subprocess.run(["ip", "-n", ns, "route"], capture_output=True, text=True).stdout
    assert GANNET not in routes


def test_an_address_of_the_host_is_refused(ns):
    out = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c",
         f"from gannet.io.tuntcp import TunSocket\ntry:\n    TunSocket({KERNEL!r}, 1)\n"
         "except OSError as e:\n    print(e)"],
        capture_output=True, text=True, env=ENV, timeout=60)
    assert "is an address of this host" in out.stdout
    assert "gtun" not in links(ns)
