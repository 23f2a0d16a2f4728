"""The tunnel's mux mode (gannet.apps.tunnel_mux): channels of one Gannet
connection, their credit, hostile framing, and the connection's loss.

The behaviour both modes share (half-close, refused target, resets, memory
bounds, loss) is tested for both in test_tunnel_relay.py."""

import asyncio
import contextlib
import hashlib
import logging
import os
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gannet
from gannet.apps import tunnel as tun
from gannet.apps import tunnel_mux as mux
from gannet.apps.tunnel_mux import BLOCKED, DATA, EOF, OPEN, RESET, WINDOW, frame

from test_tunnel_relay import HOST, Tunnel, echo_target, free_tcp_port, run, wait_until


async def echo(port, payload):
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(payload)
    writer.write_eof()
    got = await reader.read(-1)
    writer.close()
    return got


def test_every_tcp_connection_is_a_channel_of_one_gannet_connection():
    """Thirty TCP connections, ten at a time, each with data both ways and a
    half-close: one Gannet connection (one handshake) carries them all, and
    every byte is counted on both halves."""

    async def main():
        target, port = await echo_target()
        async with Tunnel(port) as t:
            sizes = [1 + 7919 * i for i in range(30)]
            for batch in range(3):
                payloads = [os.urandom(n) for n in sizes[batch * 10:(batch + 1) * 10]]
                got = await asyncio.gather(*(echo(t.port, p) for p in payloads))
                assert got == payloads
            await wait_until(lambda: len(t.client.results) == 30 and len(t.server.results) == 30)
            assert t.client.mux_connections == 1
            (aep,) = t.client.endpoints.values()
            assert aep.ep.connection_count == 1
            assert len(t.server.muxes) == 1 and t.client.mux.opened == 30
            for results in (t.client.results, t.server.results):
                assert sorted(r.sent for r in results) == sizes
                assert sorted(r.received for r in results) == sizes
                assert all(r.reason == "closed" for r in results)
            assert not t.client.mux.channels and not next(iter(t.server.muxes)).channels
        target.close()

    run(main(), timeout=60)


def test_credit_runs_out_and_resumes_without_stalling_other_channels():
    """A service that does not read: the channel's sender stops at its credit
    (its TCP reading paused, the tunnel holding a bounded amount) while
    another channel on the same Gannet connection goes on; once the service
    reads, the grants resume the transfer and every byte arrives."""
    reading = asyncio.Event()
    received = []

    async def handle(reader, writer):
        first = await reader.read(5)
        if first == b"sink:":
            await reading.wait()
            h = hashlib.sha256()
            n = 0
            while chunk := await reader.read(1 << 20):
                h.update(chunk)
                n += len(chunk)
            received.append((n, h.hexdigest()))
            writer.close()
            return
        writer.write(first)  # an echo for every other connection
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def main():
        target = await asyncio.start_server(handle, HOST, 0)
        async with Tunnel(target.sockets[0].getsockname()[1]) as t:
            payload = os.urandom(24 * 1024 * 1024)
            r1, w1 = await asyncio.open_connection(HOST, t.port)
            w1.write(b"sink:" + payload)
            client_ch = server_ch = None
            await wait_until(lambda: t.client.mux is not None and t.client.mux.channels)
            client_ch = next(iter(t.client.mux.channels.values()))
            await wait_until(lambda: t.server.muxes and next(iter(t.server.muxes)).channels)
            server_ch = next(iter(next(iter(t.server.muxes)).channels.values()))
            # The service's socket full (no more grants), the sender out of
            # credit and its TCP reading paused: the stall.
            await wait_until(lambda: server_ch.full and client_ch.credit == 0, 10)
            assert not client_ch.reading
            sent = client_ch.res.sent
            # The other channels go on meanwhile (the mux's reading is not paused).
            for i in range(5):
                msg = b"echo %d " % i * 1000
                assert await echo(t.port, msg) == msg
            await asyncio.sleep(0.3)
            assert client_ch.res.sent == sent  # still stalled
            assert sent < 64 * 1024 * 1024
            reading.set()
            await w1.drain()
            w1.write_eof()
            await wait_until(lambda: received, 30)
            assert received == [(len(payload), hashlib.sha256(payload).hexdigest())]
            assert client_ch.res.sent == 5 + len(payload)
            w1.close()
        target.close()

    run(main(), timeout=90)


def test_a_refused_target_resets_only_its_channel():
    """The target refuses one channel: that application is reset, the Gannet
    connection stays and carries the next one."""

    async def main():
        target, port = await echo_target()
        t = Tunnel(port)
        async with t:
            assert await echo(t.port, b"before") == b"before"
            t.server.target = (HOST, free_tcp_port())  # nothing listens there now
            reader, writer = await asyncio.open_connection(HOST, t.port)
            writer.write(b"x")
            with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
                await asyncio.wait_for(reader.readexactly(1), 5)
            writer.close()
            t.server.target = (HOST, port)
            assert await echo(t.port, b"after") == b"after"
            assert t.client.mux_connections == 1
            reasons = [r.reason for r in t.client.results]
            assert any(r.startswith("tunnel reset (target refused") for r in reasons), reasons
        target.close()

    run(main())


