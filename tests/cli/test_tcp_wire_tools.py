"""Kernel clients talking to Gannet's engine on the TCP wire, on loopback:
nc, curl and Python sockets against `gannet echo-server --wire tcp` and an
HTTP responder on the Gannet TCP server API; `gannet echo`, `send`/`receive`
and `bench` with `--wire tcp` on both ends."""

import hashlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from gannet_cli_helpers import stop
from programs import require

from gannet.io import firewall

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(os.geteuid() != 0, reason="raw sockets need root"),
]

GANNET = [sys.executable, "-m", "gannet"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def start(cmd, pattern, tmp_path, name):
    err = tmp_path / f"{name}.log"
    proc = subprocess.Popen(cmd, stdout=err.open("wb"), stderr=subprocess.STDOUT, env=ENV)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proc.poll() is None:
        m = re.search(pattern, err.read_text())
        if m:
            return proc, int(m.group(1)), err
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"{name} did not start: {err.read_text()}")


@pytest.fixture
def echo_server(tmp_path):
    proc, port, log = start(GANNET + ["echo-server", "--wire", "tcp", "--port", "0"],
                            r"listening on 127\.0\.0\.1:(\d+)", tmp_path, "echo")
    yield port, proc, log
    stop(proc)
    # SIGTERM took the firewall rule with it
    assert [r for r in firewall.rules() if r[0] == proc.pid] == []


def test_nc_talks_to_the_gannet_echo_server(echo_server):
    require("nc")
    port, _, log = echo_server
    r = subprocess.run(["nc", "-q", "1", "127.0.0.1", str(port)], input=b"hello\nworld\n",
                       capture_output=True, timeout=30)
    assert r.stdout == b"hello\nworld\n"
    assert re.search(r"disconnected after 12 bytes", log.read_text())


def test_python_sockets_bulk_both_directions(echo_server):
    port = echo_server[0]
    data = os.urandom(8_000_000)
    back = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as c:
        def reader():
            while chunk := c.recv(1 << 16):
                back.extend(chunk)

        t = threading.Thread(target=reader)
        t.start()
        c.sendall(data)
        c.shutdown(socket.SHUT_WR)
        t.join(60)
    assert hashlib.sha256(back).hexdigest() == hashlib.sha256(data).hexdigest()


def test_gannet_echo_client_on_the_tcp_wire(echo_server):
    port = echo_server[0]
    r = subprocess.run(GANNET + ["echo", f"127.0.0.1:{port}", "--wire", "tcp", "-m", "one", "-m", "two"],
                       capture_output=True, timeout=30, env=ENV)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"one\ntwo\n"


def test_curl_and_a_gannet_tcp_http_responder(tmp_path):
    require("curl")
    proc, port, _ = start([sys.executable, str(EXAMPLES / "tcp_http_server.py"), "127.0.0.1", "0"],
                            r"Listening on 127\.0\.0\.1:(\d+)", tmp_path, "http")
    try:
        url = f"http://127.0.0.1:{port}"
        r = subprocess.run(["curl", "-sS", "--max-time", "20", f"{url}/hello"], capture_output=True,
                           timeout=30)
        assert r.stdout == b"Hello from Gannet over TCP: GET /hello\n", r.stderr
        r = subprocess.run(["curl", "-sS", "--max-time", "30", f"{url}/bytes/3000000"],
                           capture_output=True, timeout=40)
        assert r.stdout == (b"0123456789abcdef" * 187500)
        body = tmp_path / "body"
        body.write_bytes(os.urandom(4_000_000))
        r = subprocess.run(["curl", "-sS", "--max-time", "30", "--data-binary", f"@{body}", url],
                           capture_output=True, timeout=40)
        assert r.stdout.decode().strip() == hashlib.sha256(body.read_bytes()).hexdigest(), r.stderr
    finally:
        stop(proc)


