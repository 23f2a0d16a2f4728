"""`gannet send` and `gannet receive` as real subprocesses on loopback."""

import asyncio
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import gannet

GANNET = [sys.executable, "-m", "gannet"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}

pytestmark = pytest.mark.timeout(60)


class Receiver:
    def __init__(self, tmp_path: Path, *args: str, name: str = "recv"):
        self.dir = tmp_path / "out"
        self.err_path = tmp_path / f"{name}.err"
        self.proc = subprocess.Popen(
            GANNET + ["receive", "--host", "127.0.0.1", "--port", "0", "--dir", str(self.dir), *args],
            stdout=subprocess.DEVNULL, stderr=self.err_path.open("wb"), env=ENV,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            log = self.err_path.read_text()
            m = re.search(r"listening on [\d.]+:(\d+)", log)
            if m:
                self.port = int(m.group(1))
                # The code senders must give (docs/security.md); a receiver
                # started with --insecure or --psk-file prints none.
                c = re.search(r"^gannet receive: code: (\S+)$", log, re.M)
                self.code = c.group(1) if c else None
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise AssertionError(f"receiver did not start: {self.err_path.read_text()}")

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        return self.err_path.read_text()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)


@pytest.fixture
def receiver(tmp_path):
    made = []

    def make(*args, **kw):
        r = Receiver(tmp_path, *args, **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()


def send(*args, timeout=30):
    return subprocess.run(GANNET + ["send", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=ENV)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_single_file_once(tmp_path, receiver):
    f = tmp_path / "hello.txt"
    f.write_text("hello, gannet\n")
    r = receiver("--once")
    res = send(f, r.target, "--code", r.code)
    assert res.returncode == 0, res.stderr
    assert r.proc.wait(10) == 0
    assert (r.dir / "hello.txt").read_text() == "hello, gannet\n"
    assert "1 verified, 0 failed" in res.stderr
    assert "hello.txt" in r.log and "verified" in r.log


def test_tree_binary_empty_and_no_overwrite(tmp_path, receiver):
    src = tmp_path / "tree"
    (src / "a" / "b").mkdir(parents=True)
    (src / "empty-dir").mkdir()
    (src / "empty.dat").write_bytes(b"")
    (src / "a" / "bin.dat").write_bytes(bytes(range(256)) * 1000)
    (src / "a" / "b" / "notes.md").write_text("# notes\n" * 1000)
    r = receiver()
    res = send(src, r.target, "--code", r.code)
    assert res.returncode == 0, res.stderr
    out = r.dir / "tree"
    for rel in ("empty.dat", "a/bin.dat", "a/b/notes.md"):
        assert sha(out / rel) == sha(src / rel)
    assert (out / "empty-dir").is_dir()
    # Once more: the existing files stay, the new copies get "(1)" names.
    (src / "a" / "bin.dat").write_bytes(b"changed")
    res = send(src / "a" / "bin.dat", r.target, "--code", r.code)
    assert res.returncode == 0, res.stderr
    assert (r.dir / "bin.dat").read_bytes() == b"changed"
    res = send(src / "a" / "bin.dat", r.target, "--code", r.code)
    assert (r.dir / "bin (1).dat").read_bytes() == b"changed"
    assert sha(out / "a" / "bin.dat") != sha(src / "a" / "bin.dat")  # untouched


def test_50mb_verified_and_random_not_compressed(tmp_path, receiver):
    f = tmp_path / "big.bin"
    f.write_bytes(os.urandom(50_000_000))
    t = tmp_path / "text.log"
    t.write_text("".join(f"{i:08d} INFO request served in {i % 97} ms\n" for i in range(200_000)))
    r = receiver("--once")
    res = send(f, t, r.target, "--code", r.code, timeout=45)
    assert res.returncode == 0, res.stderr
    assert r.proc.wait(10) == 0
    assert sha(r.dir / "big.bin") == sha(f)
    assert sha(r.dir / "text.log") == sha(t)
    assert re.search(r"big.bin: .* verified .*\(raw\)", r.log)
    assert re.search(r"text.log: .*zstd \d+%.* verified .*\(zstd\)", r.log)


def test_refused_port_one_line(tmp_path):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    f = tmp_path / "x"
    f.write_text("x")
    res = send(f, f"127.0.0.1:{port}", "--connect-timeout", "5s", timeout=15)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot connect" in lines[0], res.stderr


def test_bad_arguments(tmp_path):
    res = send(tmp_path / "missing", "127.0.0.1:9")
    assert res.returncode == 1 and "no such file" in res.stderr
    res = send(tmp_path, "nohostport")
    assert res.returncode == 1 and "HOST:PORT" in res.stderr


def test_resume_after_killing_sender(tmp_path, receiver):
    f = tmp_path / "big.bin"
    f.write_bytes(os.urandom(16_000_000))
    r = receiver()
    part = r.dir / ".big.bin.gannet-part"
    proc = subprocess.Popen(GANNET + ["send", str(f), r.target, "--code", r.code, "--limit-rate", "4MB/s"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    try:
        deadline = time.monotonic() + 15
        while not (part.exists() and part.stat().st_size >= 3_000_000):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
    have = part.stat().st_size
    assert 0 < have < f.stat().st_size and not (r.dir / "big.bin").exists()
    res = send(f, r.target, "--code", r.code)
    assert res.returncode == 0, res.stderr
    assert "resuming at" in res.stderr
    m = re.search(r"big.bin: resumed at offset (\d+)", r.log)
    assert m and int(m.group(1)) >= have
    assert sha(r.dir / "big.bin") == sha(f) and not part.exists()


def test_corrupted_partial_restarts(tmp_path, receiver):
    data = os.urandom(3_000_000)
    f = tmp_path / "data.bin"
    f.write_bytes(data)
    r = receiver("--once")
    r.dir.mkdir(exist_ok=True)
    bad = bytearray(data[:1_500_000])
    bad[777] ^= 0xFF
    (r.dir / ".data.bin.gannet-part").write_bytes(bad)
    res = send(f, r.target, "--code", r.code)
    assert res.returncode == 0, res.stderr
    assert "does not match" in res.stderr and "restarting from zero" in r.log
    assert r.proc.wait(10) == 0
    assert (r.dir / "data.bin").read_bytes() == data


def test_forged_traversal_header_rejected(tmp_path, receiver):
    r = receiver()

    async def forge():
        reader, writer = await gannet.open_connection("127.0.0.1", r.port, code=r.code)
        head = {"protocol": "gannet-transfer", "version": 1, "compression": [], "dirs": [],
                "files": [{"path": "../../escaped.txt", "size": 3, "mode": 420}]}
        writer.write(json.dumps(head).encode() + b"\n")
        reply = json.loads(await asyncio.wait_for(reader.readline(), 10))
        writer.close()
        await writer.wait_closed()
        return reply

    reply = asyncio.run(forge())
    assert reply["ok"] is False and ".." in reply["error"]
    assert "rejected transfer" in r.log
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path.parent / "escaped.txt").exists()
    assert r.proc.poll() is None  # still serving


def test_receiver_killed_sender_gives_up(tmp_path, receiver):
    f = tmp_path / "big.bin"
    f.write_bytes(os.urandom(16_000_000))
    r = receiver()
    part = r.dir / ".big.bin.gannet-part"
    proc = subprocess.Popen(GANNET + ["send", str(f), r.target, "--code", r.code, "--limit-rate", "4MB/s",
                                      "--idle-timeout", "2s"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        deadline = time.monotonic() + 15
        while not (part.exists() and part.stat().st_size >= 1_000_000):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        r.proc.kill()
        r.proc.wait(5)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    assert "connection lost mid-transfer" in err.strip().splitlines()[-1]
    assert "Traceback" not in err


class UdpRelay:
    """A link between senders and the receiver that can be cut and restored.

    Each sender address gets its own upstream socket (as a NAT would), so a
    new run of `gannet send` is a new connection at the receiver. While cut,
    every datagram in either direction is dropped silently."""

    def __init__(self, target_port: int):
        import select
        import threading

        self._select = select.select
        self.target = ("127.0.0.1", target_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.cut = threading.Event()
        self.dropped = 0
        self._up: dict[tuple, socket.socket] = {}
        self._down: dict[socket.socket, tuple] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            ready, _, _ = self._select([self.sock, *self._down], [], [], 0.05)
            for s in ready:
                try:
                    data, addr = s.recvfrom(65535)
                except OSError:
                    continue
                if self.cut.is_set():
                    self.dropped += 1
                    continue
                try:
                    if s is self.sock:
                        up = self._up.get(addr)
                        if up is None:
                            up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                            up.connect(self.target)
                            self._up[addr] = up
                            self._down[up] = addr
                        up.send(data)
                    else:
                        self.sock.sendto(data, self._down[s])
                except OSError:
                    pass  # ICMP errors from an earlier datagram: not the relay's business

    def close(self):
        self._stop.set()
        self._thread.join(2)
        for s in [self.sock, *self._up.values()]:
            s.close()


def test_resume_after_the_link_is_cut(tmp_path, receiver):
    """The link goes dead mid-transfer (no FIN, no RST, nothing): the sender
    gives up with one line, the receiver keeps the part file, and the next run
    over the restored link continues from there, re-verifying the prefix."""
    f = tmp_path / "big.bin"
    f.write_bytes(os.urandom(16_000_000))
    r = receiver()
    relay = UdpRelay(r.port)
    part = r.dir / ".big.bin.gannet-part"
    try:
        proc = subprocess.Popen(
            GANNET + ["send", str(f), f"127.0.0.1:{relay.port}", "--code", r.code, "--limit-rate", "4MB/s",
                      "--idle-timeout", "2s"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
        try:
            deadline = time.monotonic() + 15
            while not (part.exists() and part.stat().st_size >= 3_000_000):
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
            relay.cut.set()
            _, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 1
        assert len([ln for ln in err.splitlines() if ln.startswith("gannet:")]) == 1, err
        assert "Traceback" not in err
        assert relay.dropped > 0
        have = part.stat().st_size
        assert 0 < have < f.stat().st_size and not (r.dir / "big.bin").exists()

        relay.cut.clear()
        res = send(f, f"127.0.0.1:{relay.port}", "--code", r.code)
        assert res.returncode == 0, res.stderr
        assert "resuming at" in res.stderr
        m = re.search(r"big.bin: resumed at offset (\d+)", r.log)
        assert m and int(m.group(1)) >= have
        assert sha(r.dir / "big.bin") == sha(f) and not part.exists()
    finally:
        relay.close()


def test_progress_bar_on_a_terminal(tmp_path, receiver):
    """With stderr on a terminal, the sender draws a live bar with the bytes
    done, the rate and the time left; stdout stays empty."""
    import pty
    import threading

    f = tmp_path / "bar.bin"
    f.write_bytes(os.urandom(6_000_000))
    r = receiver("--once")
    master, slave = pty.openpty()
    screen = bytearray()

    def drain():
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            screen.extend(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    proc = subprocess.run(
        GANNET + ["send", str(f), r.target, "--code", r.code, "--limit-rate", "3MB/s"],
        stdout=subprocess.PIPE, stderr=slave, timeout=30,
        env={**ENV, "COLUMNS": "120", "TERM": "xterm"})
    os.close(slave)
    reader.join(5)
    os.close(master)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode("utf-8", "replace"))  # colors
    assert proc.returncode == 0, text
    assert proc.stdout == b""
    # a bar line: name, a bar, bytes done/total, a rate and an ETA, redrawn in place
    bars = re.findall(r"bar\.bin [━╸╺]+ ([\d.]+)/6\.0 MB [\d.]+ [kM]B/s \d:\d\d:\d\d", text)
    assert len(set(bars)) >= 3, text[-2000:]  # it moved while we watched
    assert "1 verified, 0 failed" in text
    assert r.proc.wait(10) == 0
    assert sha(r.dir / "bar.bin") == sha(f)


SEND_LINES = [
    r"gannet send: connected to 127\.0\.0\.1:\d+, offering 2 file\(s\), 11\.0 kB",
    r"gannet send: text\.txt: 10\.0 kB, 10\.0 kB in [\d.]+ s \([^)]*\), zstd \d+% - sent \(zstd\), "
    r"sha256 [0-9a-f]{16}\.\.\.",
    r"gannet send: noise\.bin: 1\.0 kB, 1\.0 kB in [\d.]+ s \([^)]*\) - sent \(none\), sha256 [0-9a-f]{16}\.\.\.",
    r"gannet send: text\.txt: verified by the receiver as text\.txt",
    r"gannet send: noise\.bin: verified by the receiver as noise\.bin",
    r"gannet send: done: 2 verified, 0 failed; 11\.0 kB sent, [\d.]+ kB on the wire in [\d.]+ s \([^)]*\)",
    r"gannet send: verdict: .+",
]


def test_send_prints_the_same_lines_on_a_pipe_and_on_a_terminal(tmp_path, receiver):
    """What `gannet send` says, line by line, whatever was moved later in its
    start-up (the compressor, the progress bars): a compressible file sent
    with zstd, an incompressible one raw, each verified, the summary and the
    verdict; on a terminal the same lines (the bars, if any, are transient)."""
    import pty
    import threading

    text = tmp_path / "text.txt"
    text.write_bytes(b"gannet " * 1428 + b"1234")
    noise = tmp_path / "noise.bin"
    noise.write_bytes(os.urandom(1000))
    r = receiver("--overwrite")  # (the second send's files keep their names)
    res = send(text, noise, r.target, "--code", r.code)
    assert res.returncode == 0, res.stderr
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == len(SEND_LINES), res.stderr
    for line, pattern in zip(lines, SEND_LINES):
        assert re.fullmatch(pattern, line), (line, pattern)

    master, slave = pty.openpty()
    screen = bytearray()

    def drain():
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            screen.extend(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    proc = subprocess.run(GANNET + ["send", str(text), str(noise), r.target, "--code", r.code],
                          stdout=subprocess.PIPE, stderr=slave, timeout=30,
                          env={**ENV, "COLUMNS": "200", "TERM": "xterm"})
    os.close(slave)
    reader.join(5)
    os.close(master)
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode("utf-8", "replace"))
    assert proc.returncode == 0, shown
    said = [line.strip() for line in shown.replace("\r", "\n").splitlines() if "gannet send:" in line]
    assert len(said) == len(SEND_LINES), shown
    for line, pattern in zip(said, SEND_LINES):
        assert re.fullmatch(pattern, line), (line, pattern)
