"""The encrypted envelope of a Gannet datagram (docs/security.md).

Once a connection's key exchange is done, every datagram it sends is the
plaintext datagram of docs/protocol.md, less its CRC32C trailer, sealed by
an AEAD under a 16-byte header that is authenticated, not encrypted:

     0: PROTECTED (8)   flags (8): bit 0 the key phase   reserved, zero (16)
     4: destination connection ID (32)
     8: packet number (64)
    16: ciphertext of the inner datagram (its header and payload)
   N-16: AEAD tag

The destination ID stays at bytes 4-8, where both plaintext forms have it,
so routing and the local too-big report read it the same way. The tag does
the CRC's job (and an attacker's alterations are caught too); the inner
header - sequence and acknowledgment numbers, flags, window, options - is
hidden. Compared with the plaintext short form a data datagram carries
OVERHEAD more bytes of framing.

ALERT is the one unauthenticated message besides the handshake: an
8-byte datagram that tells a peer still in its handshake why it was
refused (an insecure peer, a wrong code), so that it fails at once with
that reason instead of timing out. A peer accepts it only during its
handshake, so it can do no more than dropping the handshake would.

The key exchange messages ride on the SYN and the SYN-ACK as option
OPT_KEY_EXCHANGE (kind 64, in the range docs/protocol.md reserved for it).
"""

from __future__ import annotations

import struct

from .datagram import TRAILER_SIZE, VERSION

PROTECTED = 0x40 | VERSION  # neither plaintext form: an old decoder rejects it
ALERT = 0x50 | VERSION
HEADER = struct.Struct("!BBHIQ")
HEADER_SIZE = HEADER.size  # 16
TAG_SIZE = 16
OVERHEAD = HEADER_SIZE + TAG_SIZE - TRAILER_SIZE  # 28: what sealing adds to a datagram
KEY_PHASE = 0x01
OPT_KEY_EXCHANGE = 64
# The longest option value: one length byte (docs/protocol.md, Options).
MAX_KEY_EXCHANGE = 255

_ALERT = struct.Struct("!BBBBI")
ALERT_SIZE = _ALERT.size  # 8

# Alert codes and what the receiving side is told.
ALERT_ENCRYPTION_REQUIRED = 1
ALERT_PEER_INSECURE = 2
ALERT_HANDSHAKE_FAILED = 3
ALERT_MODE_MISMATCH = 4
ALERT_MALFORMED = 5


def seal_header(key_phase: int, dst_cid: int, pn: int) -> bytes:
    return HEADER.pack(PROTECTED, key_phase & KEY_PHASE, 0, dst_cid, pn)


def parse_header(data: bytes | bytearray | memoryview) -> tuple[int, int, int] | None:
    """(key_phase, dst_cid, packet number) of a protected datagram, or None
    when it is too short to be one or its reserved bits are set."""
    if len(data) < HEADER_SIZE + TAG_SIZE:
        return None
    form, flags, reserved, dst, pn = HEADER.unpack_from(data)
    if form != PROTECTED or flags & ~KEY_PHASE or reserved:
        return None
    return flags, dst, pn


def encode_alert(dst_cid: int, code: int, detail: int = 0) -> bytes:
    return _ALERT.pack(ALERT, code, detail, 0, dst_cid)


def decode_alert(data: bytes | bytearray | memoryview) -> tuple[int, int, int] | None:
    """(dst_cid, code, detail), or None for anything that is not an alert."""
    if len(data) != ALERT_SIZE:
        return None
    form, code, detail, reserved, dst = _ALERT.unpack(bytes(data))
    if form != ALERT or reserved:
        return None
    return dst, code, detail
