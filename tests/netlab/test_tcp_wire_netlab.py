"""Gannet's engine on the TCP wire across a netlab link, with the kernel's TCP
on the other side: bulk both ways verified by SHA-256, and the kernel peer's
view of the connection (`ss -ti`) showing SACK, window scaling and
timestamps negotiated.

The suite moves a few megabytes; GANNET_TCP_BULK_MB=100 runs the 100 MB
transfers the measurements in docs/tcp.md come from.
"""

import json
import os
import re
import subprocess
import sys
import time

import pytest
from netlab_support import skip_unless_netlab_possible

skip_unless_netlab_possible()

from gannet.netlab import LinkConfig, Netlab  # noqa: E402

PY = sys.executable
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
PORT = 7300
BULK = int(os.environ.get("GANNET_TCP_BULK_MB", "0")) * 1_000_000
pytestmark = [pytest.mark.netns, pytest.mark.timeout(600 if BULK else 120)]

# A kernel TCP receiver: accept one connection, print "accepted", read to
# EOF, answer with the SHA-256 of what it got, report.
KERNEL_SINK = r"""
import hashlib, json, socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
print("ready", flush=True)
c, peer = s.accept()
print("accepted", flush=True)
h, n, t0 = hashlib.sha256(), 0, time.monotonic()
while data := c.recv(1 << 20):
    h.update(data)
    n += len(data)
t1 = time.monotonic()
c.sendall(h.hexdigest().encode())
c.close()
print(json.dumps({"bytes": n, "sha256": h.hexdigest(), "seconds": t1 - t0}), flush=True)
"""

# A kernel TCP sender: connect, send N seeded bytes, half-close, read the digest.
KERNEL_SOURCE = r"""
import hashlib, json, random, socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
block = random.Random(2).randbytes(1 << 20)
c = socket.create_connection((host, port), timeout=60)
h, left, t0 = hashlib.sha256(), n, time.monotonic()
while left:
    piece = block[:left]
    c.sendall(piece)
    h.update(piece)
    left -= len(piece)
c.shutdown(socket.SHUT_WR)
echo = b""
while data := c.recv(64):
    echo += data
print(json.dumps({"sent": n, "sha256": h.hexdigest(), "echo": echo.decode(),
                  "seconds": time.monotonic() - t0}), flush=True)
"""

# Gannet on the TCP wire, as a client sending N bytes or a server receiving.
GANNET_SOURCE = r"""
import asyncio, hashlib, json, random, sys, time
import gannet
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tun = sys.argv[4] if len(sys.argv) > 4 else None  # the TUN carrier's own address
extra = {"tcp_carrier": "tun", "local_addr": (tun, 0)} if tun else {}

async def main():
    block = random.Random(1).randbytes(1 << 20)
    r, w = await gannet.open_connection(host, port, wire="tcp", **extra)
    print("connected", flush=True)
    conn = w.get_extra_info("connection")
    h, left, t0 = hashlib.sha256(), n, time.monotonic()
    while left:
        piece = block[:left]
        w.write(piece)
        await w.drain()
        h.update(piece)
        left -= len(piece)
    w.write_eof()
    echo = await r.read()
    t1 = time.monotonic()
    w.close()
    await w.wait_closed()
    # What the kernel's SYN-ACK agreed to, as this end took it.
    io = w.get_extra_info("endpoint").io_stats
    print(json.dumps({"sent": n, "sha256": h.hexdigest(), "echo": echo.decode(),
                      "seconds": t1 - t0, "sack_ok": conn.sack_ok, "ts_ok": conn.ts_ok,
                      "snd_wscale": conn.snd_wscale, "rcv_wscale": conn.rcv_wscale,
                      "mss": conn.mss, "retransmits": conn.stats.retransmits,
                      "gso_calls": io.gso_calls}), flush=True)

asyncio.run(main())
"""

