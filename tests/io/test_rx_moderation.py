"""Receive moderation (Config.rx_moderation; io/datapath.py's rx_moderate;
docs/design.md, "Receive moderation"), counted, not timed.

After RX_SMALL_READS reads in a row that each found one or two datagrams
of SPLIT_FROM bytes or more, the endpoint stops watching its socket and
reads again when the pause ends (the loop's timer, or a driving thread's
poll timeout); it pauses again while each such read finds RX_KEEP
datagrams or more, and gives the socket back to the reader when one finds
fewer, needing twice as many small reads before the next pause. The pass
after each read runs as before: what the delayed-ACK rule owes leaves at
once, during the pause. IoStats counts pauses (rx_pauses) and the reads
at their ends that found a batch (rx_batches).

The datagrams of the first tests are a plain UDP socket's (junk to the
core, dropped and counted), sent by the test on the loop that runs the
endpoint: while the test sends without awaiting, neither the reader nor
the pause's timer can run, so which read finds what is fixed.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
import time

import pytest

import gannet
from gannet.config import Config
from gannet.io import datapath
from gannet.io.endpoint import AioEndpoint, make_udp_socket

from gannet_io_helpers import pattern

pytestmark = pytest.mark.timeout(60)

LARGE = datapath.SPLIT_FROM + 1000  # a datagram that counts for moderation
# Long pauses: the tests look at the endpoint while it is paused, so the
# timer must not end a pause before they look, however loaded the machine.
LONG = 100_000  # microseconds (Config.rx_moderation's largest)


def run(coro, timeout=40):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def _until(cond, what: str, limit: float = 20.0) -> None:
    """Let the loop run until `cond()` (counted progress, bounded in time)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.0005)


class _Junk:
    """An endpoint on this loop and a plain UDP socket sending it datagrams."""

    def __init__(self, delay_us: int, insecure: bool = True) -> None:
        loop = asyncio.get_running_loop()
        sock = make_udp_socket(socket.AF_INET, ("127.0.0.1", 0))
        self.aep = AioEndpoint(sock, Config(rx_moderation=delay_us, insecure=insecure), loop)
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addr = sock.getsockname()

    def send(self, n: int, size: int = LARGE) -> None:
        for k in range(n):
            self.tx.sendto(bytes([0x7F]) * size, self.addr)

    async def one_read(self, size: int = LARGE) -> None:
        """One datagram, read on its own by the loop's reader."""
        st = self.aep.io_stats
        before = st.datagrams_received
        self.send(1, size)
        await _until(lambda: st.datagrams_received > before, "the read")

    def close(self) -> None:
        self.aep.close()
        self.tx.close()


@pytest.mark.parametrize("insecure", [True, False])
def test_small_reads_of_large_datagrams_pause_the_reader_and_batches_keep_it_paused(insecure):
    async def main():
        j = _Junk(LONG, insecure)
        st, aep = j.aep.io_stats, j.aep
        try:
            for _ in range(datapath.RX_SMALL_READS - 1):
                await j.one_read()
            assert st.rx_pauses == 0 and not aep._rx_paused
            await j.one_read()
            assert st.rx_pauses == 1 and aep._rx_paused
            # Paused: what arrives now waits for the pause's end, read as one batch.
            j.send(datapath.RX_KEEP + 2)
            reads = st.recv_calls
            await _until(lambda: st.rx_batches == 1, "the pause's end")
            assert st.datagrams_received == datapath.RX_SMALL_READS + datapath.RX_KEEP + 2
            assert st.recv_calls == reads + datapath.RX_KEEP + 2
            assert aep._rx_paused  # a batch: paused again
            # The stream stops: the read at the next pause's end finds one
            # datagram, fewer than RX_KEEP, and the reader has the socket again.
            j.send(1)
            await _until(lambda: not aep._rx_paused, "the reader back")
            assert st.rx_pauses == 1 and st.rx_batches == 1
            assert aep._rx_need == 2 * datapath.RX_SMALL_READS
            # ... and the next pause needs twice as many small reads.
            for _ in range(2 * datapath.RX_SMALL_READS - 1):
                await j.one_read()
            assert st.rx_pauses == 1 and not aep._rx_paused
            await j.one_read()
            assert st.rx_pauses == 2 and aep._rx_paused
            # The core dropped every one of them and counted it (junk to it).
            assert aep.stats.malformed_dropped > 0
        finally:
            j.close()

    run(main())


def test_small_datagrams_and_batches_never_pause():
    async def main():
        j = _Junk(LONG)
        st = j.aep.io_stats
        try:
            for _ in range(4 * datapath.RX_SMALL_READS):
                await j.one_read(size=datapath.SPLIT_FROM - 100)  # below SPLIT_FROM
            assert st.rx_pauses == 0
            for _ in range(4 * datapath.RX_SMALL_READS):  # three large ones a read
                before = st.datagrams_received
                j.send(datapath.RX_FEW + 1)
                await _until(lambda: st.datagrams_received >= before + datapath.RX_FEW + 1, "the reads")
            assert st.rx_pauses == 0
        finally:
            j.close()

    run(main())


