"""Small helpers over asyncio streams."""

from __future__ import annotations

import asyncio

from ...io.reader import ChunkReader
from .protocol import MAX_LINE, ProtocolError


async def read_line(reader: asyncio.StreamReader | ChunkReader, max_len: int = MAX_LINE) -> bytes:
    """One line including its "\\n", longer than the reader's limit if need be.

    Returns what there is (without "\\n") at EOF; ProtocolError beyond max_len.
    """
    parts: list[bytes] = []
    total = 0
    while True:
        try:
            part = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            parts.append(exc.partial)
            return b"".join(parts)
        except asyncio.LimitOverrunError as exc:
            part = await reader.readexactly(exc.consumed)
            parts.append(part)
            total += len(part)
            if total > max_len:
                raise ProtocolError("line too long") from None
            continue
        total += len(part)
        if total > max_len:
            raise ProtocolError("line too long")
        parts.append(part)
        return b"".join(parts)
