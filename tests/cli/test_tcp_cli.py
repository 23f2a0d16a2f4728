"""`gannet tcp test-server` and `gannet tcp connect` as real subprocesses on loopback."""

import os
import re
import socket
import subprocess
import sys
import time

import pytest
from gannet_cli_helpers import stop
from kernelpeers import kernel_sink

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


# ------------------------------------------------------------ gannet tcp connect
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="raw sockets need root")

STEPS = re.compile(
    r"\[\*\] Starting TCP handshake with 127\.0\.0\.1:(\d+)\n"
    r"\[>\] Sending SYN \(seq=(\d+)\)\n"
    r"\[<\] Received SYN-ACK \(seq=(\d+), ack=(\d+)\)\n"
    r"\[>\] Sending ACK \(seq=(\d+), ack=(\d+)\)\n"
    r"\[\+\] TCP connection established!\n"
    r"\[>\] Sending data: (.*)\n"
    r"\[\*\] Data sent successfully\n"
)


def connect(target, *args, stdin=None, timeout=60):
    return subprocess.run(GANNET + ["tcp", "connect", target, *args], input=stdin,
                          capture_output=True, timeout=timeout, env=ENV)


def check_steps(stderr: str, port: int, text: str) -> None:
    m = STEPS.search(stderr)
    assert m, stderr
    assert int(m.group(1)) == port
    syn, synack_seq, synack_ack, ack_seq, ack_ack = (int(m.group(i)) for i in range(2, 7))
    assert synack_ack == (syn + 1) % 2**32  # the kernel acknowledged our SYN
    assert (ack_seq, ack_ack) == ((syn + 1) % 2**32, (synack_seq + 1) % 2**32)
    assert m.group(7) == text
    assert re.search(r"\[>\] Sending FIN \(seq=\d+, ack=\d+\)\n", stderr)
    assert re.search(r"\[\+\] Connection closed \((TIME-WAIT|CLOSED)\)\n$", stderr)


@needs_root
def test_connect_to_the_test_server_in_the_seeds_steps(test_server, tmp_path):
    r = connect(f"127.0.0.1:{test_server.port}", "--message", "Hello from custom TCP client!")
    stderr = r.stderr.decode()
    assert r.returncode == 0, stderr
    check_steps(stderr, test_server.port, "Hello from custom TCP client!")
    assert r.stdout == b"got it"  # the server's reply, on stdout
    wait_for(tmp_path / "server.out", r"\[-\] Connection from 127\.0\.0\.1:\d+ closed",
             test_server.process)
    text = test_server.output()
    assert "    Raw bytes: b'Hello from custom TCP client!'\n" in text
    assert "    Hex: 48656c6c6f2066726f6d20637573746f6d2054435020636c69656e7421\n" in text


@needs_root
def test_connect_sends_stdin_exactly_to_a_plain_python_server():
    import hashlib

    data = os.urandom(300_000) + b"\x00end\n"
    with kernel_sink(lambda got: hashlib.sha256(got).hexdigest().encode()) as (port, got):
        r = connect(f"127.0.0.1:{port}", stdin=data)
    stderr = r.stderr.decode()
    assert r.returncode == 0, stderr
    assert bytes(got) == data
    assert "[>] Sending data: " in stderr and "\\x00" in stderr  # shown escaped
    # The server answered after our FIN; the reply still reached stdout.
    assert r.stdout == hashlib.sha256(data).hexdigest().encode()


@needs_root
def test_connect_refused_is_one_line_and_non_zero():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    r = connect(f"127.0.0.1:{port}", "--message", "x", timeout=30)
    assert r.returncode == 1
    last = r.stderr.decode().splitlines()[-1]
    assert last == f"gannet: connection refused by 127.0.0.1:{port} (RST)"


@needs_root
def test_connect_unreachable_is_one_line_and_non_zero():
    """No answer at all: inside a namespace of the test's own, where a rule
    drops every segment to the port before the kernel sees it."""
    from programs import require

    require("ip", "iptables")
    ns = f"gtcp{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "netns", "exec", ns, "iptables", "-A", "INPUT", "-p", "tcp",
                        "--dport", "9999", "-j", "DROP"], check=True)
        r = subprocess.run(["ip", "netns", "exec", ns] + GANNET
                           + ["tcp", "connect", "127.0.0.1:9999", "--message", "x", "--timeout", "1.5"],
                           capture_output=True, timeout=60, env=ENV)
    finally:
        subprocess.run(["ip", "netns", "del", ns])
    assert r.returncode == 1
    lines = r.stderr.decode().splitlines()
    assert lines[-1] == "gannet: no answer from 127.0.0.1:9999 within 1.5 s (unreachable?)"
    assert lines[-2].startswith("[>] Sending SYN")


@needs_root
def test_without_root_one_line_says_what_is_needed():
    from programs import require

    require("setpriv")
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + GANNET
                       + ["tcp", "connect", "127.0.0.1:9", "--message", "x"],
                       capture_output=True, timeout=60, env=ENV)
    assert r.returncode == 1
    err = r.stderr.decode()
    assert err.count("\n") == 1 and "needs root" in err, err
