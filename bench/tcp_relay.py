"""A plain asyncio TCP relay: `python bench/tcp_relay.py LISTEN_PORT TARGET_PORT`.

The baseline of bench/tunnel_redis.py: what forwarding costs in asyncio
with streams and nothing else (read up to 64 KiB, write, drain; EOF passed
on). It runs on the loop Gannet's commands use (uvloop when installed,
unless GANNET_NO_UVLOOP=1), so the comparison with `gannet tunnel` is
loop for loop.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()


def relay_to(target: int):
    """The connection handler of a relay to 127.0.0.1:`target`."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            t_reader, t_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            writer.close()
            return
        for w in (writer, t_writer):
            w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(pipe(reader, t_writer), pipe(t_reader, writer))
        writer.close()
        t_writer.close()

    return handle


async def main(listen: int, target: int) -> None:
    server = await asyncio.start_server(relay_to(target), "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


def loop_factory():
    if os.environ.get("GANNET_NO_UVLOOP", "").strip().lower() not in ("", "0", "no", "false", "off"):
        return asyncio.new_event_loop()
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main(int(sys.argv[1]), int(sys.argv[2])))
