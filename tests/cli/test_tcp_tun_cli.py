"""`gannet echo-server` and `gannet echo` with `--wire tcp --carrier tun`, in a
network namespace the test makes: a kernel client talks to the Gannet echo
server on its TUN address, and a Gannet client on a second TUN address talks
to it (the namespace forwards between the two devices)."""

import os
import re
import shutil
import subprocess
import sys
import time

import pytest
from gannet_cli_helpers import stop

pytestmark = [
    pytest.mark.netns,
    pytest.mark.timeout(120),
    pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/net/tun")
                       or shutil.which("ip") is None, reason="needs root, ip and /dev/net/tun"),
]

SERVER, CLIENT, KERNEL, PORT = "10.79.2.2", "10.79.2.3", "10.79.3.1", 7600
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def ns():
    name = f"gtc{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        # the kernel client's address (its source towards the TUN address)
        subprocess.run(["ip", "-n", name, "addr", "add", f"{KERNEL}/32", "dev", "lo"], check=True)
        subprocess.run(["ip", "netns", "exec", name, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
                       check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def in_ns(ns, *cmd):
    return ["ip", "netns", "exec", ns, sys.executable, *cmd]


@pytest.fixture
def echo_server(ns, tmp_path):
    log = tmp_path / "server.log"
    proc = subprocess.Popen(in_ns(ns, "-m", "gannet", "echo-server", "--wire", "tcp", "--carrier", "tun",
                                  "--host", SERVER, "--port", str(PORT)),
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, env=ENV)
    deadline = time.monotonic() + 20
    while not re.search(r"listening on 10\.79\.2\.2:7600", log.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    yield proc, log
    stop(proc)


def test_a_kernel_client_talks_to_the_tun_echo_server(ns, echo_server):
    script = ("import socket\nc = socket.create_connection((%r, %d), timeout=20)\n"
              "c.sendall(b'hello over tun\\n')\nc.shutdown(socket.SHUT_WR)\nout = b''\n"
              "while d := c.recv(100):\n    out += d\nprint(out)") % (SERVER, PORT)
    r = subprocess.run(in_ns(ns, "-c", script), capture_output=True, text=True, timeout=60, env=ENV)
    assert r.stdout.strip() == repr(b"hello over tun\n"), r.stderr


def test_gannet_echo_on_its_own_tun_address(ns, echo_server):
    r = subprocess.run(in_ns(ns, "-m", "gannet", "echo", f"{SERVER}:{PORT}", "--wire", "tcp",
                             "--carrier", "tun", "--tun-address", CLIENT, "-m", "one", "-m", "two"),
                       capture_output=True, text=True, timeout=60, env=ENV)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "one\ntwo\n"
    _, log = echo_server
    assert f"{CLIENT}:" in log.read_text()  # the server saw the client's own address


def test_carrier_tun_without_an_address_is_one_line(ns):
    r = subprocess.run([sys.executable, "-m", "gannet", "echo", f"{SERVER}:{PORT}", "--wire", "tcp",
                        "--carrier", "tun"], capture_output=True, text=True, timeout=60, env=ENV)
    assert r.returncode != 0
    assert "--carrier tun needs --tun-address" in r.stderr
    r = subprocess.run([sys.executable, "-m", "gannet", "echo", f"{SERVER}:{PORT}", "--carrier", "tun",
                        "--tun-address", CLIENT], capture_output=True, text=True, timeout=60, env=ENV)
    assert "--carrier tun needs --wire tcp" in r.stderr


def test_send_and_receive_on_the_tun_carrier(ns, tmp_path):
    out = tmp_path / "out"
    log = tmp_path / "receive.log"
    proc = subprocess.Popen(in_ns(ns, "-m", "gannet", "receive", "--wire", "tcp", "--carrier", "tun",
                                  "--host", SERVER, "--port", str(PORT + 1), "--dir", str(out), "--once"),
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, env=ENV)
    try:
        deadline = time.monotonic() + 20
        while "listening on" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        src = tmp_path / "file.bin"
        src.write_bytes(os.urandom(5_000_000))
        r = subprocess.run(in_ns(ns, "-m", "gannet", "send", str(src), f"{SERVER}:{PORT + 1}", "--wire", "tcp",
                                 "--carrier", "tun", "--tun-address", CLIENT),
                           capture_output=True, text=True, timeout=60, env=ENV)
        assert r.returncode == 0, r.stderr
        assert proc.wait(30) == 0, log.read_text()
        assert (out / "file.bin").read_bytes() == src.read_bytes()
    finally:
        stop(proc)
