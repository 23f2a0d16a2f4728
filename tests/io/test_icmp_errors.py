"""An ICMP error on the endpoint's socket must not stop it from reading.

IP_RECVERR queues an error for every port unreachable (a peer that exited
before our last datagram reached it). The poll then reports POLLERR, and
libuv - under uvloop - stops polling the descriptor for good unless the
reader is registered again: an echo server stopped answering after a few
clients had come and gone."""

import asyncio
import socket
import time

import pytest

from gannet.config import Config
from gannet.io.endpoint import AioEndpoint, make_udp_socket

uvloop = pytest.importorskip("uvloop")


def closed_port() -> tuple[str, int]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    addr = s.getsockname()
    s.close()
    return addr


@pytest.mark.parametrize("loop_factory", [uvloop.new_event_loop, asyncio.new_event_loop], ids=["uvloop", "asyncio"])
@pytest.mark.parametrize("how", ["reader-sees-it", "send-sees-it"])
def test_the_endpoint_keeps_reading_after_port_unreachable(loop_factory, how):
    loop = loop_factory()
    aep = AioEndpoint(make_udp_socket(socket.AF_INET, ("127.0.0.1", 0)), Config(), loop)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        dead = closed_port()

        async def scenario():
            aep.sock.sendto(b"x" * 40, dead)  # answered by ICMP port unreachable
            if how == "send-sees-it":
                time.sleep(0.05)  # the error is pending before the loop polls
                aep._transmit_plain_run([(b"y" * 40, dead)], 0, 1)  # the send reports it
            await asyncio.sleep(0.1)
            for _ in range(3):
                peer.sendto(b"not a gannet datagram", aep.local_address)
                await asyncio.sleep(0.05)

        loop.run_until_complete(scenario())
        # Junk is counted as malformed: proof that it was read at all.
        assert aep.ep.stats.malformed_dropped == 3
        assert aep.icmp_errors >= 1
    finally:
        peer.close()
        aep.close()
        loop.close()


def rx_queue(port: int) -> int:
    """Bytes waiting in the receive queue of the UDP socket bound to `port`."""
    with open("/proc/net/udp") as f:
        for line in f.read().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port:
                return int(fields[4].split(":")[1], 16)
    raise AssertionError(f"no UDP socket on port {port}")


@pytest.mark.parametrize("loop_factory", [uvloop.new_event_loop, asyncio.new_event_loop], ids=["uvloop", "asyncio"])
def test_the_endpoint_keeps_reading_after_an_error_the_full_queue_could_not_hold(loop_factory):
    """Issue 12 finding 3 (deaf after a flood): a port unreachable that
    arrives while the receive buffer is full cannot be queued (the error
    queue is charged to the same buffer), yet it still sets the socket's
    error, so the poll reports POLLERR and libuv stops polling. The error
    queue is then empty: the socket must be registered again all the same."""
    loop = loop_factory()
    sock = make_udp_socket(socket.AF_INET, ("127.0.0.1", 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills after a few datagrams
    aep = AioEndpoint(sock, Config(), loop)
    port = aep.local_address[1]
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _ in range(64):  # the loop is not running: nothing reads them
            peer.sendto(b"not a gannet datagram" * 4, aep.local_address)
        queued = rx_queue(port)
        assert queued > 0
        aep.sock.sendto(b"x" * 40, closed_port())  # its port unreachable finds no room
        time.sleep(0.05)
        loop.run_until_complete(asyncio.sleep(0.2))
        read = aep.ep.stats.malformed_dropped
        assert read > 0, "nothing was read after the error"
        for _ in range(3):
            peer.sendto(b"late junk", aep.local_address)
            loop.run_until_complete(asyncio.sleep(0.05))
        assert aep.ep.stats.malformed_dropped == read + 3
        assert rx_queue(port) == 0
    finally:
        peer.close()
        aep.close()
        loop.close()


@pytest.mark.parametrize("gso", [True, False], ids=["gso", "plain"])
@pytest.mark.parametrize("count", [1, 3])
def test_a_send_that_reports_an_earlier_datagrams_icmp_error_is_made_again(gso, count):
    """The kernel reports a pending port unreachable (for an earlier datagram,
    to another address) on the next send, and does not make that send. Under
    a flood of forged SYNs the listener's answers to closed ports keep such
    errors coming, and a real client's SYN,ACK was lost to one (an RTO, 1 s
    late). The adapter sends it again."""
    loop = asyncio.new_event_loop()
    aep = AioEndpoint(make_udp_socket(socket.AF_INET, ("127.0.0.1", 0)), Config(), loop, gso=gso)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(1.0)
    try:
        aep.sock.sendto(b"x" * 40, closed_port())  # its port unreachable is now pending
        time.sleep(0.05)
        aep._send([(b"for a real peer %d" % i, peer.getsockname()) for i in range(count)])
        got = [peer.recv(100) for _ in range(count)]
        assert got == [b"for a real peer %d" % i for i in range(count)]
        assert aep.io_stats.send_errors == 0
    finally:
        peer.close()
        aep.close()
        loop.close()