def test_losing_the_connection_resets_every_channel_and_the_next_opens_another():
    async def main():
        target, port = await echo_target()
        async with Tunnel(port) as t:
            streams = [await asyncio.open_connection(HOST, t.port) for _ in range(5)]
            for r, w in streams:
                w.write(b"ping")
                assert await r.readexactly(4) == b"ping"
            (server_mux,) = t.server.muxes
            tun.abort_gannet(server_mux.g_writer)  # the connection dies (an RST)
            for r, _ in streams:
                with pytest.raises(ConnectionResetError):
                    await asyncio.wait_for(r.read(100), 5)
            await wait_until(lambda: len(t.client.results) == 5 and len(t.server.results) == 5)
            assert all(not r.clean for r in t.client.results + t.server.results)
            assert all(r.reason.startswith("tunnel") for r in t.client.results)
            assert t.client.mux is None
            assert await echo(t.port, b"again") == b"again"  # a new connection, at once
            assert t.client.mux_connections == 2
            for _, w in streams:
                w.close()
        target.close()

    run(main())


def test_closing_the_tunnel_resets_every_channel():
    """What SIGINT and SIGTERM do: every channel is reset on both ends."""
    seen = []

    async def handle(reader, writer):
        writer.write(b"ready")
        try:
            while await reader.read(100):
                pass
            seen.append("eof")
        except ConnectionError as exc:
            seen.append(type(exc).__name__)
        writer.close()

    async def main():
        target = await asyncio.start_server(handle, HOST, 0)
        t = Tunnel(target.sockets[0].getsockname()[1])
        async with t:
            streams = [await asyncio.open_connection(HOST, t.port) for _ in range(4)]
            for r, _ in streams:
                assert await r.readexactly(5) == b"ready"
            await t.client.close()
            for r, _ in streams:
                with pytest.raises(ConnectionResetError):
                    await asyncio.wait_for(r.read(100), 5)
            await wait_until(lambda: len(seen) == 4, 10)
            assert seen == ["ConnectionResetError"] * 4
            assert t.client.active == 0
            await wait_until(lambda: t.server.active == 0)
            assert {r.reason for r in t.client.results} == {"tunnel stopped"}
        target.close()

    run(main())


def test_many_clients_share_a_server():
    """Three tunnel clients, each with channels at once, on one server: a mux
    connection each, every byte back."""

    async def main():
        target, port = await echo_target()
        server = await tun.start_tunnel_server((HOST, 0), (HOST, port))
        clients = [await tun.start_tunnel_client((HOST, 0), (HOST, server.address[1]))
                   for _ in range(3)]
        try:
            payloads = [[os.urandom(30_000 + 101 * (i * 6 + j)) for j in range(6)] for i in range(3)]
            got = await asyncio.gather(*(echo(c.address[1], p)
                                         for c, ps in zip(clients, payloads) for p in ps))
            assert got == [p for ps in payloads for p in ps]
            assert len(server.muxes) == 3
            assert [c.mux_connections for c in clients] == [1, 1, 1]
            await wait_until(lambda: len(server.results) == 18)
            assert all(r.reason == "closed" for r in server.results)
        finally:
            for c in clients:
                await c.close()
            await server.close()
            target.close()

    run(main(), timeout=60)


def test_back_off_after_failing_to_reach_the_server():
    """The server is not there: the first application is reset promptly, and
    the ones that follow wait for one attempt after a back-off instead of
    an attempt each (no loop of attempts)."""

    async def main():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((HOST, 0))
            dead_udp = s.getsockname()[1]
        client = await tun.start_tunnel_client((HOST, 0), (HOST, dead_udp), connect_timeout=5)
        attempts = []
        connect = client._connect

        async def counting():
            attempts.append(asyncio.get_running_loop().time())
            return await connect()

        client._connect = counting
        try:
            async def one():
                reader, writer = await asyncio.open_connection(HOST, client.address[1])
                try:
                    assert await asyncio.wait_for(reader.read(100), 8) == b""
                except ConnectionResetError:
                    pass
                writer.close()

            await one()
            assert len(attempts) == 1 and client._backoff == tun.BACKOFF_FIRST
            await asyncio.gather(*(one() for _ in range(4)))
            assert len(attempts) == 2  # the four waited for one attempt
            assert attempts[1] - attempts[0] >= tun.BACKOFF_FIRST * 0.9
            assert client._backoff == 2 * tun.BACKOFF_FIRST
            await wait_until(lambda: len(client.results) == 5)
            assert all(r.reason.startswith("tunnel") for r in client.results)
        finally:
            await client.close()

    run(main())


# -------------------------------------------------------- hostile framing
async def raw_mux_client(server, *frames):
    """A Gannet connection to the tunnel server that says it is a mux client,
    then writes `frames` (whatever bytes) as they are."""
    reader, writer = await gannet.open_connection(HOST, server.address[1])
    writer.write(tun.PREAMBLE_MUX + b"".join(frames))
    return reader, writer