GANNET_SINK = r"""
import asyncio, hashlib, json, sys
import gannet
host, port = sys.argv[1], int(sys.argv[2])
tun = len(sys.argv) > 3  # host is the TUN carrier's own address

async def main():
    done = asyncio.get_running_loop().create_future()

    async def handle(reader, writer):
        h, n = hashlib.sha256(), 0
        while data := await reader.read(1 << 16):
            h.update(data)
            n += len(data)
        writer.write(h.hexdigest().encode())
        await writer.drain()
        writer.close()
        done.set_result((n, h.hexdigest()))

    server = await gannet.start_server(handle, host, port, wire="tcp",
                                       **({"tcp_carrier": "tun"} if tun else {}))
    print("ready", flush=True)
    n, digest = await done
    await asyncio.sleep(0.2)  # let the digest and FIN be acknowledged
    server.close()
    print(json.dumps({"bytes": n, "sha256": digest}), flush=True)

asyncio.run(main())
"""


def wait_line(proc, expect, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(expect):
            return line
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"no {expect!r} from {proc.args[:3]}: {proc.communicate(timeout=5)}")


def last_json(out):
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    assert lines, out
    return json.loads(lines[-1])


def finish(proc, timeout):
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=5)
        raise AssertionError(f"did not finish in {timeout} s: {out} {err}")


def kernel_view(lab, node, port):
    """`ss -ti` of the established connection on `port` in `node`."""
    r = lab.run(node, ["ss", "-tin", "state", "established", f"( sport = :{port} )"], timeout=10)
    return r.stdout


