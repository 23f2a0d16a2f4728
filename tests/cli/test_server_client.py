"""`gannet server` and `gannet client` as real subprocesses on loopback."""

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

# The stream transport both commands use (what `--transport auto` picks too);
# "tcp" runs the same tests over asyncio TCP.
TRANSPORT = "gannet"
GANNET = [sys.executable, "-m", "gannet"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


class Server:
    def __init__(self, tmp_path: Path, *args: str):
        self.out_path = tmp_path / "server.out"
        self.err_path = tmp_path / "server.err"
        self.proc = subprocess.Popen(
            GANNET + ["server", "--port", "0", "--transport", TRANSPORT, *args],
            stdout=self.out_path.open("wb"), stderr=self.err_path.open("wb"), env=ENV,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            m = re.search(r"listening on [\d.]+:(\d+)", self.err_path.read_text())
            if m:
                self.port = int(m.group(1))
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise AssertionError(f"server did not start: {self.err_path.read_text()}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)

    @property
    def stdout(self) -> str:
        return self.out_path.read_text()

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()


@pytest.fixture
def server_factory(tmp_path):
    servers = []

    def make(*args):
        s = Server(tmp_path / str(len(servers)) if servers else tmp_path, *args)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


def client(port, *args, stdin=b"", timeout=15):
    return subprocess.run(
        GANNET + ["client", "--server-port", str(port), "--transport", TRANSPORT, *args],
        input=stdin, capture_output=True, timeout=timeout, env=ENV,
    )


def wait_for(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def test_stdin_lines_step_by_step(server_factory):
    srv = server_factory()
    r = client(srv.port, "--client-id", "tester", stdin=b"hello\nworld\r\n\nlast line")
    err = r.stderr.decode()
    assert r.returncode == 0, err
    assert r.stdout == b""  # human text goes to stderr only
    assert "mode=step-by-step" in err and "window=1" in err
    assert [ln for ln in err.splitlines() if "ack seq=" in ln] == [
        f"gannet client: ack seq={i}" for i in range(1, 5)
    ]
    assert wait_for(lambda: "disconnect" in srv.stderr)
    assert srv.stdout == "hello\nworld\n\nlast line\n"
    assert "client_id=tester" in srv.stderr


def test_burst_json_repeated_message(server_factory):
    srv = server_factory()
    r = client(srv.port, "--operation-mode", "burst", "--window", "4", "--format", "json",
               "--message", "ping", "--count", "30", "-q")
    assert r.returncode == 0, r.stderr.decode()
    assert "30 messages" in r.stderr.decode()
    assert wait_for(lambda: srv.stdout.count("ping\n") == 30)
    assert "format=json mode=burst" in srv.stderr


def test_lowered_size_fragments_file(server_factory, tmp_path):
    srv = server_factory("--max-size", "32", "--max-window", "2")
    f = tmp_path / "msg.txt"
    f.write_bytes(b"first line\nsecond line, long enough to need several fragments" * 3)
    r = client(srv.port, "--file", str(f), "--max-size", "1000", "--operation-mode", "burst",
               "--window", "16")
    err = r.stderr.decode()
    assert r.returncode == 0, err
    assert "note: server lowered max_packet_size from 1000 to 32" in err
    assert "note: server lowered window_size from 16 to 2" in err
    want = f.read_text().replace("\n", "\\n") + "\n"
    assert wait_for(lambda: srv.stdout == want), srv.stdout


def test_concurrent_clients(server_factory):
    srv = server_factory()
    procs = [
        subprocess.Popen(
            GANNET + ["client", "--server-port", str(srv.port), "--transport", TRANSPORT,
                      "--operation-mode", "burst" if i % 2 else "step-by-step", "-q",
                      "--message", f"from client {i}", "--count", "5"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
        for i in range(4)
    ]
    for p in procs:
        _, err = p.communicate(timeout=15)
        assert p.returncode == 0, err.decode()
    assert wait_for(lambda: len(srv.stdout.splitlines()) == 20)
    lines = srv.stdout.splitlines()
    assert sorted(set(lines)) == [f"from client {i}" for i in range(4)]
    assert srv.stderr.count("disconnect (done)") == 4
    # each session is logged under its own id: connect (with what was
    # negotiated), its messages, its disconnect
    ids = set(re.findall(r"\[127\.0\.0\.1:\d+ ([0-9a-f]{12})\] connect: .*mode=", srv.stderr))
    assert len(ids) == 4, srv.stderr
    for sid in ids:
        assert len(re.findall(rf"{sid}\] message \d+: ", srv.stderr)) == 5
        assert re.search(rf"{sid}\] disconnect \(done\): 5 messages", srv.stderr)


def _rate(err: str) -> float:
    m = re.search(r"(\d+) messages .* acknowledged in ([\d.]+) s \(([\d,]+) msg/s\)", err)
    assert m, err
    return float(m.group(3).replace(",", ""))


def test_burst_is_faster_than_step_by_step(server_factory):
    """The measured difference of the two modes, as the client reports it."""
    srv = server_factory("--max-window", "32", "-q")
    common = ["--message", "x" * 64, "--count", "2000", "-q"]
    step = client(srv.port, "--operation-mode", "step-by-step", *common, timeout=60)
    burst = client(srv.port, "--operation-mode", "burst", "--window", "32", *common, timeout=60)
    assert step.returncode == 0 and burst.returncode == 0, (step.stderr, burst.stderr)
    step_rate, burst_rate = _rate(step.stderr.decode()), _rate(burst.stderr.decode())
    # step-by-step waits a round trip per message; a window of 32 does not
    assert burst_rate > 2 * step_rate, (step_rate, burst_rate)


def test_refused_session_is_one_line_exit_1(server_factory):
    srv = server_factory("--format", "binary")
    r = client(srv.port, "--format", "json", "--message", "x")
    err = r.stderr.decode().strip().splitlines()
    assert r.returncode == 1
    # A first connection to this server pins its key and says so
    # (docs/security.md); the refusal itself is one line.
    notice = [line for line in err if line.startswith("gannet: pinned the key of 127.0.0.1:")]
    assert len(notice) == 1 and "on first use: SHA256:" in notice[0]
    assert [line for line in err if line not in notice] == [
        "gannet: server refused the session: this server accepts only binary messages, not json"]
    assert srv.stdout == ""


def test_connection_refused_exit_1():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = client(port, "--message", "x")
    assert r.returncode == 1
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "connection refused" in lines[0]


def test_server_killed_mid_session_exit_1(server_factory):
    srv = server_factory()
    proc = subprocess.Popen(
        GANNET + ["client", "--server-port", str(srv.port), "--transport", TRANSPORT],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    proc.stdin.write(b"one\n")
    proc.stdin.flush()
    assert wait_for(lambda: srv.stdout == "one\n")
    srv.proc.kill()
    srv.proc.wait(5)
    proc.stdin.write(b"two\n")
    proc.stdin.flush()
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 1
    last = err.decode().strip().splitlines()[-1]
    # Over TCP the dead server's kernel answers with RST ("closed"); over
    # Gannet the client notices the silence ("no ACK").
    assert last.startswith("gannet: ") and any(w in last for w in ("closed", "lost", "no ACK")), last


def test_hostile_client_text_is_escaped(server_factory):
    # Issue 12, finding 10: client_id, message text and the DISCONNECT reason
    # are the client's choice; none reaches the terminal raw.
    import asyncio

    from gannet.apps.messages import connect
    from gannet.apps.messages.transport import resolve

    evil = "x\x1b]0;owned\x07\x1b[2J\u009b1m\u202e\ngannet server: [forged] disconnect"
    srv = server_factory()

    async def main():
        c = await connect("127.0.0.1", srv.port, client_id=evil,
                          open_connection=resolve(TRANSPORT)[1])
        await c.send(evil.encode() + b"\r\xff")
        await c.disconnect(reason=evil)

    asyncio.run(asyncio.wait_for(main(), 15))
    assert wait_for(lambda: "disconnect (" in srv.stderr)
    out, err = srv.stdout, srv.stderr
    for raw in ("\x1b", "\x07", "\u009b", "\u202e", "\r"):
        assert raw not in out and raw not in err, repr(raw)
    assert not any(line.startswith("gannet server: [forged]") for line in err.splitlines())
    assert out == "x\\x1b]0;owned\\x07\\x1b[2J\\x9b1m\\u202e\\ngannet server: [forged] disconnect\\r\\xff\n"
    assert "client_id=x\\x1b]0;owned" in err and "disconnect (x\\x1b]0;owned" in err
