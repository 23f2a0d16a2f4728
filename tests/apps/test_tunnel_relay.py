"""gannet.apps.tunnel in one process: TCP app -> tunnel client -> Gannet -> tunnel server -> TCP target."""

import asyncio
import hashlib
import os
import random
import socket

import pytest

from gannet.apps.tunnel import parse_address, start_tunnel_client, start_tunnel_server

HOST = "127.0.0.1"
TUNNEL_SOURCE = os.path.join("gannet", "apps", "tunnel.py")
STREAMS_SOURCE = os.path.join("gannet", "io", "aio.py")


def run(coro, timeout=30.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def echo_target():
    """A TCP echo server that echoes until EOF, then half-closes."""

    async def handle(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.write_eof()
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, HOST, 0)
    return server, server.sockets[0].getsockname()[1]


def free_tcp_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


MODES = pytest.mark.parametrize("mode", ["mux", "stream"])


class Tunnel:
    def __init__(self, target_port, mode="mux", **kw):
        self.target_port = target_port
        self.mode = mode
        self.kw = kw

    async def __aenter__(self):
        self.server = await start_tunnel_server((HOST, 0), (HOST, self.target_port), **self.kw)
        self.client = await start_tunnel_client((HOST, 0), (HOST, self.server.address[1]),
                                                mode=self.mode, **self.kw)
        self.port = self.client.address[1]
        return self

    async def __aexit__(self, *exc):
        await self.client.close()
        await self.server.close()


async def wait_until(pred, timeout=5.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


def test_parse_address():
    assert parse_address(":7000") == ("", 7000)
    assert parse_address("7000") == ("", 7000)
    assert parse_address("127.0.0.1:80") == ("127.0.0.1", 80)
    assert parse_address("[::1]:80") == ("::1", 80)
    assert parse_address("example.com:0") == ("example.com", 0)
    for bad in ("::1:80", "host:port", "host:70000", ""):
        with pytest.raises(ValueError):
            parse_address(bad)


@MODES
def test_echo_with_half_close(mode):
    async def main():
        target, tport = await echo_target()
        async with Tunnel(tport, mode) as t:
            payload = os.urandom(3_000_000)
            reader, writer = await asyncio.open_connection(HOST, t.port)

            async def send():
                writer.write(payload)
                await writer.drain()
                writer.write_eof()  # shut down writing; the reply must still come back

            sender = asyncio.create_task(send())
            got = await reader.read(-1)  # until the tunnel propagates the target's EOF
            await sender
            assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
            writer.close()
            await writer.wait_closed()
            await wait_until(lambda: t.client.results and t.server.results)
            c, s = t.client.results[0], t.server.results[0]
            assert (c.sent, c.received, c.reason) == (len(payload), len(payload), "closed")
            assert (s.sent, s.received, s.reason) == (len(payload), len(payload), "closed")
        target.close()

    run(main())


@MODES
def test_half_close_then_late_reply(mode):
    """The target answers only after it saw EOF: EOF must cross the tunnel first."""

    async def handle(reader, writer):
        data = await reader.read(-1)
        await asyncio.sleep(0.2)
        writer.write(b"got %d bytes" % len(data))
        await writer.drain()
        writer.close()

    async def main():
        target = await asyncio.start_server(handle, HOST, 0)
        async with Tunnel(target.sockets[0].getsockname()[1], mode) as t:
            reader, writer = await asyncio.open_connection(HOST, t.port)
            writer.write(b"x" * 100_000)
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(-1), 10) == b"got 100000 bytes"
            writer.close()
        target.close()

    run(main())


@MODES
def test_target_refuses(mode):
    async def main():
        dead_port = free_tcp_port()  # nothing listens there
        async with Tunnel(dead_port, mode) as t:
            loop = asyncio.get_running_loop()
            start = loop.time()
            reader, writer = await asyncio.open_connection(HOST, t.port)
            writer.write(b"hello")
            try:
                data = await asyncio.wait_for(reader.read(100), 5)
            except ConnectionResetError:
                data = b""
            assert data == b""
            assert loop.time() - start < 3
            writer.close()
            await wait_until(lambda: t.server.results and t.client.results)
            assert "target refused" in t.server.results[0].reason
            assert not t.client.results[0].clean
            assert t.client.active == 0 and t.server.active == 0

    run(main())


@MODES
def test_tunnel_server_unreachable(mode):
    """No tunnel server at all: the TCP connection is reset promptly (ICMP refusal)."""

    async def main():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((HOST, 0))
            dead_udp = s.getsockname()[1]
        client = await start_tunnel_client((HOST, 0), (HOST, dead_udp), mode=mode, connect_timeout=5)
        try:
            reader, writer = await asyncio.open_connection(HOST, client.address[1])
            try:
                data = await asyncio.wait_for(reader.read(100), 8)
            except ConnectionResetError:
                data = b""
            assert data == b""
            writer.close()
            await wait_until(lambda: client.results)
            assert "tunnel" in client.results[0].reason
        finally:
            await client.close()

    run(main())


@MODES
def test_reset_propagates_to_target(mode):
    """The application resets its TCP connection: the target's connection is reset too."""
    seen = []

    async def handle(reader, writer):
        try:
            writer.write(b"ready")
            await writer.drain()
            while await reader.read(65536):
                pass
            seen.append("eof")
        except ConnectionError as exc:
            seen.append(type(exc).__name__)
        finally:
            writer.close()

    async def main():
        target = await asyncio.start_server(handle, HOST, 0)
        async with Tunnel(target.sockets[0].getsockname()[1], mode) as t:
            reader, writer = await asyncio.open_connection(HOST, t.port)
            assert await reader.readexactly(5) == b"ready"
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            writer.transport.abort()
            await wait_until(lambda: seen, 10)
            assert seen == ["ConnectionResetError"]
            await wait_until(lambda: t.client.results and t.server.results)
            assert "client reset" in t.client.results[0].reason
            assert "tunnel reset" in t.server.results[0].reason
        target.close()

    run(main())


@MODES
def test_twenty_concurrent_connections(mode):
    async def main():
        target, tport = await echo_target()
        async with Tunnel(tport, mode) as t:

            async def one(i):
                payload = os.urandom(50_000 + 997 * i)
                reader, writer = await asyncio.open_connection(HOST, t.port)
                writer.write(payload)
                writer.write_eof()
                got = await reader.read(-1)
                writer.close()
                return got == payload

            results = await asyncio.gather(*(one(i) for i in range(20)))
            assert all(results)
            await wait_until(lambda: len(t.client.results) == 20 and len(t.server.results) == 20)
            assert all(r.clean for r in t.client.results + t.server.results)
            assert t.client.total == 20 and t.server.total == 20
        target.close()

    run(main(), timeout=60)


@MODES
def test_target_reset_reaches_application(mode):
    """The target resets: the application's TCP connection is reset (or ended) promptly."""

    async def handle(reader, writer):
        await reader.readexactly(4)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.transport.abort()

    async def main():
        target = await asyncio.start_server(handle, HOST, 0)
        async with Tunnel(target.sockets[0].getsockname()[1], mode) as t:
            reader, writer = await asyncio.open_connection(HOST, t.port)
            writer.write(b"ping")
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(reader.read(100), 5)
            writer.close()
            await wait_until(lambda: t.client.results and t.server.results)
            assert "target reset" in t.server.results[0].reason
            assert "tunnel reset" in t.client.results[0].reason
        target.close()

    run(main())


@MODES
def test_backpressure_bounds_buffering(mode):
    """An application that stops reading stalls the target's writes after a bounded
    amount (TCP buffers + one Gannet window), and then gets every byte."""
    total = 200 * 1024 * 1024
    written = [0]
    block = os.urandom(1024 * 1024)

    async def handle(reader, writer):
        try:
            while written[0] < total:
                writer.write(block)
                await writer.drain()
                written[0] += len(block)
            writer.write_eof()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def main():
        target = await asyncio.start_server(handle, HOST, 0)
        async with Tunnel(target.sockets[0].getsockname()[1], mode) as t:
            reader, writer = await asyncio.open_connection(HOST, t.port, limit=65536)
            await asyncio.sleep(1.5)  # read nothing
            stalled_at = written[0]
            await asyncio.sleep(0.5)
            assert written[0] == stalled_at  # the target is blocked in drain()
            assert stalled_at < 64 * 1024 * 1024
            received = 0
            while chunk := await reader.read(1 << 20):
                received += len(chunk)
            assert received == total
            writer.close()
        target.close()

    run(main(), timeout=60)


def test_requests_are_relayed_without_a_task_or_a_socket_per_message():
    """The relay forwards in the callbacks that deliver the data: 300
    request-response exchanges through the tunnel wake no task of the
    tunnel (a copy loop awaiting read and drain is woken for every chunk,
    each wake-up a call_soon), and the tunnel client's connections share
    one UDP socket."""

    async def main():
        target, port = await echo_target()
        loop = asyncio.get_running_loop()
        async with Tunnel(port, "stream") as t:
            streams = [await asyncio.open_connection(HOST, t.port) for _ in range(3)]
            for r, w in streams:  # each connection relayed once before counting
                w.write(b"hello")
                assert await r.readexactly(5) == b"hello"
            woken = []
            call_soon = loop.call_soon

            def counting_call_soon(callback, *args, **kw):
                task = getattr(callback, "__self__", None)
                if isinstance(task, asyncio.Task):
                    code = getattr(task.get_coro(), "cr_code", None)
                    if code is not None and code.co_filename.endswith(TUNNEL_SOURCE):
                        woken.append(code.co_name)
                return call_soon(callback, *args, **kw)

            loop.call_soon = counting_call_soon
            try:
                for i in range(100):
                    for r, w in streams:
                        msg = b"request %05d\n" % i
                        w.write(msg)
                        assert await r.readexactly(len(msg)) == msg
            finally:
                del loop.call_soon
            assert woken == [], f"tunnel tasks woken {len(woken)} times for 300 messages"
            assert len(t.client.endpoints) == 1
            (aep,) = t.client.endpoints.values()
            assert aep.ep.connection_count == 3
            for _, w in streams:
                w.close()
        target.close()

    run(main())


@pytest.mark.parametrize("mode, datagrams", [("mux", 1), ("stream", 10)])
def test_requests_of_many_connections_in_one_loop_turn_leave_in_one_send(mode, datagrams):
    """Requests that several TCP connections deliver in one loop turn (a
    convoy of clients, as redis-benchmark's) are written to Gannet in one
    pass at the end of the turn: one send call (GSO) carries them all, where
    the first used to leave alone in a pass and a send call of its own. In
    mux mode they are one segment besides (one seal, one trip through the
    core); stream mode sends a datagram per connection."""

    async def main():
        target, port = await echo_target()
        # (ACKs held long enough that none leaves on its own while counting:
        # each rides on the next request)
        async with Tunnel(port, mode, ack_delay=0.4) as t:
            streams = [await asyncio.open_connection(HOST, t.port) for _ in range(10)]
            for r, w in streams:  # each connection relayed once before counting
                w.write(b"hello")
                assert await r.readexactly(5) == b"hello"
            (aep,) = t.client.endpoints.values()
            st = aep.io_stats
            sent, calls = st.datagrams_sent, st.send_calls
            for i, (_, w) in enumerate(streams):  # one loop turn: all ten at once
                w.write(b"request %02d\n" % i)
            for i, (r, _) in enumerate(streams):
                assert await r.readexactly(11) == b"request %02d\n" % i
            assert st.datagrams_sent - sent == datagrams
            assert st.send_calls - calls == 1
            for _, w in streams:
                w.close()
        target.close()

    run(main())


async def lossy_udp_relay(server_port, rng, loss):
    """A UDP relay between the tunnel client's one socket and the tunnel
    server that drops each datagram, either way, with probability `loss`
    (seeded). Returns the port the tunnel client is to send to."""
    loop = asyncio.get_running_loop()

    class Down(asyncio.DatagramProtocol):
        client = None
        dropped = 0

        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            self.client = addr
            if rng.random() >= loss:
                up.transport.sendto(data, (HOST, server_port))
            else:
                self.dropped += 1

    class Up(asyncio.DatagramProtocol):
        dropped = 0

        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            if down.client is not None and rng.random() >= loss:
                down.transport.sendto(data, down.client)
            else:
                self.dropped += 1

    down, up = Down(), Up()
    await loop.create_datagram_endpoint(lambda: down, local_addr=(HOST, 0))
    await loop.create_datagram_endpoint(lambda: up, local_addr=(HOST, 0))
    return down, up


@MODES
def test_convoys_of_requests_arrive_verified_in_order_under_loss(mode):
    """Eight connections write their requests in one loop turn (so they
    leave together, in one pass) through a path that drops a tenth of the
    datagrams both ways: every reply comes back whole and in order, round
    after round, and a larger transfer on each connection too."""
    rng = random.Random(11)

    async def main():
        target, port = await echo_target()
        server = await start_tunnel_server((HOST, 0), (HOST, port))
        down, up = await lossy_udp_relay(server.address[1], rng, 0.1)
        client = await start_tunnel_client((HOST, 0), (HOST, down.transport.get_extra_info("sockname")[1]),
                                           mode=mode)
        try:
            streams = [await asyncio.open_connection(HOST, client.address[1]) for _ in range(8)]
            for rnd in range(15):
                msgs = [b"%d:%d:" % (i, rnd) + bytes([65 + i]) * (50 + 97 * rnd) for i in range(8)]
                for (_, w), m in zip(streams, msgs):
                    w.write(m)
                for (r, _), m in zip(streams, msgs):
                    assert await r.readexactly(len(m)) == m
            bulk = [random.Random(i).randbytes(200_000) for i in range(8)]
            for (_, w), b in zip(streams, bulk):
                w.write(b)
            for (r, _), b in zip(streams, bulk):
                assert await r.readexactly(len(b)) == b
            for r, w in streams:
                w.write_eof()
                assert await r.read() == b""  # the echo's EOF crossed back
                w.close()
            assert down.dropped > 20 and up.dropped > 20  # (the loss was there, both ways)
            # Both halves counted every byte each way, once (the echo sends
            # back what it got): per connection, the 15 rounds and the bulk.
            sizes = sorted(sum(len(b"%d:%d:" % (i, rnd)) + 50 + 97 * rnd for rnd in range(15)) + 200_000
                           for i in range(8))
            await wait_until(lambda: len(client.results) == 8 and len(server.results) == 8, 30)
            for results in (client.results, server.results):
                assert sorted(r.sent for r in results) == sizes
                assert sorted(r.received for r in results) == sizes
                assert all(r.reason == "closed" for r in results)
        finally:
            await client.close()
            await server.close()
            down.transport.close()
            up.transport.close()
            target.close()

    run(main(), timeout=90)


async def answering_target(reply):
    """A TCP target that answers every newline-ended request with `reply`."""

    class Answer(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(reply * data.count(b"\n"))

    server = await asyncio.get_running_loop().create_server(Answer, HOST, 0)
    return server, server.sockets[0].getsockname()[1]


def test_each_chunk_costs_the_relay_one_call_each_way():
    """Per chunk, the tunnel's own Python is one call: the TCP transport
    hands what it read to the relay's from_tcp itself (no TcpSide method
    between), and Gannet's input reaches feed_data, which writes it to TCP
    (no counting helper). 300 request-reply exchanges through both halves
    run exactly 600 of each and nothing else of apps/tunnel.py, and
    nothing of io/aio.py (the relay writes through the stream glue's
    `forward`, not the StreamWriter's Python methods); the byte
    counts of both halves still tell the two directions apart (requests
    and replies differ in size)."""
    reply = b"+OK\r\n"

    async def main():
        import sys

        target, port = await answering_target(reply)
        async with Tunnel(port, "stream") as t:
            streams = [await asyncio.open_connection(HOST, t.port) for _ in range(3)]
            for r, w in streams:  # each connection relayed once before counting
                w.write(b"hello\n")
                assert await r.readexactly(len(reply)) == reply
            calls = {}

            def profile(frame, event, arg):
                if event == "call" and frame.f_code.co_filename.endswith(TUNNEL_SOURCE):
                    name = frame.f_code.co_name
                    calls[name] = calls.get(name, 0) + 1
                elif event == "call" and frame.f_code.co_filename.endswith(STREAMS_SOURCE):
                    name = "aio.py:" + frame.f_code.co_name
                    calls[name] = calls.get(name, 0) + 1

            sys.setprofile(profile)
            try:
                for i in range(100):
                    for r, w in streams:
                        w.write(b"request %05d\n" % i)
                        assert await r.readexactly(len(reply)) == reply
            finally:
                sys.setprofile(None)
            assert calls == {"from_tcp": 600, "feed_data": 600}
            for r, w in streams:
                w.write_eof()
                assert await r.read() == b""
                w.close()
            await wait_until(lambda: len(t.client.results) == 3 and len(t.server.results) == 3)
            up = 6 + 100 * 14  # each connection's requests (hello and 100 of 14 bytes)
            down = 101 * len(reply)
            for res in t.client.results + t.server.results:
                assert (res.sent, res.received, res.reason) == (up, down, "closed")
        target.close()

    run(main())


def test_a_tunnel_server_takes_gannet_settings_only():
    """The server's keyword overrides are Gannet settings, as the client's
    are, and reach the listening endpoint (`backlog` too: it was given to
    start_server as its own keyword, beside the config); a name of
    start_server's other parameters (limit) is an unknown setting."""

    async def main():
        server = await start_tunnel_server((HOST, 0), (HOST, 9), mss=1000, backlog=3)
        try:
            aep = server.server.endpoint
            assert aep.config.mss == 1000 and aep.config.backlog == 3
            assert aep.ep._backlog == 3  # what listen() took
        finally:
            await server.close()
        with pytest.raises(TypeError, match="unknown Gannet setting 'limit'"):
            await start_tunnel_server((HOST, 0), (HOST, 9), limit=1)

    run(main())
