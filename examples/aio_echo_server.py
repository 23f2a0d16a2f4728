"""Echo server over Gannet asyncio streams.

    python examples/aio_echo_server.py [host] [port]
"""

import asyncio
import sys

import gannet


async def handle(reader, writer):
    peer = writer.get_extra_info("peername")
    print(f"Connection from {peer}")
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError as exc:
        print(f"{peer}: {exc!r}")
    finally:
        writer.close()
        await writer.wait_closed()
    print(f"Closed {peer}")


async def main():
    host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 9000
    server = await gannet.start_server(handle, host, port)
    print(f"Listening on {server.addresses[0][0]}:{server.addresses[0][1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
