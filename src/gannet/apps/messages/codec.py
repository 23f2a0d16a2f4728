"""Pure message codecs: bytes in, messages out (and back). No I/O, no clock.

Two encodings of the same `Message` model share one stream-decoder interface
(`feed(data) -> list[Message]`, `eof()`):

Binary (the default), every integer big-endian::

    +---------+------+-------+----------+----------+-----------------+
    | length  | type | flags | sequence | checksum | payload         |
    | 4 bytes | 1    | 1     | 4 bytes  | 4 bytes  | `length` bytes  |
    +---------+------+-------+----------+----------+-----------------+

`length` counts the payload only (the header is always 14 bytes). `checksum`
is CRC32C over the first 10 header bytes followed by the payload. `flags`
bit 0 (`FLAG_MORE`) marks a fragment that is followed by more fragments of the
same message; the other bits must be zero.

JSON, newline-delimited: one compact object per line, ASCII only (so a raw
newline never appears inside an object)::

    {"version": "1.0", "type": "DATA", "seq": 1, "timestamp": 1712345678.25,
     "payload": "hello", "checksum": 907060870}

`payload` is a string when the payload bytes are UTF-8 (add
`"encoding": "base64"` otherwise); for control messages whose payload is a
JSON object (CONNECT, ACCEPT, ERROR...) it is that object. `checksum` is the
CRC32C of the payload bytes, `"more": true` marks a fragment. `timestamp` is
informational (Unix seconds) and is not part of message equality.

Any byte string given to a decoder either yields messages or raises
`CodecError` (or a subclass); after an error the decoder stays failed.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import struct
import time
from dataclasses import dataclass, field
from typing import Protocol

from ...wire.checksum import crc32c

PROTOCOL_VERSION = "1.0"
SUPPORTED_MAJOR = 1

HEADER = struct.Struct("!IBBII")
HEADER_SIZE = HEADER.size  # 14
FLAG_MORE = 0x01
MAX_SEQ = 0xFFFFFFFF

#: Largest payload a decoder accepts unless told otherwise (16 MiB).
DEFAULT_MAX_PAYLOAD = 16 * 1024 * 1024


class MessageType(enum.IntEnum):
    DATA = 0x01
    ACK = 0x02
    ERROR = 0x03
    KEEPALIVE = 0x04
    DISCONNECT = 0x05
    CONNECT = 0x10
    ACCEPT = 0x11


class CodecError(ValueError):
    """The byte stream is not a valid message stream."""


class ChecksumError(CodecError):
    """A frame's CRC32C does not match its contents."""


class FrameTooLarge(CodecError):
    """A frame announces (or a JSON line reaches) more than the allowed size."""


class UnsupportedVersion(CodecError):
    """A JSON message carries a protocol version this side does not speak."""


