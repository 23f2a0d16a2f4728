"""The raw-IP carrier: its BPF port filter, its firewall rule (installed,
removed on exit, and cleaned up after a killed owner), and Gannet streams
over it talking to kernel sockets on loopback."""

import asyncio
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from gannet.io import firewall
from kernelpeers import kernel_sink

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(os.geteuid() != 0, reason="raw sockets and firewall rules need root"),
]

HOLDER = r"""
import sys, time
from gannet.io.rawtcp import RawTcpSocket
s = RawTcpSocket("127.0.0.1", 0)
print(s.port, flush=True)
time.sleep(60)
"""


def _start_holder():
    proc = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    return proc, port


def _owned(pid):
    return [(p, port) for p, port, _ in firewall.rules() if p == pid]


def test_rule_is_there_while_running_and_gone_after_sigterm():
    proc, port = _start_holder()
    try:
        assert _owned(proc.pid) == [(proc.pid, port)]
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _owned(proc.pid) == []


def test_a_killed_owners_rule_is_removed_by_the_next_start():
    proc, port = _start_holder()
    proc.kill()  # SIGKILL: no chance to clean up
    proc.wait(20)
    assert _owned(proc.pid) == [(proc.pid, port)]
    guard = firewall.RstGuard(port)
    guard.install()  # sweeps first
    try:
        assert _owned(proc.pid) == []
        assert _owned(os.getpid()) == [(os.getpid(), port)]
    finally:
        guard.remove()
    assert _owned(os.getpid()) == []


def test_the_rule_drops_kernel_rsts_for_our_port_only():
    """A SYN from a kernel client to the Gannet port gets no RST while the
    rule stands (the connect times out rather than being refused); our own
    RSTs, marked, still leave."""
    from gannet.io.rawtcp import RawTcpSocket

    raw = RawTcpSocket("127.0.0.1", 0)
    try:
        c = socket.socket()
        c.settimeout(0.5)
        with c, pytest.raises(TimeoutError):
            c.connect(("127.0.0.1", raw.port))
        # The BPF filter let the SYN reach the raw socket, and only it.
        time.sleep(0.05)
        seen = []
        while True:
            try:
                seen.append(raw.recv(70000))
            except BlockingIOError:
                break
        assert seen and all(int.from_bytes(p[22:24], "big") == raw.port for p in seen)
        # Other ports keep their RSTs while the rule stands.
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
        probe.close()
        c = socket.socket()
        c.settimeout(5)
        with c, pytest.raises(ConnectionRefusedError):
            c.connect(("127.0.0.1", closed))
    finally:
        raw.close()
    c = socket.socket()
    c.settimeout(5)
    with c, pytest.raises(ConnectionRefusedError):
        c.connect(("127.0.0.1", raw.port))  # rule gone: the kernel answers again


def test_gannet_streams_on_tcp_with_a_kernel_server_both_directions():
    import gannet

    data = os.urandom(3_000_000)

    async def main(port):
        r, w = await gannet.open_connection("127.0.0.1", port, wire="tcp")
        w.write(data)
        await w.drain()
        w.write_eof()
        back = await asyncio.wait_for(r.read(), 30)
        w.close()
        await w.wait_closed()
        return back

    with kernel_sink(lambda got: data[::-1]) as (port, got):
        back = asyncio.run(main(port))
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert back == data[::-1]


def test_the_nft_backend_installs_sweeps_and_removes(monkeypatch):
    """Where iptables is missing the rule goes in through nft: the same
    life cycle (install, listed with its owner, removed), and a kernel RST
    from the port is dropped while it stands."""
    import shutil

    if shutil.which("nft") is None:
        pytest.skip("needs nft")
    monkeypatch.setattr(firewall, "backend", lambda: "nft")
    had_table = subprocess.run(["nft", "list", "table", "ip", firewall.NFT_TABLE],
                               capture_output=True).returncode == 0
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]  # reserved, not listening: the kernel would RST
    guard = firewall.RstGuard(port)
    try:
        guard.install()
        assert (os.getpid(), port) in [(p, q) for p, q, _ in firewall.rules()]
        # A kernel client's SYN to the port: its RST is dropped, so the
        # connect times out instead of being refused.
        c = socket.socket()
        c.settimeout(0.5)
        with c, pytest.raises(TimeoutError):
            c.connect(("127.0.0.1", port))
    finally:
        guard.remove()
        probe.close()
    assert (os.getpid(), port) not in [(p, q) for p, q, _ in firewall.rules()]
    if not had_table and not firewall.rules():
        subprocess.run(["nft", "delete", "table", "ip", firewall.NFT_TABLE], capture_output=True)