def test_off_when_zero():
    async def main():
        j = _Junk(0)
        try:
            for _ in range(4 * datapath.RX_SMALL_READS):
                await j.one_read()
            assert j.aep.io_stats.rx_pauses == 0 and not j.aep._rx_paused
        finally:
            j.close()

    run(main())


def test_a_closed_endpoint_cancels_its_pause():
    async def main():
        j = _Junk(LONG)
        try:
            for _ in range(datapath.RX_SMALL_READS):
                await j.one_read()
            assert j.aep._rx_paused and j.aep._rx_handle is not None
        finally:
            j.close()
        assert j.aep._rx_handle is None

    run(main())


def test_config_bounds():
    Config(rx_moderation=0)
    Config(rx_moderation=100_000)
    for bad in (-1, 100_001):
        with pytest.raises(ValueError):
            Config(rx_moderation=bad)


# ------------------------------------------------ a connection's ACKs kept
def test_the_acks_owed_leave_while_the_receiver_is_paused():
    """Each write is two large segments: the delayed-ACK rule acknowledges
    them at once, in the pass after the read that found them, also the read
    that begins a pause: the sender has all of its data acknowledged while
    the receiver is still paused (a pause of 100 ms)."""
    size = 60_000
    fields = dict(insecure=True, pmtud=False, max_datagram_size=size + 100, rx_moderation=LONG)

    async def main():
        received = bytearray()
        server_w = []

        async def sink(reader, writer):
            server_w.append(writer)
            while chunk := await reader.read(1 << 20):
                received.extend(chunk)
            writer.close()

        server = await gannet.start_server(sink, "127.0.0.1", 0, **fields)
        try:
            reader, writer = await gannet.open_connection(*server.addresses[0], **fields)
            conn = writer.get_extra_info("connection")
            snd = conn.snd
            writer.write(b"x")  # (the server's connection, and its endpoint)
            await _until(lambda: server_w and len(received) == 1, "the first byte")
            srv = server_w[0].get_extra_info("endpoint")
            pair = 2 * conn.mss  # two full-sized segments
            data = b"x" + pattern(pair * 3 * datapath.RX_SMALL_READS, seed=3)
            off = 1
            while srv.io_stats.rx_pauses == 0:
                assert off < len(data), "no pause after as many small reads as it takes"
                writer.write(data[off:off + pair])
                off += pair
                await writer.drain()
                await _until(lambda: snd.snd_una == snd.snd_nxt, "the ACK of the write")
            # The pause's read was acknowledged at once: nothing in flight,
            # with the receiver still paused.
            assert srv._rx_paused
            assert snd.snd_una == snd.snd_nxt and len(received) == off
            writer.write(data[off:])
            writer.write_eof()
            await _until(lambda: len(received) == len(data), "the rest")
            assert hashlib.sha256(received).digest() == hashlib.sha256(data).digest()
            writer.close()
            await writer.wait_closed()
        finally:
            server.close()
            await server.wait_closed()

    run(main())


# ---------------------------------------------- a thread driving the socket
def test_a_blocking_socket_receiver_moderates_in_its_poll():
    """A blocking Socket whose calling thread drives the endpoint (the
    datagrams read in its poll, not the loop's): it pauses the same way,
    leaving the socket out of its poll until the pause's end, and receives
    the whole stream."""
    size = 60_000
    fields = dict(insecure=True, pmtud=False, max_datagram_size=size + 100, rx_moderation=2000)
    total = 2 * size * 64
    data = pattern(total, seed=5)
    result = {}

    ls = gannet.Socket(config=Config(**fields))
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    port = ls.getsockname()[1]

    def serve():
        conn, _ = ls.accept()
        got = bytearray()
        while chunk := conn.recv(1 << 20):
            got.extend(chunk)
        result["got"] = bytes(got)
        result["io"] = conn.io_stats
        result["rx_need"] = conn._aep._rx_need
        conn.close()

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    c = gannet.Socket(config=Config(**fields))
    c.settimeout(30)
    c.connect(("127.0.0.1", port))
    snd = c.connection.snd
    pair = 2 * c.connection.mss  # two full-sized segments
    for off in range(0, total, pair):
        c.sendall(data[off:off + pair])
        # (each pair acknowledged before the next: the receiver reads them
        # two at a time, small reads)
        end = time.monotonic() + 20
        while snd.snd_una != snd.snd_nxt or snd.unsent_and_unacked():
            assert time.monotonic() < end, "no ACK"
            time.sleep(0.0005)
    c.close()
    th.join(30)
    ls.close()
    assert not th.is_alive()
    assert result["got"] == data
    io = result["io"]
    assert io.caller_passes > 0  # the receiving thread drove it
    assert io.rx_pauses >= 1
