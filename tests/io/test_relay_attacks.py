"""Real sockets through an attacking relay (tests/io/udp_relay.py): what an
on-path attacker sees of an encrypted transfer, and what its alterations,
replays, injections and forged segments change (nothing that arrives).
Bounded in time; loopback only."""

from __future__ import annotations

import asyncio
import hashlib
import random

import pytest
from udp_relay import Relay

import gannet
from gannet.wire.protected import PROTECTED, parse_header, seal_header

pytestmark = pytest.mark.timeout(120)

SIZE = 2_000_000


def _payload(seed: int) -> bytes:
    return random.Random(seed).randbytes(SIZE)


async def _transfer_through(relay_factory, data: bytes, **settings):
    """Send `data` to a server that answers with its SHA-256; returns
    (digest the server computed, relay, server stats)."""
    async def handle(reader, writer):
        h = hashlib.sha256()
        while chunk := await reader.read(1 << 16):
            h.update(chunk)
        writer.write(h.digest())
        await writer.drain()
        writer.close()

    server = await gannet.start_server(handle, "127.0.0.1", 0, **settings)
    relay = relay_factory(server.addresses[0][1])
    port = await relay.start()
    try:
        reader, writer = await asyncio.wait_for(gannet.open_connection("127.0.0.1", port, **settings), 10)
        writer.write(data)
        writer.write_eof()
        digest = await asyncio.wait_for(reader.readexactly(32), 60)
        writer.close()
        return digest, relay, server.endpoint.ep
    finally:
        relay.close()
        server.close()


def test_a_recording_relay_finds_none_of_the_bytes():
    data = _payload(1)

    async def main():
        digest, relay, _ = await _transfer_through(lambda p: Relay(p), data)
        assert digest == hashlib.sha256(data).digest()
        wire = b"".join(d for _, d in relay.recorded)
        assert len(wire) > SIZE  # everything went through it
        assert not any(data[i : i + 16] in wire for i in range(0, SIZE, 4099))
        assert all(d[0] == PROTECTED for _, d in relay.recorded[2:])

    asyncio.run(main())


def test_the_same_relay_reads_an_insecure_transfer():
    """The control: with --insecure the same relay sees the file's bytes."""
    data = _payload(2)

    async def main():
        digest, relay, _ = await _transfer_through(lambda p: Relay(p), data, insecure=True)
        assert digest == hashlib.sha256(data).digest()
        wire = b"".join(d for _, d in relay.recorded)
        assert sum(data[i : i + 16] in wire for i in range(0, SIZE, 4099)) > 400

    asyncio.run(main())


def test_flips_truncations_replays_and_injections_change_nothing_that_arrives():
    rng = random.Random(3)
    data = _payload(3)
    seen: list[bytes] = []
    counts = dict.fromkeys(("flip", "truncate", "replay", "inject"), 0)

    def attack(d: bytes, direction: str) -> list[bytes]:
        if d[0] != PROTECTED:
            return [d]
        seen.append(d)
        r = rng.random()
        if r < 0.03:
            counts["flip"] += 1
            bad = bytearray(d)
            bad[rng.randrange(len(d))] ^= 1 << rng.randrange(8)
            return [bytes(bad), d]
        if r < 0.05:
            counts["truncate"] += 1
            return [d[: rng.randrange(1, len(d))], d]
        if r < 0.08:
            counts["replay"] += 1
            return [d, rng.choice(seen)]
        if r < 0.10:
            counts["inject"] += 1
            forged = bytearray(d)
            forged[8:] = rng.randbytes(len(d) - 8)  # right header, connection and a fresh number
            phase, dst, pn = parse_header(d)
            forged[:8] = seal_header(phase, dst, pn + 5)
            return [d, bytes(forged)]
        return [d]

    async def main():
        digest, relay, ep = await _transfer_through(lambda p: Relay(p, attack), data)
        assert digest == hashlib.sha256(data).digest()
        assert all(counts.values()), counts
        st = ep.security_stats
        assert st.unauthenticated_dropped + st.replay_dropped > 0

    asyncio.run(main())


def test_forged_plaintext_rst_fin_ack_data_do_nothing():
    """With the connection IDs and in-window numbers read off the (clear)
    handshake, forged plaintext segments are dropped and counted."""
    from gannet.wire.datagram import decode, encode
    from gannet.wire.segment import ACK, FIN, PSH, RST, Segment

    async def main():
        got = bytearray()
        finished = asyncio.Event()

        async def handle(reader, writer):
            while chunk := await reader.read(1 << 16):
                got.extend(chunk)
            finished.set()
            writer.close()

        server = await gannet.start_server(handle, "127.0.0.1", 0)
        relay = Relay(server.addresses[0][1])
        port = await relay.start()
        try:
            reader, writer = await gannet.open_connection("127.0.0.1", port)
            writer.write(b"first ")
            await writer.drain()
            await asyncio.sleep(0.2)
            _, syn = relay.recorded[0]
            _, synack = relay.recorded[1]
            _, client_cid, syn_seg = decode(syn)
            _, server_cid, synack_seg = decode(synack)
            seq = (syn_seg.seq + 1 + 6) & 0xFFFFFFFF
            ack = (synack_seg.seq + 1) & 0xFFFFFFFF
            for flags, payload in ((RST | ACK, b""), (FIN | ACK, b""), (ACK, b""), (PSH | ACK, b"evil")):
                relay.send(encode(server_cid, client_cid, Segment(seq, ack, flags, 1000, payload)), "up")
            relay.send(encode(client_cid, server_cid, Segment(ack, seq, RST | ACK, 1000)), "down")
            await asyncio.sleep(0.3)
            writer.write(b"second")
            writer.write_eof()
            await asyncio.wait_for(finished.wait(), 10)
            assert bytes(got) == b"first second"
            assert server.endpoint.ep.security_stats.plaintext_dropped >= 4
            writer.close()
        finally:
            relay.close()
            server.close()

    asyncio.run(main())