def gannet_to_kernel(lab, nbytes, timeout, tun=None):
    sink = lab.popen("b", [PY, "-c", KERNEL_SINK, lab.addr("b"), str(PORT)],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    wait_line(sink, "ready")
    src = lab.popen("a", [PY, "-c", GANNET_SOURCE, lab.addr("b"), str(PORT), str(nbytes),
                          *([tun] if tun else [])],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    wait_line(src, "connected")
    wait_line(sink, "accepted")
    view = kernel_view(lab, "b", PORT)
    sout, serr = finish(src, timeout)
    kout, kerr = finish(sink, 20)
    return last_json(kout), last_json(sout), view, (serr, kerr)


def check_negotiated(view, gannet=None):
    """SACK, window scaling and timestamps in use on a connection between
    Gannet and the kernel. The kernel's `ss -ti` names window scaling
    (wscale:SND,RCV) and shows timestamps in its MSS (1448 on a 1500-byte
    path: 1460 less the 12-byte option); this kernel's tcp_info leaves the
    "ts"/"sack" flags out even between two kernel sockets, so SACK is read
    from Gannet's side: it is on only if the kernel's SYN-ACK agreed."""
    m = re.search(r"\bwscale:(\d+),(\d+)", view)
    assert m, view
    assert re.search(r"\bmss:1448\b", view), view
    if gannet is not None:
        assert gannet["sack_ok"] and gannet["ts_ok"], gannet
        # each side's shift as the other announced it
        assert (gannet["snd_wscale"], gannet["rcv_wscale"]) == (int(m.group(1)), int(m.group(2)))
        assert gannet["mss"] == 1448


@pytest.mark.parametrize("name,link,size", [
    ("clean", {}, 20_000_000),
    ("1% loss 40 ms", {"delay": "20ms", "loss": "1%"}, 3_000_000),
])
def test_gannet_tcp_to_a_kernel_receiver(name, link, size):
    nbytes = BULK or size
    with Netlab(link=LinkConfig(**link) if link else None, seed=5) as lab:
        kernel, gannet, view, logs = gannet_to_kernel(lab, nbytes, 560 if BULK else 100)
        stats = lab.stats()["links"]["a->b"]
    assert kernel["bytes"] == gannet["sent"] == nbytes, logs
    assert kernel["sha256"] == gannet["sha256"] == gannet["echo"]
    check_negotiated(view, gannet)
    if link:
        assert stats["dropped"]["loss"] > 0  # the loss really happened to this transfer
        assert gannet["retransmits"] > 0  # and Gannet repaired it
    rate = nbytes * 8 / gannet["seconds"] / 1e6
    print(f"\n{name}: {nbytes / 1e6:.0f} MB Gannet TCP -> kernel in {gannet['seconds']:.2f} s "
          f"({rate:.0f} Mbit/s); kernel view: {' '.join(view.split())[:300]}")


def test_kernel_sender_to_a_gannet_tcp_receiver():
    nbytes = BULK or 10_000_000
    with Netlab(seed=6) as lab:
        sink = lab.popen("b", [PY, "-c", GANNET_SINK, lab.addr("b"), str(PORT)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        wait_line(sink, "ready")
        src = lab.popen("a", [PY, "-c", KERNEL_SOURCE, lab.addr("b"), str(PORT), str(nbytes)],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        # the kernel's view while the transfer runs (polled: it may last well
        # under a second, and starts when the handshake is done)
        view, deadline = "", time.monotonic() + 10
        while "wscale:" not in view and src.poll() is None and time.monotonic() < deadline:
            view = lab.run("a", ["ss", "-tin", "state", "established",
                                 f"( dport = :{PORT} )"]).stdout
            time.sleep(0.02)
        sout, serr = finish(src, 560 if BULK else 100)
        gout, gerr = finish(sink, 20)
    kernel, gannet = last_json(sout), last_json(gout)
    assert gannet["bytes"] == kernel["sent"] == nbytes, (serr, gerr)
    assert gannet["sha256"] == kernel["sha256"] == kernel["echo"]
    if nbytes > 5_000_000:
        check_negotiated(view)
    rate = nbytes * 8 / kernel["seconds"] / 1e6
    print(f"\nkernel -> Gannet TCP: {nbytes / 1e6:.0f} MB in {kernel['seconds']:.2f} s ({rate:.0f} Mbit/s)")


def tun_address(lab, node, host):
    """An address in the lab link's network for a TUN carrier in `node`,
    which forwards it: the other node sends it across the link."""
    lab.run(node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"], timeout=10, check=True)
    return f"{lab.addr(node).rsplit('.', 1)[0]}.{host}"


@pytest.mark.skipif(not os.path.exists("/dev/net/tun"), reason="no /dev/net/tun")
def test_the_tun_carrier_inside_netlab_both_ways():
    """Gannet on the TUN carrier (gannet.io.tuntcp) inside the lab: to a
    kernel receiver across 1 % loss and 40 ms, and from a kernel sender."""
    nbytes = BULK or 3_000_000
    with Netlab(link=LinkConfig(delay="20ms", loss="1%"), seed=7) as lab:
        kernel, gannet, view, logs = gannet_to_kernel(lab, nbytes, 560 if BULK else 100,
                                                      tun=tun_address(lab, "a", 10))
        stats = lab.stats()["links"]["a->b"]
    assert kernel["bytes"] == gannet["sent"] == nbytes, logs
    assert kernel["sha256"] == gannet["sha256"] == gannet["echo"]
    check_negotiated(view, gannet)
    assert stats["dropped"]["loss"] > 0 and gannet["retransmits"] > 0
    assert gannet["gso_calls"] > 0  # runs of segments left as TSO packets

    nbytes = BULK or 5_000_000
    with Netlab(seed=8) as lab:
        addr = tun_address(lab, "b", 20)
        sink = lab.popen("b", [PY, "-c", GANNET_SINK, addr, str(PORT), "tun"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        wait_line(sink, "ready")
        src = lab.popen("a", [PY, "-c", KERNEL_SOURCE, addr, str(PORT), str(nbytes)],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        sout, serr = finish(src, 560 if BULK else 100)
        gout, gerr = finish(sink, 20)
    kernel, gannet = last_json(sout), last_json(gout)
    assert gannet["bytes"] == kernel["sent"] == nbytes, (serr, gerr)
    assert gannet["sha256"] == kernel["sha256"] == kernel["echo"]
