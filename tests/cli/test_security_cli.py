"""The security options of `gannet send` / `receive`, run as a person would:
a wrong code fails at once on both sides with one line and writes nothing;
encrypted and --insecure peers refuse each other with a message; a PSK file
pairs a sender and a receiver; --insecure says so loudly."""

from __future__ import annotations

import os
import time

import pytest
from test_send_receive import Receiver, send

pytestmark = pytest.mark.timeout(60)


def _file(tmp_path, n=300_000):
    f = tmp_path / "secret.bin"
    f.write_bytes(os.urandom(n))
    return f


def _wait_exit(r: Receiver, seconds: float = 10) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if r.proc.poll() is not None:
            return r.proc.returncode
        time.sleep(0.05)
    raise AssertionError(f"receiver still running: {r.log}")


def test_receive_prints_a_code_and_send_uses_it(tmp_path):
    f = _file(tmp_path)
    r = Receiver(tmp_path, "--once")
    try:
        assert r.code is not None and len(r.code.split("-")) == 3
        res = send(f, r.target, "--code", r.code)
        assert res.returncode == 0, res.stderr
        assert _wait_exit(r) == 0
        assert (r.dir / "secret.bin").read_bytes() == f.read_bytes()
    finally:
        r.stop()


def test_wrong_code_fails_on_both_sides_and_writes_nothing(tmp_path):
    f = _file(tmp_path)
    r = Receiver(tmp_path, "--once")
    try:
        start = time.monotonic()
        res = send(f, r.target, "--code", "99-wrong-guess")
        assert res.returncode == 1
        lines = [ln for ln in res.stderr.splitlines() if ln.startswith("gannet:")]
        assert len(lines) == 1 and "wrong code" in lines[0], res.stderr
        assert _wait_exit(r) == 1  # the receiver gives the guessed-at code up
        assert time.monotonic() - start < 8
        assert "wrong code" in r.log
        assert not r.dir.exists() or not any(r.dir.iterdir())  # no byte of any file
    finally:
        r.stop()


def test_send_without_the_code_is_told_what_is_missing(tmp_path):
    r = Receiver(tmp_path)
    try:
        res = send(_file(tmp_path), r.target, "--connect-timeout", "5s")
        assert res.returncode == 1 and "needs a code (--code)" in res.stderr, res.stderr
    finally:
        r.stop()


def test_insecure_and_encrypted_refuse_each_other(tmp_path):
    f = _file(tmp_path)
    r = Receiver(tmp_path, "--insecure", name="plain")
    try:
        assert "WARNING: --insecure" in r.log and r.code is None
        res = send(f, r.target, "--code", "1-any-code", "--connect-timeout", "5s")
        assert res.returncode == 1 and "without encryption" in res.stderr, res.stderr
        res = send(f, r.target, "--insecure")
        assert res.returncode == 0 and "WARNING: --insecure" in res.stderr
    finally:
        r.stop()
    r = Receiver(tmp_path, name="secure")
    try:
        res = send(f, r.target, "--insecure", "--connect-timeout", "5s")
        assert res.returncode == 1 and "requires encryption" in res.stderr, res.stderr
    finally:
        r.stop()


def test_psk_file_pairs_and_a_different_one_is_refused(tmp_path):
    from gannet.crypto.psk import generate_psk_file

    good, bad = tmp_path / "good.psk", tmp_path / "bad.psk"
    generate_psk_file(good)
    generate_psk_file(bad)
    f = _file(tmp_path)
    r = Receiver(tmp_path, "--psk-file", str(good))
    try:
        res = send(f, r.target, "--psk-file", str(bad))
        assert res.returncode == 1 and "wrong pre-shared key" in res.stderr, res.stderr
        errors = [ln for ln in res.stderr.splitlines() if ln.startswith("gannet:")]
        assert len(errors) == 1, res.stderr  # one line
        assert not r.dir.exists() or not any(r.dir.iterdir())  # nothing written
        assert "wrong pre-shared key" in r.log  # and the receiver says so too
        res = send(f, r.target, "--psk-file", str(good))
        assert res.returncode == 0, res.stderr
        assert (r.dir / "secret.bin").read_bytes() == f.read_bytes()
    finally:
        r.stop()


def test_bad_security_options_are_one_line_errors(tmp_path):
    f = _file(tmp_path, 10)
    for args, msg in ((["--insecure", "--code", "1-a-b"], "cannot be used with"),
                      (["--code", "not a code!"], "--code"),
                      (["--psk-file", str(tmp_path / "none")], "no such PSK file"),
                      (["--peer-key", "xyz"], "--peer-key")):
        res = send(f, "127.0.0.1:9", *args)
        assert res.returncode == 1 and msg in res.stderr and len(res.stderr.splitlines()) == 1, res.stderr


def test_plain_tcp_transports_refuse_security_options_and_say_they_are_in_clear(tmp_path):
    """`--wire tcp` and `--transport tcp` are plain TCP, which cannot carry
    a key exchange: a code, PSK or pinned key there would be ignored, so it
    is refused; without one they run in clear and say so as --insecure does."""
    import subprocess
    import sys

    psk = tmp_path / "k.psk"
    from gannet.crypto.psk import generate_psk_file

    generate_psk_file(psk)
    f = _file(tmp_path, 10)
    for args in (["--wire", "tcp", "--code", "1-a-b"], ["--wire", "tcp", "--psk-file", str(psk)]):
        res = send(f, "127.0.0.1:9", *args)
        assert res.returncode == 1 and len(res.stderr.splitlines()) == 1, res.stderr
        assert "--wire tcp is plain TCP and carries no encryption" in res.stderr
    gannet = [sys.executable, "-m", "gannet"]
    client = gannet + ["client", "--server-port", "9", "--message", "x", "--transport", "tcp"]
    res = subprocess.run(client + ["--psk-file", str(psk)],
                         capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert res.returncode == 1 and "--transport tcp is plain TCP" in res.stderr, res.stderr
    res = subprocess.run(client + ["--timeout", "2"],
                         capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert "WARNING: --transport tcp (plain TCP): no encryption, no authentication" in res.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="the TCP wire needs raw sockets (root)")
def test_receive_on_the_tcp_wire_makes_no_code_it_could_not_enforce(tmp_path):
    r = Receiver(tmp_path, "--wire", "tcp", "--once")
    try:
        assert r.code is None and "WARNING: --wire tcp (plain TCP)" in r.log
    finally:
        r.stop()


def test_the_api_refuses_security_settings_on_the_tcp_wire(caplog):
    import logging

    from gannet.config import Config
    from gannet.io import security

    for settings in ({"code": "1-a-b"}, {"psk_file": "x.psk"}, {"peer_key": "SHA256:" + "A" * 43}):
        with pytest.raises(ValueError, match="wire='tcp' is plain TCP"):
            security.check_tcp_wire(Config(**settings))
    security.check_tcp_wire(Config(insecure=True))
    assert not caplog.records
    security._warned_tcp_wire = False
    with caplog.at_level(logging.WARNING, logger="gannet.security"):
        security.check_tcp_wire(Config())
        security.check_tcp_wire(Config())
    assert [r.getMessage() for r in caplog.records] == [
        "wire='tcp': plain TCP, no encryption and no authentication (pass insecure=True to say so)"]
