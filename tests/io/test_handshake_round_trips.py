"""Round trips of the handshake over real sockets, counted (not timed) by a
relay that records every datagram: with the key trusted on first use, pinned
by fingerprint, a PSK or a code, the client's first data leaves in the third
flight (SYN, SYN-ACK, data), as it does in clear. Loopback only, bounded."""

from __future__ import annotations

import asyncio

import pytest
from udp_relay import Relay

import gannet
from gannet.wire.protected import PROTECTED

pytestmark = pytest.mark.timeout(60)

DATA = b"d" * 1200  # larger than any handshake datagram: its datagram is recognisable by size


def _settings(mode: str, tmp_path) -> dict:
    if mode == "insecure":
        return {"insecure": True}
    if mode == "trust on first use":
        return {}
    if mode == "fingerprint":
        from gannet.crypto.identity import fingerprint, load_identity, public_key

        return {"peer_key": fingerprint(public_key(load_identity()))}
    if mode == "psk":
        from gannet.crypto.psk import generate_psk_file

        path = tmp_path / "k.psk"
        generate_psk_file(path)
        return {"psk_file": str(path)}
    return {"code": "7-guitar-october"}


async def _flights_until_data(settings: dict) -> tuple[int, list[str]]:
    got = asyncio.Event()

    async def handle(reader, writer):
        await reader.readexactly(len(DATA))
        got.set()
        writer.close()

    server_settings = {k: v for k, v in settings.items() if k != "peer_key"}
    server = await gannet.start_server(handle, "127.0.0.1", 0, **server_settings)
    relay = Relay(server.addresses[0][1])
    port = await relay.start()
    try:
        _, writer = await asyncio.wait_for(gannet.open_connection("127.0.0.1", port, **settings), 10)
        writer.write(DATA)
        await asyncio.wait_for(got.wait(), 10)
        writer.close()
    finally:
        relay.close()
        server.close()
    first_data = next(i for i, (d, data) in enumerate(relay.recorded)
                      if d == "up" and len(data) >= len(DATA))
    directions = [d for d, _ in relay.recorded[: first_data + 1]]
    flights = sum(1 for i in range(len(directions)) if i == 0 or directions[i] != directions[i - 1])
    return flights, [("sealed" if data[0] == PROTECTED else "clear") for _, data in relay.recorded[:3]]


@pytest.mark.parametrize("mode", ["trust on first use", "fingerprint", "psk", "code"])
def test_the_data_leaves_in_the_third_flight_as_in_clear(mode, tmp_path):
    plain, kinds = asyncio.run(_flights_until_data(_settings("insecure", tmp_path)))
    assert plain == 3 and kinds == ["clear"] * 3
    flights, kinds = asyncio.run(_flights_until_data(_settings(mode, tmp_path)))
    assert flights == plain  # no extra round trip (the issue allows one for a code)
    assert kinds == ["clear", "clear", "sealed"]  # SYN and SYN-ACK carry the key exchange
