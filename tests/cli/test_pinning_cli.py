"""Server keys pinned as a person meets them: `gannet echo` against
`gannet echo-server` processes that each have their own identity (their own
XDG_CONFIG_HOME). Pins are kept under the name typed and the address it led
to; `--peer-key` takes the key or the fingerprint `gannet id` prints; a
server with another key (a man in the middle with its own keys) is refused
with one line, a non-zero exit and nothing written. Loopback only; every
process is bounded in time."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest
from gannet_cli_helpers import stop

pytestmark = pytest.mark.timeout(120)

GANNET = [sys.executable, "-m", "gannet"]


def _env(home) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "XDG_CONFIG_HOME": str(home)}


def _run(home, *args, timeout=30):
    return subprocess.run(GANNET + list(args), capture_output=True, text=True, timeout=timeout,
                          env=_env(home), stdin=subprocess.DEVNULL)


def _identity(home) -> tuple[str, str]:
    out = _run(home, "id").stdout.splitlines()
    return out[0].removeprefix("key: "), out[1].removeprefix("fingerprint: ")


class EchoServer:
    def __init__(self, home, tmp_path, port: int = 0) -> None:
        self.err = tmp_path / f"server-{time.monotonic_ns()}.err"
        self.proc = subprocess.Popen(GANNET + ["echo-server", "--port", str(port)],
                                     stdout=subprocess.DEVNULL, stderr=self.err.open("wb"), env=_env(home))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and self.proc.poll() is None:
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", self.err.read_text())
            if m:
                self.port = int(m.group(1))
                return
            time.sleep(0.02)
        self.proc.kill()
        raise AssertionError(f"echo-server did not start: {self.err.read_text()}")

    def log(self) -> str:
        return self.err.read_text()


def _echo(home, target, *args):
    return _run(home, "echo", target, "-m", "hello", *args)


def _refused(res, *phrases: str) -> None:
    """One `gannet:` line saying why, exit 1, nothing echoed."""
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("gannet:")]
    assert res.returncode == 1 and len(errors) == 1, res.stderr
    assert all(p in errors[0] for p in phrases), errors[0]
    assert res.stdout == ""


def test_pins_by_name_and_address_and_a_server_with_another_key_is_refused(tmp_path):
    server_a, server_b, client = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    srv = EchoServer(server_a, tmp_path)
    port = srv.port
    try:
        first = _echo(client, f"127.1:{port}")  # a name that resolves to 127.0.0.1
        assert first.returncode == 0 and first.stdout == "hello\n", first.stderr
        assert f"pinned the key of 127.1:{port} (127.0.0.1:{port})" in first.stderr
        listed = _run(client, "trust").stdout.split()
        assert listed[0] == f"127.1:{port},127.0.0.1:{port}" and listed[1] == _identity(server_a)[1]
        again = _echo(client, f"127.0.0.1:{port}")  # the address: already pinned, nothing new
        assert again.returncode == 0 and "pinned" not in again.stderr, again.stderr
    finally:
        stop(srv.proc)
    # Another server (its own keys) takes the same address and port.
    srv = EchoServer(server_b, tmp_path, port)
    try:
        _refused(_echo(client, f"127.1:{port}"), f"the key of 127.1:{port} changed",
                 _identity(server_a)[1], _identity(server_b)[1], f"gannet trust remove 127.1:{port}")
        # A name never used before, leading to the pinned address: refused too.
        _refused(_echo(client, f"127.0.1:{port}"), f"127.0.1:{port} is at 127.0.0.1:{port}",
                 "pinned to another key", f"gannet trust remove 127.0.0.1:{port}")
        assert _run(client, "trust").stdout.split()[0] == f"127.1:{port},127.0.0.1:{port}"  # unchanged
        # Removing the pin by either name forgets both; the next use pins anew.
        removed = _run(client, "trust", "remove", f"127.0.0.1:{port}")
        assert removed.returncode == 0 and f"also pinned as 127.1:{port}" in removed.stderr
        assert _echo(client, f"127.1:{port}").returncode == 0
    finally:
        stop(srv.proc)


def test_peer_key_takes_the_key_or_the_fingerprint(tmp_path):
    server, client = tmp_path / "s", tmp_path / "c"
    key, fp = _identity(server)
    other_key, other_fp = _identity(tmp_path / "other")
    srv = EchoServer(server, tmp_path)
    target = f"127.0.0.1:{srv.port}"
    try:
        for pin in (key, fp, "sha256:" + fp[7:]):
            res = _echo(client, target, "--peer-key", pin)
            assert res.returncode == 0 and res.stdout == "hello\n", res.stderr
        for pin in (other_key, other_fp):
            _refused(_echo(client, target, "--peer-key", pin), "not the pinned one")
        assert not (client / "gannet" / "known_hosts").exists()  # an explicit pin writes no pin
        for bad, phrase in (("SHA256:tooshort", "not a fingerprint"),
                            ("abc", "not a key or a fingerprint")):
            res = _echo(client, target, "--peer-key", bad)
            assert res.returncode == 1 and len(res.stderr.splitlines()) == 1, res.stderr
            assert phrase in res.stderr and "gannet id" in res.stderr
        added = _run(client, "trust", "add", target, fp)
        assert added.returncode == 1 and "needs the key itself" in added.stderr
    finally:
        stop(srv.proc)