def test_send_and_receive_on_the_tcp_wire(tmp_path):
    out = tmp_path / "out"
    proc, port, _ = start(GANNET + ["receive", "--wire", "tcp", "--host", "127.0.0.1", "--port", "0",
                                      "--dir", str(out), "--once"],
                            r"listening on [\d.]+:(\d+)", tmp_path, "receive")
    try:
        src = tmp_path / "file.bin"
        src.write_bytes(os.urandom(2_000_000))
        r = subprocess.run(GANNET + ["send", str(src), f"127.0.0.1:{port}", "--wire", "tcp"],
                           capture_output=True, timeout=60, env=ENV)
        assert r.returncode == 0, r.stderr
        proc.wait(30)
        assert (out / "file.bin").read_bytes() == src.read_bytes()
    finally:
        stop(proc)


def test_bench_on_the_tcp_wire(tmp_path):
    proc, port, _ = start(GANNET + ["bench", "server", "--wire", "tcp", "--port", "0", "--once"],
                            r"listening on 127\.0\.0\.1:(\d+)", tmp_path, "bench")
    try:
        r = subprocess.run(GANNET + ["bench", "client", f"127.0.0.1:{port}", "--wire", "tcp",
                                     "--bytes", "10MB"], capture_output=True, text=True, timeout=60,
                           env=ENV)
        assert r.returncode == 0, r.stderr
        assert "verified (count + CRC32C)" in r.stderr and "FAILED" not in r.stderr
    finally:
        stop(proc)


def test_hostile_segments_at_a_gannet_tcp_listener_disturb_nothing(echo_server):
    """Random and malformed packets at the listener's port (bad checksums,
    bad offsets, truncated options, random flags and sequence numbers on a
    live connection's 4-tuple, stray SYNs) while a kernel client's
    connection is open: it keeps echoing, and no exception reaches the log."""
    import random

    from gannet.wire import ipv4
    from gannet.wire import tcp as tcpwire
    from gannet.wire.segment import Segment

    port, proc, log = echo_server
    rng = random.Random(7)
    lo = bytes([127, 0, 0, 1])
    with socket.create_connection(("127.0.0.1", port), timeout=20) as c:
        c.sendall(b"before\n")
        assert c.recv(100) == b"before\n"
        cport = c.getsockname()[1]
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        with raw:
            for i in range(1500):
                sport = cport if i % 3 == 0 else rng.randrange(1024, 65536)
                kind = i % 5
                if kind == 0:  # random bytes after a plausible port pair
                    seg = sport.to_bytes(2, "big") + port.to_bytes(2, "big") + rng.randbytes(rng.randrange(0, 60))
                elif kind == 1:  # a valid segment with random fields and flags
                    seg = tcpwire.encode(sport, port, Segment(rng.getrandbits(32), rng.getrandbits(32),
                                                              rng.getrandbits(8), rng.getrandbits(16),
                                                              rng.randbytes(rng.randrange(0, 100))), lo, lo)
                elif kind == 2:  # bad checksum
                    seg = bytearray(tcpwire.encode(sport, port, Segment(1, 2, 0x10, 3, b"zz"), lo, lo))
                    seg[16] ^= 0x55
                    seg = bytes(seg)
                elif kind == 3:  # bad data offset / truncated option, checksum fixed
                    seg = bytearray(tcpwire.encode(sport, port, Segment(1, 2, 0x10, 3), lo, lo) + b"\x05\x0a\x00\x00")
                    seg[12] = rng.choice([0x10, 0x60, 0xF0])
                    seg[16:18] = b"\0\0"
                    seg[16:18] = tcpwire.checksum(seg, lo, lo).to_bytes(2, "big")
                    seg = bytes(seg)
                else:  # a stray SYN from an unknown port
                    seg = tcpwire.encode(sport, port, Segment(rng.getrandbits(32), 0, 0x02, 1000, mss=rng.randrange(0, 70000) & 0xFFFF), lo, lo)
                raw.sendto(ipv4.build(lo, lo, len(seg)) + seg, ("127.0.0.1", 0))
        time.sleep(0.3)
        c.sendall(b"after\n")
        got = b""
        while not got.endswith(b"after\n"):
            chunk = c.recv(100)
            assert chunk, "the connection was closed"
            got += chunk
        assert got == b"after\n"
    assert proc.poll() is None
    text = log.read_text()
    assert "Traceback" not in text and "Error" not in text.replace("disconnected", ""), text
