"""Gannet's message layer: framed, acknowledged messages over a reliable byte stream.

- `codec`: pure binary and JSON encodings of `Message` (incremental decoders)
- `negotiation`: pure parameter negotiation and fragmentation
- `session`: asyncio client and server sessions over any asyncio-shaped stream
- `transport`: picks gannet streams when available, else asyncio TCP

See docs/messages.md for the wire formats and the protocol.
"""

from .codec import (
    FLAG_MORE,
    FORMATS,
    HEADER_SIZE,
    PROTOCOL_VERSION,
    AutoDecoder,
    BinaryCodec,
    BinaryDecoder,
    ChecksumError,
    CodecError,
    FrameTooLarge,
    JsonCodec,
    JsonDecoder,
    Message,
    MessageType,
    UnsupportedVersion,
    decode_all,
    encode_binary,
    encode_json,
    get_codec,
)
from .negotiation import BURST, MODES, STEP, Limits, Offer, Params, Reassembler, Refused, negotiate, split
from .session import (
    ClientSession,
    MessageServer,
    PeerError,
    ProtocolError,
    ServerSession,
    SessionClosed,
    SessionError,
    SessionRefused,
    SessionTimeout,
    connect,
    serve,
)

__all__ = [
    "FLAG_MORE", "FORMATS", "HEADER_SIZE", "PROTOCOL_VERSION",
    "AutoDecoder", "BinaryCodec", "BinaryDecoder", "ChecksumError", "CodecError",
    "FrameTooLarge", "JsonCodec", "JsonDecoder", "Message", "MessageType",
    "UnsupportedVersion", "decode_all", "encode_binary", "encode_json", "get_codec",
    "BURST", "MODES", "STEP", "Limits", "Offer", "Params", "Reassembler", "Refused",
    "negotiate", "split",
    "ClientSession", "MessageServer", "PeerError", "ProtocolError", "ServerSession",
    "SessionClosed", "SessionError", "SessionRefused", "SessionTimeout", "connect", "serve",
]
