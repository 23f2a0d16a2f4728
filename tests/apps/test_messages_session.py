"""Message sessions over a real loopback stream: negotiation, modes, fragments, keepalive."""

import asyncio

import pytest

from gannet.apps.messages import (
    BURST,
    STEP,
    Limits,
    Message,
    MessageType,
    Offer,
    PeerError,
    Refused,
    SessionRefused,
    SessionTimeout,
    connect,
    get_codec,
    negotiate,
    serve,
)
from gannet.apps.messages.codec import control, encode_json
from gannet.apps.messages.transport import resolve

# The stream transport under test (what `--transport auto` picks too);
# "tcp" runs the same tests over asyncio TCP.
TRANSPORT = "gannet"
_, OPEN, START = resolve(TRANSPORT)
HOST = "127.0.0.1"


def run(coro, timeout=10.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def start(handler=None, **kw):
    received = []

    def default(session, data):
        received.append(data)

    server = await serve(handler or default, HOST, 0, start_server=START, **kw)
    server.received = received
    return server


async def client(server, **kw):
    host, port = server.address
    return await connect(host, port, open_connection=OPEN, **kw)


class Raw:
    """A hand-driven client, to misbehave on purpose."""

    def __init__(self, reader, writer, fmt):
        self.reader, self.writer, self.codec = reader, writer, get_codec(fmt)
        self.dec = self.codec.decoder()
        self.pending = []

    @classmethod
    async def open(cls, server, fmt="binary"):
        return cls(*await OPEN(*server.address), fmt)

    def send(self, msg):
        self.writer.write(self.codec.encode(msg))

    async def recv(self):
        while not self.pending:
            data = await self.reader.read(65536)
            if not data:
                return None
            self.pending += self.dec.feed(data)
        return self.pending.pop(0)

    async def handshake(self, **offer):
        self.send(control(MessageType.CONNECT, Offer(**offer).to_body()))
        accept = await self.recv()
        assert accept.type is MessageType.ACCEPT, accept
        self.send(control(MessageType.ACK, {"session_id": accept.json_body()["session_id"]}))
        return accept.json_body()


# ------------------------------------------------------------------ negotiation (pure)


def test_negotiate_accepts_and_lowers():
    limits = Limits(max_packet_size=1024, max_window=4, keepalive_interval=2.0)
    p = negotiate(Offer(BURST, 512, 3, 1.0, "me"), limits)
    assert (p.operation_mode, p.max_packet_size, p.window_size, p.client_id) == (BURST, 512, 3, "me")
    assert p.notes == ()
    p = negotiate(Offer(BURST, 65536, 16, 10.0), limits)
    assert (p.max_packet_size, p.window_size, p.keepalive_interval) == (1024, 4, 2.0)
    assert "server lowered max_packet_size from 65536 to 1024" in p.notes
    assert "server lowered window_size from 16 to 4" in p.notes
    assert negotiate(Offer(STEP, 100, 8), limits).window_size == 1


@pytest.mark.parametrize("offer, reason", [
    (Offer(version="2.0"), "unsupported protocol version 2.0"),
    (Offer(operation_mode="turbo"), "unknown operation mode"),
    (Offer(max_packet_size=4), "below the minimum"),
    (Offer(BURST, window_size=0), "at least 1"),
])
def test_negotiate_refuses(offer, reason):
    with pytest.raises(Refused, match=reason):
        negotiate(offer, Limits())


# ------------------------------------------------------------------ negotiation (wire)


@pytest.mark.parametrize("fmt", ["binary", "json"])
def test_session_lowered_params_and_clean_disconnect(fmt):
    async def main():
        server = await start(limits=Limits(max_packet_size=1024, max_window=4))
        c = await client(server, mode=BURST, max_packet_size=65536, window_size=32,
                         client_id="c1", format=fmt)
        assert c.params.max_packet_size == 1024 and c.params.window_size == 4
        assert "server lowered max_packet_size from 65536 to 1024" in c.params.notes
        for i in range(10):
            await c.send(f"message {i}".encode())
        await c.disconnect()
        assert c.stats.acks == 10 and c.error is None
        await server.wait_idle()
        [s] = server.finished
        assert s.clean and s.error is None and s.format == fmt
        assert s.params.client_id == "c1"
        assert server.received == [f"message {i}".encode() for i in range(10)]
        server.close()
        await server.wait_closed()
    run(main())


def test_refused_mode_reaches_client():
    async def main():
        server = await start(limits=Limits(modes=(STEP,)))
        with pytest.raises(SessionRefused, match="burst not allowed"):
            await client(server, mode=BURST)
        server.close()
        await server.wait_closed()
    run(main())


def test_refused_version_binary_and_json():
    async def main():
        server = await start()
        raw = await Raw.open(server)
        body = Offer().to_body() | {"version": "2.0"}
        raw.send(control(MessageType.CONNECT, body))
        reply = await raw.recv()
        assert reply.type is MessageType.ERROR
        assert "unsupported protocol version 2.0" in reply.json_body()["reason"]
        assert await raw.recv() is None  # server closed
        # a JSON envelope of another major version gets a JSON ERROR back
        raw = await Raw.open(server, "json")
        raw.writer.write(encode_json(control(MessageType.CONNECT, Offer().to_body()))
                         .replace(b'"version":"1.0"', b'"version":"2.0"', 1))
        reply = await raw.recv()
        assert reply.type is MessageType.ERROR and "version" in reply.json_body()["reason"]
        server.close()
        await server.wait_closed()
    run(main())


def test_server_format_restriction():
    async def main():
        server = await start(formats=("binary",))
        with pytest.raises(SessionRefused, match="only binary"):
            await client(server, format="json")
        server.close()
        await server.wait_closed()
    run(main())


# ------------------------------------------------------------------ operation modes


async def _slow_run(mode, window, n=12):
    async def slow(session, data):
        await asyncio.sleep(0.01)

    server = await start(slow)
    c = await client(server, mode=mode, window_size=window)
    seen = []
    c.on_ack = lambda seq: seen.append(c.in_flight)
    for i in range(n):
        await c.send(b"x%d" % i)
        seen.append(c.in_flight)
    await c.disconnect()
    await server.wait_idle()
    [s] = server.finished
    server.close()
    await server.wait_closed()
    return c, s, seen


def test_step_by_step_never_more_than_one_unacked():
    async def main():
        c, s, seen = await _slow_run(STEP, 8)
        assert c.params.window_size == 1
        assert c.stats.max_in_flight == 1
        assert s.stats.max_in_flight == 1  # server never holds two unacked messages
        assert max(seen) <= 1
        assert seen[1::2] == [0] * 12  # send() returns only once its ACK arrived
    run(main())


def test_burst_keeps_window_in_flight():
    async def main():
        c, s, seen = await _slow_run(BURST, 4, n=20)
        assert c.stats.max_in_flight == 4
        # with a slow handler the server sees the whole window, never more
        assert s.stats.max_in_flight == 4
        assert s.stats.messages == 20 and c.stats.acks == 20
    run(main())


def test_fragmentation_of_large_message():
    async def main():
        server = await start(limits=Limits(max_packet_size=100))
        big = bytes(range(256)) * 40  # 10240 bytes -> 103 fragments
        for mode in (STEP, BURST):
            c = await client(server, mode=mode, max_packet_size=4096)
            assert c.params.max_packet_size == 100
            await c.send(big)
            await c.send(b"small")
            await c.disconnect()
            assert c.stats.frames == 104 and c.stats.messages == 2
        assert server.received == [big, b"small", big, b"small"]
        server.close()
        await server.wait_closed()
    run(main())


def test_oversized_packet_is_an_error():
    async def main():
        server = await start(limits=Limits(max_packet_size=64))
        raw = await Raw.open(server)
        await raw.handshake(max_packet_size=64)
        raw.send(Message(MessageType.DATA, 1, b"x" * 65))
        reply = await raw.recv()
        assert reply.type is MessageType.ERROR
        assert "exceeds max_packet_size 64" in reply.json_body()["reason"]
        server.close()
        await server.wait_closed()
    run(main())


def test_sequence_gap_is_an_error():
    async def main():
        server = await start()
        raw = await Raw.open(server)
        await raw.handshake()
        raw.send(Message(MessageType.DATA, 2, b"skip"))
        reply = await raw.recv()
        assert reply.type is MessageType.ERROR
        assert "expected 1, got 2" in reply.json_body()["reason"]
        server.close()
        await server.wait_closed()
    run(main())


# ------------------------------------------------------------------ keepalive


def test_keepalive_keeps_idle_session_alive():
    async def main():
        server = await start(limits=Limits(keepalive_interval=0.05))
        c = await client(server, keepalive_interval=0.05)
        await asyncio.sleep(0.4)  # > 2 idle timeouts (3 x 0.05 s)
        await c.send(b"still here")
        await c.disconnect()
        await server.wait_idle()
        [s] = server.finished
        assert s.clean and s.stats.keepalives_received >= 3
        assert c.stats.keepalives_received >= 3
        server.close()
        await server.wait_closed()
    run(main())


def test_silent_client_times_out():
    async def main():
        server = await start(limits=Limits(keepalive_interval=0.05))
        raw = await Raw.open(server)
        await raw.handshake(keepalive_interval=0.05)
        t0 = asyncio.get_running_loop().time()
        while (msg := await raw.recv()) is not None and msg.type is MessageType.KEEPALIVE:
            pass  # the server keeps sending KEEPALIVE while it waits
        assert msg.type is MessageType.ERROR
        assert "peer silent" in msg.json_body()["reason"]
        assert asyncio.get_running_loop().time() - t0 < 1.0
        await server.wait_idle()
        assert isinstance(server.finished[0].error, SessionTimeout)
        server.close()
        await server.wait_closed()
    run(main())


def test_silent_server_times_out():
    async def main():
        async def mute(reader, writer):
            dec = get_codec("binary").decoder()
            [connect_msg] = dec.feed(await reader.read(65536))
            params = negotiate(Offer.from_body(connect_msg.json_body()), Limits())
            writer.write(get_codec("binary").encode(control(MessageType.ACCEPT, params.to_body())))
            await asyncio.sleep(5)  # then never answer again

        srv = await START(mute, HOST, 0)
        port = srv.sockets[0].getsockname()[1]
        c = await connect(HOST, port, keepalive_interval=0.05, open_connection=OPEN)
        with pytest.raises(SessionTimeout, match="peer silent"):
            await c.send(b"hello?")
        srv.close()
    run(main())


def test_server_error_reaches_client():
    async def main():
        def broken(session, data):
            raise RuntimeError("boom")

        server = await start(broken)
        c = await client(server)
        with pytest.raises(PeerError, match="server handler failed"):
            await c.send(b"x")
        server.close()
        await server.wait_closed()
    run(main())


# ------------------------------------------------------------------ concurrency


def test_many_concurrent_clients():
    async def main():
        server = await start(limits=Limits(max_packet_size=256))
        n_clients, n_msgs = 20, 25

        async def one(i):
            c = await client(server, mode=BURST if i % 2 else STEP, window_size=4,
                             format="json" if i % 3 == 0 else "binary", client_id=f"c{i}")
            for j in range(n_msgs):
                await c.send(f"{i}:{j}:".encode() + b"y" * (j * 20))
            await c.disconnect()
            return c.stats.acks

        acks = await asyncio.gather(*(one(i) for i in range(n_clients)))
        assert all(a >= n_msgs for a in acks)
        await server.wait_idle()
        assert len(server.finished) == n_clients
        assert all(s.clean and s.error is None for s in server.finished)
        got = sorted(server.received)
        want = sorted(f"{i}:{j}:".encode() + b"y" * (j * 20)
                      for i in range(n_clients) for j in range(n_msgs))
        assert got == want
        server.close()
        await server.wait_closed()
    run(main(), timeout=20)