HOSTILE = {
    "unknown kind": [frame(OPEN, 1), frame(9, 1)],
    "data beyond the credit": [frame(OPEN, 1), mux.HEADER.pack(DATA, 1, mux.CHANNEL_WINDOW + 1)],
    "data for a channel never opened": [frame(DATA, 7, b"x")],
    "window of 3 bytes": [frame(OPEN, 1), frame(WINDOW, 1, b"abc")],
    "window of 0": [frame(OPEN, 1), frame(WINDOW, 1, bytes(4))],
    "ids not increasing": [frame(OPEN, 2), frame(OPEN, 2)],
    "eof with a body": [frame(OPEN, 1), frame(EOF, 1, b"!")],
    "reset reason too long": [frame(OPEN, 1), mux.HEADER.pack(RESET, 1, 70000)],
    "reset of a channel never opened": [frame(RESET, 3, b"why")],
    "channel 0": [frame(OPEN, 0)],
    "channel credit beyond its largest window": [
        frame(OPEN, 1), frame(WINDOW, 1, (mux.CHANNEL_WINDOW_MAX - mux.CHANNEL_WINDOW + 1).to_bytes(4, "big"))],
    "connection credit beyond the connection window": [frame(WINDOW, 0, (1).to_bytes(4, "big"))],
    "blocked with a body": [frame(OPEN, 1), frame(BLOCKED, 1, b"!")],
    "blocked for the connection": [frame(BLOCKED, 0)],
    "data after eof": [frame(OPEN, 1), frame(EOF, 1), frame(DATA, 1, b"x")],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_malformed_framing_resets_the_connection_and_is_counted(case, caplog):
    """Framing the protocol does not allow resets the whole mux connection,
    with a logged reason, and is counted; the channels opened on it are
    reset; the server goes on serving."""
    accepted = []

    async def handle(reader, writer):
        accepted.append(writer)
        try:
            await reader.read()
        except ConnectionError:
            pass
        writer.close()

    async def main():
        target = await asyncio.start_server(handle, HOST, 0)
        server = await tun.start_tunnel_server((HOST, 0), (HOST, target.sockets[0].getsockname()[1]))
        try:
            reader, writer = await raw_mux_client(server, *HOSTILE[case])
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(reader.read(), 5)
            writer.close()
            await wait_until(lambda: server.malformed == 1 and not server.muxes)
            assert any("malformed framing" in r.getMessage() for r in caplog.records)
            await wait_until(lambda: server.active == 0)
            # The server still serves a good client.
            client = await tun.start_tunnel_client((HOST, 0), (HOST, server.address[1]))
            try:
                r, w = await asyncio.open_connection(HOST, client.address[1])
                await wait_until(lambda: accepted and len(server.muxes) == 1)
                w.close()
            finally:
                await client.close()
        finally:
            await server.close()
            target.close()

    with caplog.at_level(logging.WARNING, logger="gannet.tunnel"):
        run(main())


def test_an_open_beyond_the_channel_limit_is_reset(monkeypatch):
    """More channels at once than MAX_CHANNELS: the OPEN beyond is answered
    with a RESET, even when it arrives with the preamble (parsed before the
    session is fully set up), and the connection carries on."""
    monkeypatch.setattr(mux, "MAX_CHANNELS", 2)

    async def main():
        target, port = await echo_target()
        server = await tun.start_tunnel_server((HOST, 0), (HOST, port))
        try:
            reader, writer = await raw_mux_client(
                server, frame(OPEN, 1), frame(OPEN, 2), frame(OPEN, 3))
            reset = frame(RESET, 3, b"too many channels")
            assert await asyncio.wait_for(reader.readexactly(len(reset)), 5) == reset
            writer.write(frame(DATA, 1, b"ping"))
            assert await asyncio.wait_for(reader.readexactly(13), 5) == frame(DATA, 1, b"ping")
            assert server.malformed == 0 and len(server.muxes) == 1
            writer.close()
        finally:
            await server.close()
            target.close()

    run(main())


class _Counting:
    malformed = 0

    def _log_close(self, *a):
        pass


class _Transport:
    """A TCP transport's calls, recorded: what the channel writes and the
    events (EOF written, reading paused or resumed, aborted). A `stuck` one
    is an application that does not read: it keeps every byte written (and
    says so, as asyncio's transports do above their high-water mark) until
    `drain()`."""

    def __init__(self, stuck=False):
        self.got = bytearray()
        self.events = []
        self.stuck = stuck
        self.kept = 0  # bytes the transport holds unsent
        self.protocol = None
        self.limits = None

    def write(self, data):
        self.got += data
        if self.stuck:
            self.kept += len(data)
            self.protocol.pause_writing()

    def drain(self):
        """The application read everything: the buffer empties."""
        self.stuck = False
        self.kept = 0
        self.protocol.resume_writing()

    def get_write_buffer_size(self):
        return self.kept

    def can_write_eof(self):
        return True

    def write_eof(self):
        self.events.append("eof")

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def set_write_buffer_limits(self, high=None, low=None):
        self.limits = (high, low)

    def set_protocol(self, protocol):
        self.protocol = protocol

    def get_extra_info(self, name, default=None):
        return default

    def close(self):
        self.events.append("close")

    def abort(self):
        self.events.append("abort")


@contextlib.asynccontextmanager
async def _session(n=1, stuck=False, config=None):
    """A client's MuxSession with channels 1..n open, on a loopback Gannet
    connection (what the parser is fed is fed directly; what the session
    sends is recorded in `sent` as well), each channel with a recording
    TCP transport: the session and the channels are the real classes, as
    the compiled build runs them."""

    async def serve(reader, writer):
        await reader.read()

    server = await gannet.start_server(serve, HOST, 0)
    try:
        _, g_writer = await gannet.open_connection(HOST, server.addresses[0][1], config=config)
        m = mux.MuxSession(_Counting(), g_writer, 1, client=True)
        sent = bytearray()
        forward = m._forward

        def recording(data):
            sent.extend(data)
            return forward(data)

        m._forward = recording
        pairs = []
        for i in range(1, n + 1):
            side = tun.TcpSide()
            transport = _Transport(stuck)
            side.connection_made(transport)
            assert m.open_channel(side, i, tun.RelayResult()) is not None
            pairs.append((m.channels[i], transport))
        yield m, pairs, sent
        g_writer.abort()
    finally:
        server.close()


@contextlib.asynccontextmanager
async def _parser():
    """`_session` with one channel: the session, the channel, its transport."""
    async with _session() as (m, [(ch, transport)], _):
        yield m, ch, transport


def frames_of(data):
    """The frames in `data`: (kind, channel, body) each."""
    out, off = [], 0
    while off < len(data):
        kind, cid, length = mux.HEADER.unpack_from(data, off)
        out.append((kind, cid, bytes(data[off + 9:off + 9 + length])))
        off += 9 + length
    return out


def grants(sent, cid):
    """The WINDOW increments in `sent` for `cid` (0: the connection); what
    was recorded is cleared."""
    got = [int.from_bytes(body, "big") for kind, c, body in frames_of(sent)
           if kind == WINDOW and c == cid]
    sent.clear()
    return got


def test_frames_split_anywhere_parse_the_same():
    """The parser takes frames from chunks cut at any byte: a header, a
    WINDOW body or a DATA payload cut in two, many frames in one chunk."""

    stream = (frame(DATA, 1, b"a" * 10) + frame(WINDOW, 1, (77).to_bytes(4, "big"))
              + frame(DATA, 1, os.urandom(5000)) + frame(DATA, 1, b"") + frame(EOF, 1))
    payload = b"a" * 10 + stream[9 + 10 + 13 + 9:9 + 10 + 13 + 9 + 5000]

    async def main():
        for cuts in ([], [1], [8, 9, 10], [25, 26, 30], [40, 41, 2000, 5040], list(range(1, len(stream)))):
            async with _parser() as (m, ch, transport):
                prev = 0
                for c in cuts + [len(stream)]:
                    m.feed_data(stream[prev:c])
                    prev = c
                assert m.tunnel.malformed == 0
                assert bytes(transport.got) == payload
                assert ch.credit == mux.CHANNEL_WINDOW + 77  # the WINDOW frame's increment
                assert transport.events == ["eof"]

    run(main())


# ------------------------------------------------- credit and its bounds
def test_data_beyond_the_connection_credit_resets_the_connection_and_is_counted(caplog):
    """Channels whose applications do not read: the peer may fill each
    channel's window, but all of them together only up to the connection
    credit (CONNECTION_WINDOW). The endpoint then holds exactly that much,
    counted in its transports' buffers, and returns none of it; one byte
    more, within its channel's window, resets the whole mux connection,
    counted and logged."""
    n = mux.CONNECTION_WINDOW // mux.CHANNEL_WINDOW  # channels whose windows fill it

    async def main():
        async with _session(n + 1, stuck=True) as (m, pairs, sent):
            sent.clear()
            chunk = os.urandom(mux.CHANNEL_WINDOW)
            m.feed_data(b"".join(frame(DATA, ch.id, chunk) for ch, _ in pairs[:n]))
            assert not m.ended and m.tunnel.malformed == 0
            assert sum(t.get_write_buffer_size() for _, t in pairs) == mux.CONNECTION_WINDOW
            assert frames_of(sent) == []  # nothing left this process: no credit back
            m.feed_data(frame(DATA, n + 1, b"x"))
            assert m.ended and m.tunnel.malformed == 1
            assert "connection credit" in m.reason
            assert all(t.events[-1] == "abort" for _, t in pairs)

    with caplog.at_level(logging.WARNING, logger="gannet.tunnel"):
        run(main())
    assert any("malformed framing" in r.getMessage() and "0 of connection credit" in r.getMessage()
               for r in caplog.records)


def test_the_connection_credit_returns_as_the_applications_read():
    """The connection credit comes back (WINDOW for channel 0, QUIC's
    MAX_DATA) as the bytes leave this process, not as they arrive: none
    while the applications hold off, all of it once they read, and the
    peer may then send as much again."""
    n = mux.CONNECTION_WINDOW // mux.CHANNEL_WINDOW

    async def main():
        async with _session(n, stuck=True) as (m, pairs, sent):
            sent.clear()
            chunk = os.urandom(mux.CHANNEL_WINDOW)
            m.feed_data(b"".join(frame(DATA, ch.id, chunk) for ch, _ in pairs))
            assert frames_of(sent) == []
            for _, t in pairs[:n // 2]:
                t.drain()
            back = [(c, int.from_bytes(b, "big")) for k, c, b in frames_of(sent) if k == WINDOW]
            sent.clear()
            assert sum(i for c, i in back if c == 0) == mux.CONNECTION_WINDOW // 2
            assert sorted(c for c, _ in back if c) == [ch.id for ch, _ in pairs[:n // 2]]
            for _, t in pairs[n // 2:]:
                t.drain()
            assert sum(grants(sent, 0)) == mux.CONNECTION_WINDOW // 2
            m.feed_data(b"".join(frame(DATA, ch.id, chunk) for ch, _ in pairs))  # as much again
            assert not m.ended and m.tunnel.malformed == 0
            assert all(bytes(t.got) == chunk * 2 for _, t in pairs)

    run(main())


def test_one_bulk_channels_window_doubles_to_its_cap():
    """A peer that uses its whole window each round trip (and says so with
    BLOCKED) while the application takes every byte at once: the window
    doubles at each BLOCKED, the grant carrying the growth, up to
    CHANNEL_WINDOW_MAX and no further."""

    async def main():
        async with _session() as (m, [(ch, t)], sent):
            sent.clear()
            credit, sizes = mux.CHANNEL_WINDOW, []
            for _ in range(7):
                m.feed_data(b"".join(frame(DATA, 1, bytes(65536)) for _ in range(credit // 65536))
                            + frame(BLOCKED, 1))
                credit = sum(grants(sent, 1))  # the peer's credit for the next round
                sizes.append(ch.size)
            assert sizes == [mux.CHANNEL_WINDOW * 2 ** min(k, 4) for k in range(1, 8)]
            assert sizes[-1] == mux.CHANNEL_WINDOW_MAX and credit == mux.CHANNEL_WINDOW_MAX
            assert m.grown == 4 and not m.ended

    run(main())


def test_a_window_does_not_grow_for_a_slow_application():
    """The peer used the whole window, but the application had not taken
    the bytes at once (its transport kept them): the application, not the
    window, set the pace, and the window stays as it was."""

    async def main():
        async with _session(stuck=True) as (m, [(ch, t)], sent):
            sent.clear()
            m.feed_data(frame(DATA, 1, bytes(mux.CHANNEL_WINDOW)) + frame(BLOCKED, 1))
            assert grants(sent, 1) == []
            t.drain()
            assert grants(sent, 1) == [mux.CHANNEL_WINDOW]
            assert ch.size == mux.CHANNEL_WINDOW and m.grown == 0

    run(main())


def test_channels_waiting_for_connection_credit_are_served_in_turn():
    """Our sending side: channels whose windows together exceed the
    connection credit. The credit runs out (counted), every channel's
    reading pauses, and the channels holding data queue for it; each
    connection WINDOW is served to them in turn (round robin, one held
    read each), until all is sent and reading resumes."""
    mib = 1 << 20
    big = mux.CHANNEL_WINDOW_MAX

    async def main():
        # (a send buffer that takes all 16 MiB: the frames are written here
        # as fast as the test calls from_tcp, not as a loop's reads come)
        roomy = gannet.Config(send_buffer_size=32 * mib, window_size=32 * mib, autotune=False)
        async with _session(6, config=roomy) as (m, pairs, sent):
            grow = (big - mux.CHANNEL_WINDOW).to_bytes(4, "big")
            m.feed_data(b"".join(frame(WINDOW, ch.id, grow) for ch, _ in pairs))  # the peer's windows: 4 MiB each
            sent.clear()
            for ch, _ in pairs:
                ch.from_tcp(bytes(big))  # 24 MiB offered, 16 MiB of credit
            assert m.credit == 0 and m.blocked == 1 and m.paused
            assert [ch.held is not None for ch, _ in pairs] == [False] * 4 + [True] * 2
            assert m.held == 2 * big
            assert not any(ch.reading for ch, _ in pairs)

            def data_sent():
                got = {}
                for kind, cid, body in frames_of(sent):
                    if kind == DATA:
                        got[cid] = got.get(cid, 0) + len(body)
                sent.clear()
                return got

            assert data_sent() == {1: big, 2: big, 3: big, 4: big}
            turns = []
            for _ in range(8):
                m.feed_data(frame(WINDOW, 0, mib.to_bytes(4, "big")))
                turns.append(data_sent())
            assert turns == [{5: mib}, {6: mib}] * 4  # in turn
            assert m.held == 0 and m.credit == 0 and not m.waiting
            m.feed_data(frame(WINDOW, 0, mib.to_bytes(4, "big")))
            assert not m.paused and not any(ch.reading for ch, _ in pairs)  # (no channel credit)
            m.feed_data(frame(WINDOW, 1, mib.to_bytes(4, "big")))
            assert [ch.reading for ch, _ in pairs] == [True] + [False] * 5

    run(main())


async def _not_reading_target(rcvbuf=4096):
    """A TCP service that accepts and never reads (small receive buffers,
    so the kernel takes little of what is sent to it)."""
    accepted = []
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((HOST, 0))
    target = await asyncio.start_server(lambda r, w: accepted.append(w), sock=sock)
    return target, sock.getsockname()[1], accepted


async def _until_still(value, period=0.3, timeout=20):
    """Wait until `value()` stops changing for `period` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = value()
    while True:
        await asyncio.sleep(period)
        now = value()
        if now == last:
            return now
        assert loop.time() < deadline, "never settled"
        last = now


def _held_in_memory(session):
    """Bytes of the peer's DATA one session's channels hold in this
    process: their TCP transports' buffers and what waits for a target."""
    return sum((ch.transport.get_write_buffer_size() if ch.transport is not None else 0)
               + sum(len(d) for d in ch.early or ()) for ch in session.channels.values())


def test_channels_that_are_never_read_hold_at_most_the_connection_credit():
    """Twenty-four applications each send 4 MiB to a service that never
    reads: the tunnel server holds at most CONNECTION_WINDOW of it (counted
    in its transports' buffers; with a window per channel alone it would
    hold all 96 MiB less what the kernel took), and the client at most
    HELD_LIMIT and one read beyond the credit; both stop there."""

    async def main():
        target, port, accepted = await _not_reading_target()
        async with Tunnel(port) as t:
            writers = []
            for _ in range(24):
                _, w = await asyncio.open_connection(HOST, t.port)
                w.write(os.urandom(4 << 20))
                writers.append(w)
            await wait_until(lambda: len(accepted) == 24, 10)
            client = t.client.mux
            sent = await _until_still(lambda: sum(ch.res.sent for ch in client.channels.values()))
            (server,) = t.server.muxes
            held = _held_in_memory(server)
            # (what the kernel took is freed: the credit, not the kernel, stopped it)
            assert mux.CONNECTION_WINDOW // 2 <= held <= mux.CONNECTION_WINDOW
            assert sent < 24 * (4 << 20)  # the applications are held back
            assert client.blocked >= 1 and client.credit <= mux.CONNECTION_GRANT_AT
            assert client.held <= mux.HELD_LIMIT + (256 << 10)
            assert sum(len(ch.held or b"") for ch in client.channels.values()) == client.held
            for w in writers:
                w.close()
        target.close()

    run(main(), timeout=60)


@pytest.mark.parametrize("send_buffer", [1 << 20, 32 << 20])
def test_a_peer_that_opens_channels_and_never_reads_cannot_make_the_server_hold_more(send_buffer):
    """A peer opens 80 channels to a service that sends 1 MiB on each at
    once, and never reads (neither its Gannet stream nor, so, any DATA;
    it grants nothing). The server stops reading the service: with a send
    buffer of 1 MiB because the Gannet writer drains, with 32 MiB because
    the connection credit is spent (80 channels' windows are more than
    it). What it holds is what one read per channel brought beyond the
    credits (counted: at most HELD_LIMIT and one read) and frames waiting
    for the Gannet connection (at most WRITER_LIMIT beyond its send
    buffer); it sends no more DATA than the connection credit, and does
    not reset a peer that is only slow."""
    payload = os.urandom(1 << 20)
    n = 80

    async def handle(reader, writer):
        writer.write(payload)
        try:
            await reader.read()
        except ConnectionError:
            pass
        writer.close()

    async def main():
        target = await asyncio.start_server(handle, HOST, 0)
        server = await tun.start_tunnel_server(
            (HOST, 0), (HOST, target.sockets[0].getsockname()[1]),
            window_size=send_buffer, send_buffer_size=send_buffer, autotune=False)
        try:
            reader, writer = await gannet.open_connection(
                HOST, server.address[1], limit=4096,
                config=gannet.Config(window_size=65536, autotune=False))  # (and never read)
            writer.write(tun.PREAMBLE_MUX + b"".join(frame(OPEN, i) for i in range(1, n + 1)))
            await wait_until(lambda: server.muxes and len(next(iter(server.muxes)).channels) == n
                             and all(ch.transport for ch in next(iter(server.muxes)).channels.values()))
            (m,) = server.muxes
            sent = await _until_still(lambda: sum(ch.res.received for ch in m.channels.values()))
            assert m.paused and not m.ended and server.malformed == 0
            if send_buffer > mux.CONNECTION_WINDOW:
                assert sent == mux.CONNECTION_WINDOW and m.credit == 0 and m.blocked >= 1
                assert m.held > 0  # (reads beyond the credit are held, not sent)
            else:
                assert 0 < sent < mux.CONNECTION_WINDOW and m.credit > 0
            assert sum(len(ch.held or b"") for ch in m.channels.values()) == m.held
            assert m.held <= mux.HELD_LIMIT + (256 << 10)
            assert m.g_writer.get_write_buffer_size() <= mux.WRITER_LIMIT
            writer.abort()
        finally:
            await server.close()
            target.close()

    run(main(), timeout=60)


def test_a_channel_not_read_does_not_starve_the_others():
    """Three channels whose service read 12 MiB each at full speed (their
    windows grew) and then stopped reading hold at most their windows of
    the connection credit each (CHANNEL_WINDOW_MAX, a quarter of it), so
    eight channels uploading 4 MiB each beside them share what is left and
    all arrive whole. (How senders wait for connection credit in turn:
    test_channels_waiting_for_connection_credit_are_served_in_turn.)"""
    stop_after = 12 << 20
    sums = []

    async def handle(reader, writer):
        kind = await reader.readexactly(4)
        if kind == b"stop":
            got = 0
            while got < stop_after:
                got += len(await reader.read(1 << 20))
            await asyncio.sleep(3600)  # and read no more
        h, n = hashlib.sha256(), 0
        while data := await reader.read(1 << 20):
            h.update(data)
            n += len(data)
        sums.append((n, h.hexdigest()))
        writer.close()

    async def main():
        target = await asyncio.start_server(handle, HOST, 0)
        async with Tunnel(target.sockets[0].getsockname()[1]) as t:
            stalled = []
            for _ in range(3):
                _, w = await asyncio.open_connection(HOST, t.port)
                w.write(b"stop" + bytes(stop_after + (8 << 20)))
                stalled.append(w)
            await wait_until(lambda: t.server.muxes and len(next(iter(t.server.muxes)).channels) == 3)
            (server,) = t.server.muxes
            chans = list(server.channels.values())
            await _until_still(lambda: sum(ch.res.sent for ch in chans))
            for ch in chans:
                assert ch.transport.get_write_buffer_size() <= mux.CHANNEL_WINDOW_MAX
            payloads = [os.urandom(4 << 20) for _ in range(8)]

            async def upload(p):
                _, w = await asyncio.open_connection(HOST, t.port)
                w.write(b"sink" + p)
                await w.drain()
                w.write_eof()
                return w

            ws = await asyncio.gather(*(upload(p) for p in payloads))
            await wait_until(lambda: len(sums) == 8, 40)
            assert sorted(sums) == sorted((len(p), hashlib.sha256(p).hexdigest()) for p in payloads)
            for w in ws + stalled:
                w.close()
        target.close()

    run(main(), timeout=90)


async def delaying_udp_relay(server_port, delay):
    """A UDP relay in front of `server_port` that holds every datagram for
    `delay` seconds each way (a path of 2 x delay round trip)."""
    loop = asyncio.get_running_loop()

    class Up(asyncio.DatagramProtocol):
        client = None

        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            loop.call_later(delay, front.transport.sendto, data, self.client)

    class Front(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            up.client = addr
            loop.call_later(delay, up.transport.sendto, data)

    _, front = await loop.create_datagram_endpoint(Front, local_addr=(HOST, 0))
    _, up = await loop.create_datagram_endpoint(Up, remote_addr=(HOST, server_port))
    return front.transport, up.transport


def test_a_bulk_download_grows_its_window_to_the_cap_on_a_long_path():
    """One download over a path of 40 ms round trip: the window that starts
    at CHANNEL_WINDOW limits it, the sender says BLOCKED, and the window
    doubles to CHANNEL_WINDOW_MAX; every byte arrives."""
    payload = os.urandom(1 << 20)

    async def handle(reader, writer):
        await reader.readexactly(1)
        for _ in range(24):
            writer.write(payload)
            await writer.drain()
        writer.close()

    async def main():
        target = await asyncio.start_server(handle, HOST, 0)
        server = await tun.start_tunnel_server((HOST, 0), (HOST, target.sockets[0].getsockname()[1]))
        front, up = await delaying_udp_relay(server.address[1], 0.02)
        client = await tun.start_tunnel_client((HOST, 0), front.get_extra_info("sockname"))
        try:
            r, w = await asyncio.open_connection(HOST, client.address[1])
            w.write(b"x")
            h, sizes = hashlib.sha256(), set()
            while data := await r.read(1 << 20):
                h.update(data)
                sizes.update(ch.size for ch in client.mux.channels.values())
            assert h.digest() == hashlib.sha256(payload * 24).digest()
            assert max(sizes) == mux.CHANNEL_WINDOW_MAX, sorted(sizes)
            assert client.mux.grown == 4
            w.close()
        finally:
            await client.close()
            await server.close()
            front.close()
            up.close()
            target.close()

    run(main(), timeout=60)


def test_a_peer_that_never_reads_our_answers_is_reset(monkeypatch, caplog):
    """A peer that makes the server answer (here: OPENs beyond the channel
    limit, each refused with a RESET) and never reads: once more than
    WRITER_LIMIT waits beyond the send buffer, the mux connection is reset
    with a logged reason instead of queueing answers without end."""
    monkeypatch.setattr(mux, "MAX_CHANNELS", 0)

    async def main():
        target, port = await echo_target()
        server = await tun.start_tunnel_server((HOST, 0), (HOST, port), window_size=65536,
                                               send_buffer_size=65536, autotune=False)
        try:
            reader, writer = await gannet.open_connection(
                HOST, server.address[1], limit=4096,
                config=gannet.Config(window_size=65536, autotune=False))  # (and never read)
            writer.write(tun.PREAMBLE_MUX)
            await wait_until(lambda: server.muxes)
            per = len(frame(RESET, 1, b"too many channels"))
            n = (mux.WRITER_LIMIT + 2 * 65536) // per + 1000
            for start in range(1, n, 5000):
                writer.write(b"".join(frame(OPEN, i) for i in range(start, min(n, start + 5000))))
                await writer.drain()
            await wait_until(lambda: not server.muxes, 20)
            writer.abort()
        finally:
            await server.close()
            target.close()

    with caplog.at_level(logging.WARNING, logger="gannet.tunnel"):
        run(main(), timeout=60)
    assert any("the peer does not read" in r.getMessage() for r in caplog.records)


def test_a_server_serves_at_most_max_mux_mux_connections(caplog):
    """What one mux connection can make a server hold is bounded, and so is
    the number it serves at once (`max_mux`): one more is refused with a
    line that says so, and counted; once one ends, the next is served."""

    async def main():
        target, port = await echo_target()
        server = await tun.start_tunnel_server((HOST, 0), (HOST, port), max_mux=2)
        try:
            firsts = [await raw_mux_client(server) for _ in range(2)]
            await wait_until(lambda: len(server.muxes) == 2)
            reader, writer = await raw_mux_client(server)
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(reader.read(), 5)
            writer.close()
            assert server.refused == 1 and len(server.muxes) == 2
            firsts[0][1].abort()
            await wait_until(lambda: len(server.muxes) == 1)
            reader, writer = await raw_mux_client(server, frame(OPEN, 1), frame(DATA, 1, b"ping"))
            assert await asyncio.wait_for(reader.readexactly(13), 5) == frame(DATA, 1, b"ping")
            writer.abort()
            firsts[1][1].abort()
        finally:
            await server.close()
            target.close()

    with caplog.at_level(logging.WARNING, logger="gannet.tunnel"):
        run(main())
    assert any("2 mux connections open, the most this server serves" in r.getMessage()
               for r in caplog.records)
    with pytest.raises(ValueError):
        tun.TunnelServer((HOST, 1), {}, 1.0, max_mux=0)


def test_a_peers_reset_reason_is_shown_inert():
    """A RESET's reason is the peer's text: a control sequence or a line
    break in it reaches the log and the channel's result escaped, so a peer
    cannot clear a terminal or forge a log line."""

    async def main():
        async with _parser() as (m, ch, transport):
            m.feed_data(frame(RESET, 1, b"bad\x1b[2J\ngannet tunnel: #9 forged\xff"))
            assert m.tunnel.malformed == 0
            assert transport.events == ["abort"]
            reason = ch.res.reason
            assert "\x1b" not in reason and "\n" not in reason
            assert "bad\\x1b[2J\\ngannet tunnel: #9 forged\\xff" in reason

    run(main())


def test_a_server_that_opens_a_channel_is_malformed_to_the_client(caplog):
    """The client parses what the server sends with the same rules: an OPEN
    from the server resets the mux connection, counted and logged, the
    channel on it is reset, and the client goes on (the next TCP
    connection opens another mux connection)."""

    async def main():
        seen = []

        async def fake_server(reader, writer):
            preamble = await reader.readexactly(tun.PREAMBLE_SIZE)
            seen.append(preamble)
            writer.write(frame(OPEN, 1))
            try:
                await reader.read()
            except ConnectionError:
                pass
            writer.close()

        server = await gannet.start_server(fake_server, HOST, 0)
        client = await tun.start_tunnel_client((HOST, 0), (HOST, server.addresses[0][1]))
        try:
            reader, writer = await asyncio.open_connection(HOST, client.address[1])
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(reader.read(100), 5)
            writer.close()
            await wait_until(lambda: client.malformed == 1 and client.results)
            assert seen == [tun.PREAMBLE_MUX]
            assert "malformed framing" in client.results[0].reason
            assert any("the server opened channel 1" in r.getMessage() for r in caplog.records)
            reader, writer = await asyncio.open_connection(HOST, client.address[1])
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(reader.read(100), 5)
            writer.close()
            assert client.mux_connections == 2 and len(seen) == 2
        finally:
            await client.close()
            server.close()

    with caplog.at_level(logging.WARNING, logger="gannet.tunnel"):
        run(main())


def test_the_tunnel_does_not_poll_before_sleeping():
    """A mux connection is its endpoint's one connection, the case polling
    before sleeping is for; but a tunnel's answers come through its TCP
    sockets, which the poll does not watch: both halves leave it off unless
    told (`busy_poll`). (In one process the two halves share a loop, where
    no endpoint polls anyway: the setting is what is checked.)"""

    async def main():
        target, port = await echo_target()
        async with Tunnel(port) as t:
            streams = [await asyncio.open_connection(HOST, t.port) for _ in range(3)]
            for i in range(50):
                for r, w in streams:
                    w.write(b"request %03d" % i)
                    assert await r.readexactly(11) == b"request %03d" % i
            aeps = [t.server.server.endpoint, *t.client.endpoints.values()]
            assert [a.config.busy_poll for a in aeps] == [0, 0]
            for _, w in streams:
                w.close()
        async with Tunnel(port, busy_poll=150) as t:
            assert await echo(t.port, b"x") == b"x"
            assert t.server.server.endpoint.config.busy_poll == 150
            assert [a.config.busy_poll for a in t.client.endpoints.values()] == [150]
        target.close()

    run(main())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.binary(max_size=40),
    st.builds(lambda k, c, body: frame(k, c, body), st.integers(0, 7), st.integers(0, 3),
              st.binary(max_size=12)),
), max_size=12), st.lists(st.integers(1, 200), max_size=6))
def test_any_bytes_from_the_peer_are_parsed_or_reset_never_an_error(chunks, cuts):
    """Whatever the peer sends, cut anywhere: the parser hands it on or
    resets the connection as malformed (counted); nothing else escapes
    (a failure of its own would be logged as an error and end the
    connection: none may happen)."""
    stream = b"".join(chunks)
    errors = []

    async def main():
        async with _parser() as (m, ch, transport):
            prev = 0
            for c in sorted(set(cuts)) + [len(stream)]:
                m.feed_data(stream[prev:c])
                prev = max(prev, c)
            if m.ended:
                assert m.tunnel.malformed == 1
                assert m.reason.startswith("tunnel reset (malformed framing")
            else:
                assert m.tunnel.malformed == 0

    original = mux.log.error
    mux.log.error = lambda *a, **kw: errors.append(a)
    try:
        asyncio.run(main())
    finally:
        mux.log.error = original
    assert errors == []


def test_the_server_refuses_a_connection_without_a_preamble(monkeypatch, caplog):
    """A Gannet connection whose first bytes name no tunnel mode (a client
    from before the modes), that sends nothing, or that is a mux client of
    the first framing, is refused with a line that says so and counted;
    the target never sees a connection."""
    monkeypatch.setattr(tun, "PREAMBLE_TIMEOUT", 0.3)
    accepted = []

    async def main():
        target = await asyncio.start_server(lambda r, w: accepted.append(w), HOST, 0)
        server = await tun.start_tunnel_server((HOST, 0), (HOST, target.sockets[0].getsockname()[1]))
        try:
            reader, writer = await gannet.open_connection(HOST, server.address[1])
            writer.write(b"GET / HTTP/1.0\r\n\r\n")  # an old stream client's application bytes
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(reader.read(), 5)
            writer.close()
            reader, writer = await gannet.open_connection(HOST, server.address[1])
            with pytest.raises(ConnectionResetError):  # says nothing: refused after the timeout
                await asyncio.wait_for(reader.read(), 5)
            writer.close()
            # A mux client of the framing before connection credit: refused
            # with a line that says what it is, not taken for garbage or
            # left to hang on credit it does not know.
            reader, writer = await gannet.open_connection(HOST, server.address[1])
            writer.write(tun.PREAMBLE_MUX_1 + frame(OPEN, 1) + frame(DATA, 1, b"ping"))
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(reader.read(), 5)
            writer.close()
            assert server.refused == 3 and server.total == 0 and not accepted
            lines = [r.getMessage() for r in caplog.records]
            assert any("a mux client of an earlier version (its framing has no connection credit)"
                       in m for m in lines), lines
            assert any("not a gannet tunnel client of this version (first bytes b'GET / HT')" in m
                       for m in lines), lines
            assert any("no tunnel preamble (timed out)" in m for m in lines), lines
        finally:
            await server.close()
            target.close()

    with caplog.at_level(logging.WARNING, logger="gannet.tunnel"):
        run(main())
