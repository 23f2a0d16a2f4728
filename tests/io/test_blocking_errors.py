"""The blocking Socket's standard errors from real peers on loopback:
ConnectionResetError when the peer aborts, TimeoutError when it is silent."""

import asyncio
import socket
import threading
import time

import pytest

import gannet

pytestmark = pytest.mark.timeout(30)


def aborting_server():
    """An asyncio Gannet server, in its own thread, that reads one byte and aborts."""
    ready, stop = threading.Event(), threading.Event()
    box = {}

    async def aborting(reader, writer):
        await reader.readexactly(1)
        writer.abort()

    async def main():
        async with await gannet.start_server(aborting, "127.0.0.1", 0) as server:
            box["addr"] = server.addresses[0]
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.02)

    t = threading.Thread(target=asyncio.run, args=(main(),))
    t.start()
    assert ready.wait(10)
    return box["addr"], stop, t


def test_peer_abort_is_connection_reset_error():
    addr, stop, t = aborting_server()
    try:
        with gannet.Socket() as s:
            s.settimeout(10)
            s.connect(addr)
            s.sendall(b"!")
            with pytest.raises(ConnectionResetError):
                s.recv(10)
            with pytest.raises((ConnectionResetError, BrokenPipeError)):
                s.sendall(b"more")
    finally:
        stop.set()
        t.join(10)


def test_connect_to_a_silent_peer_times_out_after_the_retries():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        with gannet.Socket(timeout=0.1, max_retries=2) as s:
            t0 = time.monotonic()
            with pytest.raises(TimeoutError):
                s.connect(silent.getsockname())
            # SYN at 0, 0.1 and 0.3 s; the third timeout at 0.7 s gives up.
            assert 0.5 < time.monotonic() - t0 < 5
        assert len(silent.recvfrom(2048)[0]) > 0  # the SYNs did go out


def test_a_peer_that_vanishes_mid_connection_ends_in_timeout_error():
    # A relay between client and server that stops forwarding: the client's
    # retransmissions go unanswered until max_retries ends the connection.
    fast_failing = dict(min_rto=0.05, max_rto=0.2, max_retries=3, tlp=False)
    with gannet.Socket(**fast_failing) as ls:
        ls.bind(("127.0.0.1", 0))
        ls.listen()
        relay = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        relay.bind(("127.0.0.1", 0))
        relay.settimeout(0.05)
        forwarding, done = threading.Event(), threading.Event()
        forwarding.set()

        def run_relay():
            client_addr = None
            while not done.is_set():
                try:
                    data, src = relay.recvfrom(65536)
                except TimeoutError:
                    continue
                if not forwarding.is_set():
                    continue
                if src == ls.getsockname():
                    relay.sendto(data, client_addr)
                else:
                    client_addr = src
                    relay.sendto(data, ls.getsockname())

        rt = threading.Thread(target=run_relay)
        rt.start()
        try:
            with gannet.Socket(**fast_failing) as s:
                s.settimeout(10)
                s.connect(relay.getsockname())
                conn, _ = ls.accept()
                s.sendall(b"hello")
                assert conn.recv(5) == b"hello"
                forwarding.clear()  # the path dies
                s.sendall(b"into the void")
                with pytest.raises(TimeoutError):
                    s.recv(10)
                conn.close()
        finally:
            done.set()
            rt.join(5)
            relay.close()
