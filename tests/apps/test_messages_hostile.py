"""The message server against clients that never finish their messages (issue 12, finding 8)."""

import asyncio

from gannet.apps.messages import Limits, Message, MessageType
from gannet.apps.messages.negotiation import STEP

from test_messages_session import Raw, run, start


async def fragment(raw, seq, payload, more):
    raw.send(Message(MessageType.DATA, seq, payload, more=more))
    return await raw.recv()


def test_unfinished_fragments_are_limited_across_sessions():
    async def main():
        server = await start(limits=Limits(max_packet_size=1000), max_buffered_bytes=10_000)
        first, second = await Raw.open(server), await Raw.open(server)
        await first.handshake(operation_mode=STEP, max_packet_size=1000)
        await second.handshake(operation_mode=STEP, max_packet_size=1000)
        for seq in range(1, 7):  # 6000 bytes held for the first session
            assert (await fragment(first, seq, b"a" * 1000, True)).type is MessageType.ACK
        assert server.buffered == 6000
        for seq in range(1, 5):  # 4000 more: exactly the limit
            assert (await fragment(second, seq, b"b" * 1000, True)).type is MessageType.ACK
        reply = await fragment(second, 5, b"b" * 1000, True)  # one byte too many
        assert reply.type is MessageType.ERROR
        assert "unfinished fragmented messages (limit 10000)" in reply.json_body()["reason"]
        while server.buffered != 6000:  # the second session's bytes are let go
            await asyncio.sleep(0.01)
        # The first one finishes its message normally.
        assert (await fragment(first, 7, b"end", False)).type is MessageType.ACK
        assert server.received == [b"a" * 6000 + b"end"] and server.buffered == 0
        server.close()
        await server.wait_closed()
    run(main())
