"""Message rate of step-by-step vs burst mode over the stream transport in use.

Runs a message server and one client in this process (one event loop, loopback)
and prints messages/s for each mode and the burst/step ratio.

    .venv/bin/python bench/messages_rate.py [--count N] [--size BYTES] [--window N]
                                            [--format binary|json] [--transport auto|gannet|tcp]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from gannet.apps.messages import BURST, STEP, connect, serve
from gannet.apps.messages.transport import TRANSPORTS, resolve


async def measure(mode: str, args: argparse.Namespace, open_connection, start_server) -> float:
    server = await serve(lambda session, data: None, "127.0.0.1", 0, start_server=start_server)
    host, port = server.address
    payload = b"m" * args.size
    client = await connect(host, port, mode=mode, window_size=args.window, format=args.format,
                           max_packet_size=max(args.size, 16), open_connection=open_connection)
    for _ in range(min(100, args.count)):  # warm up
        await client.send(payload)
    await client.wait_acked()
    t0 = time.perf_counter()
    for _ in range(args.count):
        await client.send(payload)
    await client.wait_acked()
    elapsed = time.perf_counter() - t0
    await client.disconnect()
    server.close()
    await server.wait_closed()
    return args.count / elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=5000)
    p.add_argument("--size", type=int, default=64, help="payload bytes per message")
    p.add_argument("--window", type=int, default=32, help="burst window")
    p.add_argument("--format", choices=("binary", "json"), default="binary")
    p.add_argument("--transport", choices=TRANSPORTS, default="auto")
    p.add_argument("--repeat", type=int, default=3, help="runs per mode; the best is reported")
    args = p.parse_args()
    name, open_connection, start_server = resolve(args.transport)
    rates = {}
    for mode in (STEP, BURST):
        rates[mode] = max(asyncio.run(measure(mode, args, open_connection, start_server))
                          for _ in range(args.repeat))
    print(f"transport={name} format={args.format} count={args.count} size={args.size} "
          f"window={args.window}")
    print(f"step-by-step: {rates[STEP]:10.0f} messages/s")
    print(f"burst:        {rates[BURST]:10.0f} messages/s")
    print(f"burst/step:   {rates[BURST] / rates[STEP]:10.2f}x")


if __name__ == "__main__":
    main()
