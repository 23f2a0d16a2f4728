"""Connections opened through a UDP relay that drops a quarter of all datagrams,
both ways: handshakes (with the handshake ACK riding on the client's first
write), data and echoes all get through, every byte verified.

Each client's relay draws each direction's losses from a random generator
of its own (seeded by the client's number), so what it drops does not depend on how
the clients' datagrams interleave, and it never drops more than
MAX_BURST datagrams in a row one way: with independent losses a handshake
fails its 30-second connect timeout (five SYNs) now and then by chance
alone, which said nothing about the protocol."""

from __future__ import annotations

import asyncio
import random

import gannet

LOSS = 0.25
MAX_BURST = 3
CLIENTS = 10
SIZE = 20000


class _Loss:
    """One direction's losses: probability LOSS, at most MAX_BURST in a row."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.run = 0
        self.seen = 0
        self.dropped = 0

    def drop(self) -> bool:
        self.seen += 1
        if self.run < MAX_BURST and self.rng.random() < LOSS:
            self.run += 1
            self.dropped += 1
            return True
        self.run = 0
        return False


async def _relay(loop, server_port: int, seed: int, losses: list) -> int:
    """A relay for one client: datagrams from the client go to the server and
    back, each way losing as `_Loss` says. Returns the port to connect to."""
    to_server, to_client = _Loss(random.Random(2 * seed)), _Loss(random.Random(2 * seed + 1))
    losses += [to_server, to_client]

    class Down(asyncio.DatagramProtocol):
        client = None

        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            self.client = addr
            if not to_server.drop():
                up.transport.sendto(data, ("127.0.0.1", server_port))

    class Up(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            if down.client is not None and not to_client.drop():
                down.transport.sendto(data, down.client)

    down, up = Down(), Up()
    await loop.create_datagram_endpoint(lambda: down, local_addr=("127.0.0.1", 0))
    await loop.create_datagram_endpoint(lambda: up, local_addr=("127.0.0.1", 0))
    return down.transport.get_extra_info("sockname")[1]


def test_connections_through_a_lossy_relay_all_complete():
    losses: list[_Loss] = []

    async def main():
        loop = asyncio.get_running_loop()

        async def echo(reader, writer):
            try:
                writer.write(await reader.readexactly(SIZE))
                await writer.drain()
                await reader.read()
            finally:
                writer.close()

        server = await gannet.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]

        async def client(i: int) -> bytes:
            reader, writer = await gannet.open_connection("127.0.0.1", await _relay(loop, port, 4000 + i, losses))
            data = bytes([i]) * SIZE
            writer.write(data)  # the first write also carries the handshake's ACK
            await writer.drain()
            got = await reader.readexactly(SIZE)
            writer.close()
            return got == data

        try:
            results = await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(CLIENTS))), 90)
        finally:
            server.close()
        assert results == [True] * CLIENTS

    asyncio.run(main())
    seen, dropped = sum(x.seen for x in losses), sum(x.dropped for x in losses)
    assert dropped >= 0.15 * seen, (dropped, seen)  # the relays did lose datagrams
