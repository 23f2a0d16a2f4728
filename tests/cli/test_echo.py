"""`gannet echo-server` and `gannet echo` as real subprocesses on loopback."""

import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from gannet_cli_helpers import stop

pytestmark = pytest.mark.timeout(120)

GANNET = [sys.executable, "-m", "gannet"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def echo_server(tmp_path):
    err = tmp_path / "server.err"
    proc = subprocess.Popen(GANNET + ["echo-server", "--port", "0"], stdout=subprocess.DEVNULL,
                            stderr=err.open("wb"), env=ENV)
    deadline = time.monotonic() + 15
    port = None
    while time.monotonic() < deadline and proc.poll() is None:
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", err.read_text())
        if m:
            port = int(m.group(1))
            break
        time.sleep(0.02)
    if port is None:
        proc.kill()
        raise AssertionError(f"echo-server did not start: {err.read_text()}")

    class Handle:
        address = f"127.0.0.1:{port}"
        process = proc

        @staticmethod
        def log() -> str:
            return err.read_text()

    yield Handle
    stop(proc)


def echo(address, *args, stdin=None, timeout=30):
    return subprocess.run(GANNET + ["echo", address, *args], input=stdin, capture_output=True,
                          timeout=timeout, env=ENV)


def wait_log(server, pattern, count=1, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(re.findall(pattern, server.log())) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{count} x {pattern!r} not in the server log:\n{server.log()}")


def test_stdin_lines_are_echoed(echo_server):
    res = echo(echo_server.address, stdin="hello\nworld ✓\n\nlast line without newline".encode())
    assert res.returncode == 0, res.stderr
    assert res.stdout.decode() == "hello\nworld ✓\n\nlast line without newline\n"
    wait_log(echo_server, r"client 127\.0\.0\.1:\d+ connected")
    wait_log(echo_server, r"client 127\.0\.0\.1:\d+ disconnected after \d+ bytes")


def test_messages_option(echo_server):
    res = echo(echo_server.address, "--message", "one", "-m", "two words")
    assert res.returncode == 0, res.stderr
    assert res.stdout.decode().splitlines() == ["one", "two words"]


def test_large_line(echo_server):
    line = "x" * 300_000
    res = echo(echo_server.address, stdin=(line + "\n").encode())
    assert res.returncode == 0, res.stderr
    assert res.stdout.decode() == line + "\n"


def test_ten_concurrent_clients(echo_server):
    def client(i):
        lines = [f"client {i} line {j}" for j in range(20)]
        res = echo(echo_server.address, stdin=("\n".join(lines) + "\n").encode(), timeout=60)
        return res, lines

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(client, range(10)))
    for res, lines in results:
        assert res.returncode == 0, res.stderr
        assert res.stdout.decode().splitlines() == lines
    wait_log(echo_server, r"connected \(", count=10)
    wait_log(echo_server, r"disconnected after", count=10)
    assert echo_server.process.poll() is None  # still serving
    assert len(set(re.findall(r"client (127\.0\.0\.1:\d+) connected", echo_server.log()))) == 10


def test_errors_are_one_line(tmp_path):
    res = echo("127.0.0.1:1", "-m", "x", timeout=30)
    assert res.returncode == 1
    assert res.stderr.decode().strip().startswith("gannet: connection refused")
    assert len(res.stderr.decode().strip().splitlines()) == 1
    res = echo("no-port-here", "-m", "x")
    assert res.returncode == 1 and "expected HOST:PORT" in res.stderr.decode()
