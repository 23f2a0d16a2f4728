"""`gannet tcp test-server` and `gannet tcp connect` as real subprocesses on loopback."""

import os
import re
import socket
import subprocess
import sys
import time

import pytest
from gannet_cli_helpers import stop

pytestmark = pytest.mark.timeout(120)

GANNET = [sys.executable, "-m", "gannet"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def wait_for(path, pattern, proc, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(pattern, path.read_text())
        if m:
            return m
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    raise AssertionError(f"{pattern!r} not in:\n{path.read_text()}")


@pytest.fixture
def test_server(tmp_path):
    out = tmp_path / "server.out"
    proc = subprocess.Popen(GANNET + ["tcp", "test-server", "--port", "0", "--reply", "got it"],
                            stdout=out.open("wb"), stderr=subprocess.STDOUT, env=ENV)
    m = wait_for(out, r"\[\*\] Server listening on 127\.0\.0\.1:(\d+)\n", proc)

    class Handle:
        port = int(m.group(1))
        process = proc

        @staticmethod
        def output() -> str:
            return out.read_text()

    yield Handle
    stop(proc)


def test_test_server_prints_what_a_kernel_client_sends_in_the_seeds_style(test_server, tmp_path):
    with socket.create_connection(("127.0.0.1", test_server.port), timeout=10) as c:
        local_port = c.getsockname()[1]
        c.sendall(b"Hello from custom TCP client!")
        assert c.recv(100) == b"got it"  # --reply
        c.sendall(b"ctl\x1b[2J\n\xff")  # a terminal escape and an invalid byte
        assert c.recv(100) == b"got it"
    out = tmp_path / "server.out"
    wait_for(out, r"\[-\] Connection from 127\.0\.0\.1:\d+ closed", test_server.process)
    text = test_server.output()
    assert (
        f"[+] Connection from 127.0.0.1:{local_port}\n"
        "[>] Received 29 bytes:\n"
        "    Raw bytes: b'Hello from custom TCP client!'\n"
        "    Hex: 48656c6c6f2066726f6d20637573746f6d2054435020636c69656e7421\n"
        "    Text: Hello from custom TCP client!\n"
    ) in text
    assert "[>] Received 9 bytes:\n" in text
    assert "    Text: ctl\\x1b[2J\\n\\xff\n" in text  # escaped, never raw
    assert "\x1b" not in text


def test_test_server_port_in_use_is_one_line(test_server):
    r = subprocess.run(GANNET + ["tcp", "test-server", "--port", str(test_server.port)],
                       capture_output=True, timeout=30, env=ENV)
    assert r.returncode == 1
    assert r.stderr.decode().count("\n") == 1
    assert "cannot listen on 127.0.0.1" in r.stderr.decode()