@dataclass(frozen=True)
class Message:
    type: MessageType
    seq: int = 0
    payload: bytes = b""
    more: bool = False
    timestamp: float | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.type, MessageType):
            object.__setattr__(self, "type", MessageType(self.type))
        if not 0 <= self.seq <= MAX_SEQ:
            raise ValueError(f"sequence number out of range: {self.seq}")
        if not isinstance(self.payload, bytes):
            object.__setattr__(self, "payload", bytes(self.payload))

    # Control messages carry a JSON object; these helpers keep it canonical.
    def json_body(self) -> dict:
        """The payload parsed as a JSON object (raises CodecError if it is not one)."""
        try:
            body = json.loads(self.payload.decode("utf-8")) if self.payload else {}
        except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
            raise CodecError(f"{self.type.name} payload is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise CodecError(f"{self.type.name} payload is not a JSON object")
        return body


def dump_body(body: dict) -> bytes:
    """Canonical bytes for a control payload: compact, sorted keys, ASCII."""
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("ascii")


def control(type: MessageType, body: dict | None = None, seq: int = 0) -> Message:
    return Message(type, seq, dump_body(body) if body else b"")


def checksum(data: bytes, value: int = 0) -> int:
    return crc32c(data, value)


class Decoder(Protocol):
    def feed(self, data: bytes) -> list[Message]: ...

    def eof(self) -> None: ...


class Codec(Protocol):
    name: str

    def encode(self, msg: Message) -> bytes: ...

    def decoder(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> Decoder: ...


# --------------------------------------------------------------------------- binary


def encode_binary(msg: Message) -> bytes:
    head = HEADER.pack(
        len(msg.payload), msg.type, FLAG_MORE if msg.more else 0, msg.seq, 0
    )[: HEADER_SIZE - 4]
    crc = checksum(msg.payload, checksum(head))
    return head + crc.to_bytes(4, "big") + msg.payload


class BinaryDecoder:
    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD):
        self.max_payload = max_payload
        self._buf = bytearray()
        self._failed: CodecError | None = None

    def _fail(self, exc: CodecError) -> CodecError:
        self._failed = exc
        self._buf.clear()
        return exc

    def feed(self, data: bytes) -> list[Message]:
        if self._failed is not None:
            raise self._failed
        self._buf += data
        out: list[Message] = []
        buf = self._buf
        pos = 0
        while len(buf) - pos >= HEADER_SIZE:
            length, mtype, flags, seq, crc = HEADER.unpack_from(buf, pos)
            if length > self.max_payload:
                raise self._fail(
                    FrameTooLarge(f"frame payload of {length} bytes exceeds limit {self.max_payload}")
                )
            if mtype not in _TYPES:
                raise self._fail(CodecError(f"unknown message type 0x{mtype:02x}"))
            if flags & ~FLAG_MORE:
                raise self._fail(CodecError(f"unknown flags 0x{flags:02x}"))
            end = pos + HEADER_SIZE + length
            if len(buf) < end:
                break
            payload = bytes(buf[pos + HEADER_SIZE : end])
            actual = checksum(payload, checksum(bytes(buf[pos : pos + HEADER_SIZE - 4])))
            if actual != crc:
                raise self._fail(
                    ChecksumError(f"checksum mismatch on seq {seq}: got 0x{crc:08x}, want 0x{actual:08x}")
                )
            out.append(Message(MessageType(mtype), seq, payload, bool(flags & FLAG_MORE)))
            pos = end
        if pos:
            del buf[:pos]
        return out

    def eof(self) -> None:
        if self._failed is not None:
            raise self._failed
        if self._buf:
            raise self._fail(CodecError(f"stream ended inside a frame ({len(self._buf)} bytes left)"))


_TYPES = frozenset(int(t) for t in MessageType)


class BinaryCodec:
    name = "binary"

    def encode(self, msg: Message) -> bytes:
        return encode_binary(msg)

    def decoder(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> BinaryDecoder:
        return BinaryDecoder(max_payload)


# --------------------------------------------------------------------------- JSON


def _payload_to_json(msg: Message) -> dict:
    data = msg.payload
    if msg.type is not MessageType.DATA and data:
        try:
            body = json.loads(data.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            body = None
        if isinstance(body, dict) and dump_body(body) == data:
            return {"payload": body}
    try:
        return {"payload": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"payload": base64.b64encode(data).decode("ascii"), "encoding": "base64"}


def encode_json(msg: Message) -> bytes:
    obj = {
        "version": PROTOCOL_VERSION,
        "type": msg.type.name,
        "seq": msg.seq,
        "timestamp": msg.timestamp if msg.timestamp is not None else round(time.time(), 6),
    }
    obj.update(_payload_to_json(msg))
    obj["checksum"] = checksum(msg.payload)
    if msg.more:
        obj["more"] = True
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode("ascii") + b"\n"


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def decode_json_line(line: bytes, max_payload: int = DEFAULT_MAX_PAYLOAD) -> Message:
    """Decode one JSON message (without its newline)."""
    try:
        obj = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CodecError(f"invalid JSON message: {exc}") from None
    if not isinstance(obj, dict):
        raise CodecError("JSON message is not an object")
    version = obj.get("version")
    if not isinstance(version, str):
        raise CodecError("JSON message has no version string")
    if version.split(".")[0] != str(SUPPORTED_MAJOR):
        raise UnsupportedVersion(
            f"unsupported protocol version {version!r} (this side speaks {PROTOCOL_VERSION})"
        )
    tname = obj.get("type")
    if not isinstance(tname, str) or tname not in MessageType.__members__:
        raise CodecError(f"unknown message type {tname!r}")
    seq = obj.get("seq", 0)
    if not _is_int(seq) or not 0 <= seq <= MAX_SEQ:
        raise CodecError(f"invalid sequence number {seq!r}")
    ts = obj.get("timestamp")
    if ts is not None and (isinstance(ts, bool) or not isinstance(ts, (int, float))):
        raise CodecError(f"invalid timestamp {ts!r}")
    more = obj.get("more", False)
    if not isinstance(more, bool):
        raise CodecError(f"invalid 'more' flag {more!r}")
    raw = obj.get("payload", "")
    encoding = obj.get("encoding")
    if isinstance(raw, dict):
        if encoding is not None:
            raise CodecError("an object payload takes no encoding")
        try:
            payload = dump_body(raw)
        except (ValueError, RecursionError) as exc:
            raise CodecError(f"invalid object payload: {exc}") from None
    elif isinstance(raw, str):
        if encoding is None:
            try:
                payload = raw.encode("utf-8")
            except UnicodeEncodeError:
                raise CodecError("payload string is not valid Unicode") from None
        elif encoding == "base64":
            try:
                payload = base64.b64decode(raw.encode("ascii"), validate=True)
            except (UnicodeEncodeError, binascii.Error, ValueError) as exc:
                raise CodecError(f"invalid base64 payload: {exc}") from None
        else:
            raise CodecError(f"unknown payload encoding {encoding!r}")
    else:
        raise CodecError("payload must be a string or an object")
    if len(payload) > max_payload:
        raise FrameTooLarge(f"payload of {len(payload)} bytes exceeds limit {max_payload}")
    crc = obj.get("checksum")
    if not _is_int(crc):
        raise CodecError("JSON message has no integer checksum")
    actual = checksum(payload)
    if crc != actual:
        raise ChecksumError(f"checksum mismatch on seq {seq}: got {crc}, want {actual}")
    return Message(MessageType[tname], seq, payload, more, float(ts) if ts is not None else None)


class JsonDecoder:
    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD):
        self.max_payload = max_payload
        self._buf = bytearray()
        self._failed: CodecError | None = None

    @property
    def max_line(self) -> int:
        # base64 growth (4/3) plus a generous allowance for the envelope.
        return self.max_payload * 4 // 3 + 4096 if self.max_payload < 2**40 else 2**62

    def feed(self, data: bytes) -> list[Message]:
        if self._failed is not None:
            raise self._failed
        self._buf += data
        out: list[Message] = []
        buf = self._buf
        pos = 0
        try:
            while True:
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    if len(buf) - pos > self.max_line:
                        raise FrameTooLarge(f"JSON line longer than {self.max_line} bytes")
                    break
                if nl - pos > self.max_line:
                    raise FrameTooLarge(f"JSON line longer than {self.max_line} bytes")
                out.append(decode_json_line(bytes(buf[pos:nl]), self.max_payload))
                pos = nl + 1
        except CodecError as exc:
            self._failed = exc
            self._buf.clear()
            raise
        if pos:
            del buf[:pos]
        return out

    def eof(self) -> None:
        if self._failed is not None:
            raise self._failed
        if self._buf:
            self._failed = CodecError(f"stream ended inside a JSON line ({len(self._buf)} bytes left)")
            self._buf.clear()
            raise self._failed


class JsonCodec:
    name = "json"

    def encode(self, msg: Message) -> bytes:
        return encode_json(msg)

    def decoder(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> JsonDecoder:
        return JsonDecoder(max_payload)


# --------------------------------------------------------------------------- selection

CODECS: dict[str, Codec] = {"binary": BinaryCodec(), "json": JsonCodec()}
FORMATS = tuple(CODECS)


def get_codec(name: str) -> Codec:
    try:
        return CODECS[name]
    except KeyError:
        raise ValueError(f"unknown format {name!r} (choose from {', '.join(FORMATS)})") from None


def detect_format(first_byte: int) -> str:
    """Which encoding a stream uses, from its first byte.

    A JSON stream starts with '{'; a binary one with the top byte of the
    payload length, which is 0x7B only for lengths of 2 GiB and more.
    """
    return "json" if first_byte == 0x7B else "binary"


class AutoDecoder:
    """Picks binary or JSON from the first byte, then delegates."""

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD):
        self._max_payload = max_payload
        self.inner: Decoder | None = None
        self.format: str | None = None

    @property
    def max_payload(self) -> int:
        return self._max_payload

    @max_payload.setter
    def max_payload(self, value: int) -> None:
        self._max_payload = value
        if self.inner is not None:
            self.inner.max_payload = value  # type: ignore[attr-defined]

    def feed(self, data: bytes) -> list[Message]:
        if self.inner is None:
            if not data:
                return []
            self.format = detect_format(data[0])
            self.inner = get_codec(self.format).decoder(self._max_payload)
        return self.inner.feed(data)

    def eof(self) -> None:
        if self.inner is not None:
            self.inner.eof()


def decode_all(data: bytes, fmt: str = "binary", max_payload: int = DEFAULT_MAX_PAYLOAD) -> list[Message]:
    """Decode a complete byte string (partial trailing frames are an error)."""
    dec = AutoDecoder(max_payload) if fmt == "auto" else get_codec(fmt).decoder(max_payload)
    out = dec.feed(data)
    dec.eof()
    return out
