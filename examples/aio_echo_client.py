"""Echo client over Gannet asyncio streams: sends lines, prints the echoes.

    python examples/aio_echo_client.py [host] [port] [message ...]
"""

import asyncio
import sys

import gannet


async def main():
    host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 9000
    messages = sys.argv[3:] or ["Hello, Gannet!"]
    reader, writer = await gannet.open_connection(host, port)
    for message in messages:
        writer.write(message.encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 10)
        print(line.decode().rstrip("\n"))
    writer.write_eof()
    assert await reader.read() == b""
    writer.close()
    await writer.wait_closed()


if __name__ == "__main__":
    asyncio.run(main())
