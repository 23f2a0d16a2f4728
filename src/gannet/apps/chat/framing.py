"""The chat's message framing: one frame = type (1 byte), length (4 bytes), payload.

    0      1              5
    +------+--------------+------------------ ... --+
    | type | length (BE)  | payload (length bytes)  |
    +------+--------------+------------------ ... --+

Control frames carry a UTF-8 JSON object; CHUNK frames carry a 4-byte
transfer id followed by raw file bytes. Pure code: no I/O here, so it is
tested on its own.
"""

from __future__ import annotations

import enum
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass

HEADER = struct.Struct("!BI")
MAX_PAYLOAD = 1 << 20  # 1 MiB: larger frames mean a broken or hostile peer
PROTOCOL_VERSION = 1


class FrameType(enum.IntEnum):
    HELLO = 1  # {"name", "nonce", "version", "connected"}: first frame on every connection
    SELECT = 2  # {}: the leader keeps this connection (see rendezvous)
    MESSAGE = 3  # {"text", "time"}
    OFFER = 4  # {"id", "name", "size"}: a file transfer starts
    CHUNK = 5  # id (4 bytes) + file bytes
    END = 6  # {"id", "sha256"}: all chunks sent
    RESULT = 7  # {"id", "ok", "reason"}: the receiver's verdict
    ABORT = 8  # {"id", "reason"}: the sender gave up
    BYE = 9  # {}: clean quit (the stream then ends)


class FramingError(ValueError):
    """The byte stream is not a valid sequence of frames."""


@dataclass(frozen=True)
class Frame:
    type: FrameType
    payload: bytes

    def json(self) -> dict:
        try:
            obj = json.loads(self.payload.decode("utf-8"))
            # An escaped lone surrogate ("\\ud800") parses, but is no text:
            # it could not be printed, saved as a name or sent back.
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except (ValueError, RecursionError) as exc:  # UnicodeError is a ValueError
            raise FramingError(f"{self.type.name} frame: invalid JSON payload") from exc
        if not isinstance(obj, dict):
            raise FramingError(f"{self.type.name} frame: payload is not an object")
        return obj

    def chunk(self) -> tuple[int, bytes]:
        if len(self.payload) < 4:
            raise FramingError("CHUNK frame shorter than its transfer id")
        return int.from_bytes(self.payload[:4], "big"), self.payload[4:]


def encode(ftype: FrameType, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"frame payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return HEADER.pack(int(ftype), len(payload)) + payload


def encode_json(ftype: FrameType, obj: dict) -> bytes:
    return encode(ftype, json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def encode_chunk(transfer_id: int, data: bytes) -> bytes:
    return encode(FrameType.CHUNK, transfer_id.to_bytes(4, "big") + data)


class Decoder:
    """Incremental decoder: `feed` bytes as they arrive, iterate complete frames."""

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        self._buf = bytearray()
        self._max = max_payload

    def feed(self, data: bytes) -> Iterator[Frame]:
        buf = self._buf
        buf += data
        pos = 0
        try:
            while len(buf) - pos >= HEADER.size:
                code, length = HEADER.unpack_from(buf, pos)
                try:
                    ftype = FrameType(code)
                except ValueError:
                    raise FramingError(f"unknown frame type {code}") from None
                if length > self._max:
                    raise FramingError(f"frame of {length} bytes exceeds {self._max}")
                end = pos + HEADER.size + length
                if len(buf) < end:
                    break
                yield Frame(ftype, bytes(buf[pos + HEADER.size:end]))
                pos = end
        finally:
            del buf[:pos]

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buf)


async def read_frame(reader, max_payload: int = MAX_PAYLOAD) -> Frame | None:
    """Read one frame from an asyncio StreamReader; None at a clean end of stream.

    Raises FramingError on garbage, asyncio.IncompleteReadError if the stream
    ends inside a frame.
    """
    import asyncio

    try:
        header = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise
    code, length = HEADER.unpack(header)
    try:
        ftype = FrameType(code)
    except ValueError:
        raise FramingError(f"unknown frame type {code}") from None
    if length > max_payload:
        raise FramingError(f"frame of {length} bytes exceeds {max_payload}")
    payload = await reader.readexactly(length) if length else b""
    return Frame(ftype, payload)
