"""Gannet's message layer: framed, acknowledged messages over a reliable byte stream.

- `codec`: pure binary and JSON encodings of `Message` (incremental decoders)
- `negotiation`: pure parameter negotiation and fragmentation
- `session`: asyncio client and server sessions over any asyncio-shaped stream
- `transport`: picks gannet streams when available, else asyncio TCP

See docs/messages.md for the wire formats and the protocol.

Names load on first use (PEP 562): a command line parser that takes the
format and mode names from `codec` and `negotiation` loads no asyncio.
"""

from __future__ import annotations

TYPE_CHECKING = False  # (typing.TYPE_CHECKING without importing typing)
if TYPE_CHECKING:
    from .codec import (
        FLAG_MORE, FORMATS, HEADER_SIZE, PROTOCOL_VERSION, AutoDecoder, BinaryCodec, BinaryDecoder,
        ChecksumError, CodecError, FrameTooLarge, JsonCodec, JsonDecoder, Message, MessageType,
        UnsupportedVersion, decode_all, encode_binary, encode_json, get_codec,
    )
    from .negotiation import (
        BURST, MODES, STEP, Limits, Offer, Params, Reassembler, Refused, negotiate, split,
    )
    from .session import (
        ClientSession, MessageServer, PeerError, ProtocolError, ServerSession, SessionClosed,
        SessionError, SessionRefused, SessionTimeout, connect, serve,
    )

_HOMES = {
    "FLAG_MORE": "codec", "FORMATS": "codec", "HEADER_SIZE": "codec", "PROTOCOL_VERSION": "codec",
    "AutoDecoder": "codec", "BinaryCodec": "codec", "BinaryDecoder": "codec",
    "ChecksumError": "codec", "CodecError": "codec", "FrameTooLarge": "codec",
    "JsonCodec": "codec", "JsonDecoder": "codec", "Message": "codec", "MessageType": "codec",
    "UnsupportedVersion": "codec", "decode_all": "codec", "encode_binary": "codec",
    "encode_json": "codec", "get_codec": "codec",
    "BURST": "negotiation", "MODES": "negotiation", "STEP": "negotiation", "Limits": "negotiation",
    "Offer": "negotiation", "Params": "negotiation", "Reassembler": "negotiation",
    "Refused": "negotiation", "negotiate": "negotiation", "split": "negotiation",
    "ClientSession": "session", "MessageServer": "session", "PeerError": "session",
    "ProtocolError": "session", "ServerSession": "session", "SessionClosed": "session",
    "SessionError": "session", "SessionRefused": "session", "SessionTimeout": "session",
    "connect": "session", "serve": "session",
}

__all__ = [*_HOMES]


from ..._lazy import lazy_getattr

__getattr__ = lazy_getattr(__name__, _HOMES, globals())


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
