"""examples/*.py as subprocesses over loopback."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gannet_io_helpers import free_udp_port

pytestmark = pytest.mark.timeout(40)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def start(script, *args):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(EXAMPLES / script), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_listening(proc):
    line = proc.stdout.readline()
    assert line.startswith("Listening on"), line


def client(script, port, *messages):
    return subprocess.run([sys.executable, str(EXAMPLES / script), "127.0.0.1", str(port), *messages],
                          capture_output=True, text=True, timeout=20)


@pytest.mark.parametrize("server,client_script,prefix", [
    ("echo_server.py", "echo_client.py", "Echo: "),
    ("aio_echo_server.py", "aio_echo_client.py", ""),
])
def test_example_pair(server, client_script, prefix):
    port = free_udp_port()
    proc = start(server, "127.0.0.1", str(port))
    try:
        wait_listening(proc)
        t0 = time.monotonic()
        done = client(client_script, port, "hello", "gannet")
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == [f"{prefix}hello", f"{prefix}gannet"]
        assert time.monotonic() - t0 < 10
        again = client(client_script, port, "twice")
        assert again.returncode == 0, again.stderr
        assert again.stdout.splitlines() == [f"{prefix}twice"]
    finally:
        proc.terminate()
        proc.wait(10)


def test_echo_client_against_nothing_fails_fast():
    done = client("echo_client.py", free_udp_port(), "x")
    assert done.returncode != 0
    assert "ConnectionRefusedError" in done.stderr
