"""readexactly(n) larger than twice the reader's limit, with the data already
held by the connection: the reader resumes and gets it (it used to wait
forever behind a zero window)."""

import asyncio
import os

import pytest

import gannet

pytestmark = pytest.mark.timeout(60)


def test_readexactly_beyond_twice_the_limit():
    data = os.urandom(3_000_000)

    async def main():
        got = asyncio.get_running_loop().create_future()

        async def handle(reader, writer):
            got.set_result(await reader.readexactly(len(data)))
            writer.close()

        server = await gannet.start_server(handle, "127.0.0.1", 0, limit=64 * 1024)
        port = server.addresses[0][1]
        _, w = await gannet.open_connection("127.0.0.1", port)
        w.write(data)
        await w.drain()
        body = await asyncio.wait_for(got, 30)
        w.close()
        server.close()
        return body

    assert asyncio.run(main()) == data
