"""A UDP relay on loopback that plays the on-path attacker: every datagram
between one client and a server passes through `tamper`, which may record,
alter, drop, replay or inject (return the list of datagrams to forward).
Traffic only to 127.0.0.1; the relay lives as long as its loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

Tamper = Callable[[bytes, str], list[bytes]]  # (datagram, "up" | "down") -> to forward


class Relay:
    def __init__(self, server_port: int, tamper: Tamper | None = None) -> None:
        self.server = ("127.0.0.1", server_port)
        self.tamper = tamper
        self.recorded: list[tuple[str, bytes]] = []
        self.client: tuple | None = None
        self._down = self._up = None

    async def start(self) -> int:
        """Bind; returns the port clients connect to."""
        loop = asyncio.get_running_loop()
        relay = self

        class Down(asyncio.DatagramProtocol):  # faces the client
            def connection_made(self, transport):
                relay._down = transport

            def datagram_received(self, data, addr):
                relay.client = addr
                relay._forward(data, "up")

        class Up(asyncio.DatagramProtocol):  # faces the server
            def connection_made(self, transport):
                relay._up = transport

            def datagram_received(self, data, addr):
                relay._forward(data, "down")

        await loop.create_datagram_endpoint(Down, local_addr=("127.0.0.1", 0))
        await loop.create_datagram_endpoint(Up, local_addr=("127.0.0.1", 0))
        return self._down.get_extra_info("sockname")[1]

    def _forward(self, data: bytes, direction: str) -> None:
        self.recorded.append((direction, data))
        out = self.tamper(data, direction) if self.tamper else [data]
        for d in out:
            self.send(d, direction)

    def send(self, data: bytes, direction: str) -> None:
        """Inject `data` as if it came from the other side."""
        if direction == "up":
            self._up.sendto(data, self.server)
        elif self.client is not None:
            self._down.sendto(data, self.client)

    def close(self) -> None:
        for t in (self._down, self._up):
            if t is not None:
                t.close()
