"""gannet.open_connection / gannet.start_server over loopback."""

import asyncio
import hashlib
import socket

import pytest

import gannet
from gannet.core.connection import Connection
from gannet.wire.protected import OVERHEAD

from gannet_io_helpers import free_udp_port, needs_ipv6, pattern

pytestmark = pytest.mark.timeout(30)


def run(coro, timeout=25):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def echo(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()
        await writer.wait_closed()


def test_echo_round_trip_and_extra_info():
    async def main():
        async with await gannet.start_server(echo, "127.0.0.1", 0) as server:
            host, port = server.addresses[0]
            assert server.sockets[0].getsockname() == (host, port)
            reader, writer = await gannet.open_connection(host, port)
            assert writer.get_extra_info("peername") == (host, port)
            assert writer.get_extra_info("sockname")[1] != 0
            assert writer.get_extra_info("connection") is writer.connection
            writer.write(b"line one\nline two\n")
            await writer.drain()
            assert await reader.readline() == b"line one\n"
            assert await reader.readuntil(b"two") == b"line two"
            assert await reader.readexactly(1) == b"\n"
            writer.write_eof()
            assert await reader.read() == b""
            assert reader.at_eof()
            writer.close()
            await writer.wait_closed()
            assert server.stats.datagrams_received > 0

    run(main())


def test_write_eof_half_close_and_incomplete_read():
    async def handler(reader, writer):
        data = await reader.read()  # until the client's FIN
        writer.write(b"%d" % len(data))
        writer.close()

    async def main():
        server = await gannet.start_server(handler, "127.0.0.1", 0)
        reader, writer = await gannet.open_connection(*server.addresses[0])
        assert writer.can_write_eof()
        writer.writelines([b"a" * 1000, b"b" * 2345])
        writer.write_eof()
        with pytest.raises(BrokenPipeError):
            writer.write(b"late")
        with pytest.raises(asyncio.IncompleteReadError) as e:
            await reader.readexactly(10)
        assert e.value.partial == b"3345"
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    run(main())


def test_iteration_over_lines():
    async def handler(reader, writer):
        writer.write(b"1\n2\n3\n")
        writer.close()

    async def main():
        async with await gannet.start_server(handler, "127.0.0.1", 0) as server:
            reader, writer = await gannet.open_connection(*server.addresses[0])
            lines = [line async for line in reader]
            assert lines == [b"1\n", b"2\n", b"3\n"]
            writer.close()

    run(main())


def test_fifty_concurrent_clients():
    async def client(port, i):
        reader, writer = await gannet.open_connection("127.0.0.1", port)
        payload = pattern(20_000 + i, i)
        writer.write(payload)
        await writer.drain()
        got = await reader.readexactly(len(payload))
        writer.close()
        await writer.wait_closed()
        return got == payload

    async def main():
        async with await gannet.start_server(echo, "127.0.0.1", 0) as server:
            port = server.addresses[0][1]
            results = await asyncio.gather(*(client(port, i) for i in range(50)))
            assert all(results)

    run(main())


def test_drain_backpressure_bounds_the_writer_buffer():
    total = 20 << 20
    received = hashlib.sha256()

    async def slow_reader(reader, writer):
        n = 0
        while data := await reader.read(256 * 1024):
            received.update(data)
            n += len(data)
            await asyncio.sleep(0.002)
        writer.write(b"%d" % n)
        writer.close()

    async def main():
        async with await gannet.start_server(slow_reader, "127.0.0.1", 0) as server:
            reader, writer = await gannet.open_connection(*server.addresses[0])
            conn = writer.connection
            cfg = conn.config
            sent = hashlib.sha256()
            worst = 0
            chunk = pattern(1 << 20, 9)
            for _ in range(total // len(chunk)):
                writer.write(chunk)
                sent.update(chunk)
                await writer.drain()
                buffered = writer.get_write_buffer_size() + cfg.send_buffer_size - conn.send_space
                worst = max(worst, buffered)
            writer.write_eof()
            assert await reader.read() == b"%d" % total
            # Gannet's send buffer plus at most one write beyond the high-water mark.
            assert worst <= cfg.send_buffer_size + (1 << 20) + 64 * 1024
            assert sent.digest() == received.digest()
            writer.close()

    run(main())


def test_refused_and_reset():
    async def main():
        with pytest.raises(ConnectionRefusedError):
            await asyncio.wait_for(gannet.open_connection("127.0.0.1", free_udp_port()), 3)

        async def aborting(reader, writer):
            await reader.readexactly(1)
            writer.abort()

        async with await gannet.start_server(aborting, "127.0.0.1", 0) as server:
            reader, writer = await gannet.open_connection(*server.addresses[0])
            writer.write(b"!")
            with pytest.raises(ConnectionResetError):
                await reader.read()
            with pytest.raises(ConnectionResetError):
                writer.write(b"x")

    run(main())


def test_config_overrides_and_unknown_settings():
    async def main():
        async with await gannet.start_server(echo, "127.0.0.1", 0, mss=600) as server:
            reader, writer = await gannet.open_connection(*server.addresses[0], mtu=700)
            # The connection's datagrams travel sealed: 700 bytes on the
            # wire, the envelope's OVERHEAD of them outside the connection.
            assert writer.connection.config.max_datagram_size + OVERHEAD == 700
            writer.write(b"z" * 5000)
            assert await reader.readexactly(5000) == b"z" * 5000
            writer.close()
        with pytest.raises(TypeError):
            await gannet.open_connection("127.0.0.1", 1, bogus=1)

    run(main())


def test_a_server_listens_with_the_backlog_it_is_given_or_its_config_s():
    # (the keyword's default, 128, once overrode the config's)
    async def main():
        for kw, want in (({"config": gannet.Config(backlog=4)}, 4), ({"backlog": 5}, 5),
                         ({"backlog": 6, "config": gannet.Config(backlog=4)}, 6), ({}, 128)):
            async with await gannet.start_server(echo, "127.0.0.1", 0, **kw) as server:
                assert server.endpoint.ep._backlog == want, kw

    run(main())


def test_serve_forever_is_cancellable():
    async def main():
        server = await gannet.start_server(echo, "127.0.0.1", 0)
        task = asyncio.create_task(server.serve_forever())
        await asyncio.sleep(0.05)
        assert server.is_serving()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not server.is_serving()
        assert server.endpoint.closed

    run(main())


@needs_ipv6
def test_ipv6():
    async def main():
        async with await gannet.start_server(echo, "::1", 0) as server:
            assert server.sockets[0].family == socket.AF_INET6
            port = server.addresses[0][1]
            reader, writer = await gannet.open_connection("::1", port)
            writer.write(b"six")
            assert await reader.readexactly(3) == b"six"
            writer.close()
            await writer.wait_closed()

    run(main())


@pytest.mark.parametrize("use_uvloop", [False, True], ids=["asyncio", "uvloop"])
def test_a_request_and_its_reply_cost_no_retransmission(use_uvloop):
    """A lone reply sits unacknowledged for the peer's delayed-ACK time; the
    tail-loss probe must wait longer than that, or every request-response
    exchange resends its reply (and draws a duplicate ACK)."""
    uvloop = pytest.importorskip("uvloop") if use_uvloop else None

    async def main():
        server = await gannet.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await gannet.open_connection("127.0.0.1", port)
        for i in range(3):
            msg = b"request %d\n" % i
            writer.write(msg)
            assert await reader.readexactly(len(msg)) == msg
            await asyncio.sleep(0.08)  # past the delayed ACK and any probe timer
        stats = [writer.stats] + [c.stats for c in server.endpoint.ep.connections]
        writer.close()
        server.close()
        return stats

    if uvloop:
        stats = uvloop.run(asyncio.wait_for(main(), 25))
    else:
        stats = run(main())
    assert len(stats) == 2
    assert [s.retransmits for s in stats] == [0, 0]
    assert [s.duplicate_segments for s in stats] == [0, 0]


@pytest.mark.parametrize("use_uvloop", [False, True], ids=["asyncio", "uvloop"])
def test_the_first_write_carries_the_handshake_ack(use_uvloop):
    """A client that writes as soon as it is connected sends SYN and then
    its request, which carries the handshake's ACK: the server receives two
    datagrams for a connection and its first request, not three."""
    uvloop = pytest.importorskip("uvloop") if use_uvloop else None

    async def main():
        server = await gannet.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await gannet.open_connection("127.0.0.1", port)
        writer.write(b"request\n")
        assert await reader.readexactly(8) == b"request\n"
        # The client's delayed ACK of the reply is still 25 ms away.
        received = server.stats.datagrams_received
        sent = writer.stats.segments_sent
        writer.close()
        server.close()
        return received, sent

    received, sent = uvloop.run(asyncio.wait_for(main(), 25)) if uvloop else run(main())
    assert received == 2  # SYN, request + ACK
    assert sent == 2


@pytest.mark.pure  # (patches Connection.release_ack, which the compiled adapter calls natively)
@pytest.mark.parametrize("use_uvloop", [False, True], ids=["asyncio", "uvloop"])
def test_a_held_handshake_ack_goes_alone_when_the_client_only_reads(use_uvloop, monkeypatch):
    """Server speaks first: the client writes nothing, so the held ACK is
    released one loop turn after the handshake, not at its 200 ms timer."""
    uvloop = pytest.importorskip("uvloop") if use_uvloop else None

    async def greet(reader, writer):
        writer.write(b"hello\n")
        await reader.read()
        writer.close()

    released = []  # what release_ack answered, per call (True: a held ACK goes now)
    real_release = Connection.release_ack

    def counting_release(self):
        held = self.deadline("delack") is not None
        result = real_release(self)
        released.append((held, result))
        return result

    async def main():
        server = await gannet.start_server(greet, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await gannet.open_connection("127.0.0.1", port)
        assert await reader.readexactly(6) == b"hello\n"
        writer.close()
        await writer.wait_closed()
        server.close()
        return writer.stats.retransmits

    monkeypatch.setattr(Connection, "release_ack", counting_release)
    retransmits = uvloop.run(asyncio.wait_for(main(), 25)) if uvloop else run(main())
    # The adapter released the held ACK once, while it was still held (its
    # timer, min(RTO, 0.5 s), had not fired): the ACK went a loop turn after
    # the handshake, and the server's greeting could follow at once.
    assert released == [(True, True)]
    assert retransmits == 0
