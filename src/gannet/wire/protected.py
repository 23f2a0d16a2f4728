"""The encrypted envelope of a Gannet datagram (docs/security.md).

Once a connection's key exchange is done, every datagram it sends is the
plaintext datagram of docs/protocol.md sealed by an AEAD under an 8-byte
header that is authenticated, not encrypted:

     0: PROTECTED (8)
     1: key phase (1)   packet number, its low PN_BITS (23) bits
     4: destination connection ID (32)
     8: ciphertext of the inner datagram's bytes 8 to its CRC32C trailer,
        then of its flags byte (bit 7 set: the short form) and bytes 2-3
   N-16: AEAD tag

What the inner datagram carries that the header already says is left out
(QUIC's short header works the same way): its first byte (the version,
which PROTECTED states, and the form, a spare bit of the flags byte), its
destination connection ID, and its CRC32C (the tag does the CRC's job,
and an attacker's alterations are caught too). The three bytes the inner
header has before its destination ID (flags, and the window or the long
form's header length) ride at the end of the plaintext, so that what is
encrypted is one contiguous run of the inner datagram and a 3-byte tail,
and what is opened is written back in place (`restore_inner`). The inner
header - sequence and acknowledgment numbers, flags, window, options - is
hidden.

The packet number on the wire is truncated, as QUIC's is (RFC 9000
section 17.1): the receiver reconstructs the full number from the largest
it has opened (`decode_packet_number`, RFC 9000 Appendix A.3), and the
nonce uses the full number, so a number reconstructed wrong fails the tag.
23 bits allow 2^22 datagrams (6 GB of 1,472-byte datagrams) lost in a row
or reordered before a number is reconstructed wrong; the replay window
refuses anything older than 2,048 anyway.

The destination ID stays at bytes 4-8, where both plaintext forms have it,
so routing and the local too-big report read it the same way. Compared
with the plaintext datagram a sealed one is OVERHEAD (15) bytes longer.

A stateless reset (RFC 9000 section 10.3 is the model) looks like a short
sealed datagram: PROTECTED, three bytes of random, the destination ID of
the connection it ends (the ID the side that lost it had), random bytes,
and in its last RESET_TOKEN_SIZE bytes the token that side gave its peer,
encrypted, in the handshake. It is RESET_SIZE bytes, one less than the
smallest real sealed datagram (a bare ACK), so a receiver tells it by its
size, and no reset is ever sent in answer to one (no two sides that both
lost their state can keep each other busy).

After the handshake the security layer speaks for itself in control
segments (`encode_control`), sealed like any datagram: the long form with
no control bit set, carrying a path challenge or response (RFC 9000
section 8.2) or the sender's stateless reset token. The receiving security
layer takes them; they never reach a connection.

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
from typing import Final

from .datagram import SHORT_FORM, TRAILER_SIZE, VERSION, encode
from .segment import Segment

PROTECTED: Final = 0x40 | VERSION  # neither plaintext form: an old decoder rejects it
ALERT: Final = 0x50 | VERSION
HEADER: Final = struct.Struct("!II")  # PROTECTED, key phase and truncated packet number; destination ID
HEADER_SIZE: Final = HEADER.size  # 8
TAG_SIZE: Final = 16
PN_BITS: Final = 23
PN_MASK: Final = (1 << PN_BITS) - 1
_PN_LIMIT: Final = 1 << 62  # RFC 9000's largest packet number
KEY_PHASE: Final = 0x01  # the key phase as seal_header takes it and parse_header gives it
_KEY_PHASE_BIT: Final = 1 << PN_BITS  # where it is in the first 32-bit word
# What the sealed plaintext leaves out of the inner datagram: its first
# byte and its destination ID (the header says both), and its CRC trailer.
ELIDED: Final = 5
TAIL: Final = 3  # the inner flags byte and bytes 2-3, moved to the end of the plaintext
SHORT_BIT: Final = 0x80  # in the sealed flags byte: the inner datagram is the short form
MIN_SIZE: Final = HEADER_SIZE + TAIL + TAG_SIZE  # the shortest datagram parse_header takes
OVERHEAD: Final = HEADER_SIZE + TAG_SIZE - TRAILER_SIZE - ELIDED  # 15: what sealing adds to a datagram
# The smallest sealed datagram a connection sends: a bare ACK in the short
# form (20 bytes of header), sealed.
MIN_SEALED: Final = HEADER_SIZE + 20 - ELIDED + TAG_SIZE  # 39
RESET_TOKEN_SIZE: Final = 16
RESET_SIZE: Final = MIN_SEALED - 1  # 38: a stateless reset; never answered with one
RESET_FILLER: Final = RESET_SIZE - 1 - 4 - RESET_TOKEN_SIZE  # 17
OPT_KEY_EXCHANGE: Final = 64
# The security layer's own messages after the handshake ride in a sealed
# control segment: an inner datagram of the long form with no control bit
# set (CONTROL_FLAGS; a connection's segments all carry ACK or SYN, so none
# is taken for one), carrying options of the range docs/protocol.md
# reserves for security (65-95). The receiving security layer takes it,
# and the connection never sees it.
CONTROL_FLAGS: Final = 0
OPT_PATH_CHALLENGE: Final = 66  # 8 unpredictable bytes (RFC 9000 section 19.17, PATH_CHALLENGE)
OPT_PATH_RESPONSE: Final = 67  # the 8 bytes of the challenge it answers (19.18, PATH_RESPONSE)
OPT_RESET_TOKEN: Final = 68  # the sender's stateless reset token for its own connection ID (as 19.15 carries one)
PATH_DATA_SIZE: Final = 8
# The longest option value: one length byte (docs/protocol.md, Options).
MAX_KEY_EXCHANGE: Final = 255

# The envelope's 3-byte tail (the inner flags byte, bit 7 the short form,
# and bytes 2-3), and the inner datagram's first 8 bytes rebuilt from it
# (form, flags, bytes 2-3, destination ID): one struct call each, per row.
_TAIL: Final = struct.Struct("!BBB")
_INNER_HEAD: Final = struct.Struct("!BBBBI")
_ALERT: Final = struct.Struct("!BBBBI")
ALERT_SIZE: Final = _ALERT.size  # 8

# Alert codes and what the receiving side is told.
ALERT_ENCRYPTION_REQUIRED: Final = 1
ALERT_PEER_INSECURE: Final = 2
ALERT_HANDSHAKE_FAILED: Final = 3
ALERT_MODE_MISMATCH: Final = 4
ALERT_MALFORMED: Final = 5


def seal_header(key_phase: int, dst_cid: int, pn: int, form: int = PROTECTED) -> bytes:
    """The header of a datagram sealed with packet number `pn` (its low
    PN_BITS go on the wire)."""
    return HEADER.pack(form << 24 | (key_phase & KEY_PHASE) << PN_BITS | pn & PN_MASK, dst_cid)


def parse_header(data: bytes | bytearray | memoryview) -> tuple[int, int, int] | None:
    """(key_phase, dst_cid, truncated packet number) of a protected
    datagram, or None when it is too short to be one. The full number is
    `decode_packet_number` of the truncated one."""
    if len(data) < MIN_SIZE:
        return None
    first, dst = HEADER.unpack_from(data)
    if first >> 24 != PROTECTED:
        return None
    return first >> PN_BITS & KEY_PHASE, dst, first & PN_MASK


def decode_packet_number(largest: int, truncated: int, bits: int = PN_BITS) -> int:
    """The full packet number closest to the one after `largest` (the
    largest opened so far, -1 before any) whose low `bits` bits are
    `truncated`: RFC 9000 Appendix A.3. A number more than 2^22 away from
    it comes out wrong, and its tag then fails."""
    expected = largest + 1
    win = 1 << bits
    hwin = win >> 1
    candidate = (expected & ~(win - 1)) | truncated
    if candidate <= expected - hwin and candidate < _PN_LIMIT - win:
        return candidate + win
    if candidate > expected + hwin and candidate >= win:
        return candidate - win
    return candidate


def sealed_plaintext(datagram: bytes | bytearray | memoryview) -> bytes:
    """What the AEAD encrypts of a plaintext datagram (with its CRC
    trailer): its bytes from 8 to the trailer, then its flags byte (bit 7:
    the short form) and bytes 2-3. Raises ValueError for anything but a
    datagram of this version. (_rows.c does the same over each row.)"""
    return bytes(datagram[HEADER_SIZE : len(datagram) - TRAILER_SIZE]) + _sealed_tail(datagram)


def sealed_plaintext_in_place(datagram: memoryview) -> memoryview:
    """`sealed_plaintext` without copying the datagram: for a writable one
    whose CRC trailer is no longer wanted (the tag replaces it), the tail
    is written over the trailer's first bytes (TAIL < TRAILER_SIZE), and
    the plaintext is the view from byte 8 to the tail's end. A 64 KB
    datagram is then sealed with no copy of its bytes besides the AEAD's
    own output, as _rows.c seals its rows."""
    end = len(datagram) - TRAILER_SIZE
    datagram[end : end + TAIL] = _sealed_tail(datagram)
    return datagram[HEADER_SIZE : end + TAIL]


def _sealed_tail(datagram: bytes | bytearray | memoryview) -> bytes:
    """The tail of what the AEAD encrypts (see sealed_plaintext); raises
    ValueError for anything but a plaintext datagram of this version."""
    if len(datagram) < HEADER_SIZE + TRAILER_SIZE:
        raise ValueError("not a plaintext Gannet datagram")
    form, flags, b2, b3 = _INNER_HEAD.unpack_from(datagram)[:4]
    if (form != VERSION and form != SHORT_FORM) or flags & SHORT_BIT:
        raise ValueError("not a plaintext Gannet datagram")
    return _TAIL.pack(flags | SHORT_BIT if form == SHORT_FORM else flags, b2, b3)


def restore_inner(buf: bytearray | memoryview, pos: int, length: int, dst_cid: int) -> int:
    """The inner datagram (without CRC) rebuilt in place from the `length`
    bytes of an opened plaintext written at buf[pos + HEADER_SIZE:]: its
    first 8 bytes from the tail and the header's destination ID. Returns
    its length (`length` + ELIDED). buf must hold `length` + ELIDED + 4
    bytes from pos (the CRC the caller writes after it)."""
    end = pos + HEADER_SIZE + length - TAIL  # the tail's first byte
    flags, b2, b3 = _TAIL.unpack_from(buf, end)
    _INNER_HEAD.pack_into(buf, pos, SHORT_FORM if flags & SHORT_BIT else VERSION, flags & ~SHORT_BIT, b2, b3,
                          dst_cid)
    return end - pos


def encode_reset(dst_cid: int, token: bytes, filler: bytes) -> bytes:
    """A stateless reset for connection `dst_cid` (the sender's own, which
    the peer addresses): `filler` (RESET_FILLER random bytes: 3 where a
    header has its packet number, the rest after the ID) makes it look like
    any short sealed datagram."""
    if len(token) != RESET_TOKEN_SIZE or len(filler) != RESET_FILLER:
        raise ValueError(f"a reset token is {RESET_TOKEN_SIZE} bytes, its filler {RESET_FILLER}")
    return bytes((PROTECTED,)) + filler[:3] + dst_cid.to_bytes(4, "big") + filler[3:] + token


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


def encode_control(dst_cid: int, src_cid: int, options: tuple[tuple[int, bytes], ...]) -> bytes:
    """The inner datagram of a control segment (to be sealed) from our
    connection `src_cid` to the peer's `dst_cid`, carrying `options`."""
    return encode(dst_cid, src_cid, Segment(0, 0, CONTROL_FLAGS, 0, unknown_options=options))


def is_control(inner: bytes | bytearray | memoryview) -> bool:
    """Whether an opened inner datagram is a control segment."""
    return len(inner) > 1 and inner[0] == VERSION and inner[1] == CONTROL_FLAGS
