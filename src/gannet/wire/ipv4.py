"""The IPv4 header (RFC 791) around a TCP segment, for raw sockets and TUN.

Only what a TCP endpoint on the host's own addresses needs: read the header
of an arriving packet (addresses, protocol, where the segment lies), and
write one for a segment to send. Linux fills the total length, the
identification and the header checksum of a packet sent on a raw socket
with IP_HDRINCL (raw(7)); `build` writes them anyway, so that the same
packet is also valid on a TUN device.
"""

from __future__ import annotations

import struct

HEADER = struct.Struct("!BBHHHBBH4s4s")
HEADER_SIZE = HEADER.size  # 20
PROTO_TCP = 6
FLAG_DF = 0x4000
FLAG_MF = 0x2000
OFFSET_MASK = 0x1FFF
DEFAULT_TTL = 64


class IPv4Error(ValueError):
    """Bytes that are not an IPv4 packet this endpoint takes. The message says why."""


def header_checksum(header: bytes) -> int:
    total = int.from_bytes(header, "big") % 0xFFFF
    return 0xFFFF - total if total else 0


def build(src: bytes, dst: bytes, payload_len: int, *, proto: int = PROTO_TCP,
          ttl: int = DEFAULT_TTL, ident: int = 0, df: bool = True) -> bytes:
    """A 20-byte header for a packet of `payload_len` bytes from `src` to `dst`."""
    head = HEADER.pack(0x45, 0, HEADER_SIZE + payload_len, ident, FLAG_DF if df else 0, ttl,
                       proto, 0, src, dst)
    return head[:10] + header_checksum(head).to_bytes(2, "big") + head[12:]


def parse(packet: bytes | bytearray | memoryview) -> tuple[bytes, bytes, int, int, int]:
    """(source, destination, protocol, payload start, payload end) of an
    IPv4 packet; raises IPv4Error for one that is not whole or not IPv4.
    Fragments are refused: a raw socket is handed reassembled packets."""
    n = len(packet)
    if n < HEADER_SIZE:
        raise IPv4Error(f"packet too short ({n} bytes)")
    vihl, _tos, total, _ident, frag, _ttl, proto, _csum, src, dst = HEADER.unpack_from(packet)
    if vihl >> 4 != 4:
        raise IPv4Error(f"IP version {vihl >> 4}")
    ihl = (vihl & 15) * 4
    if ihl < HEADER_SIZE or ihl > n:
        raise IPv4Error(f"header length {ihl}")
    if total > n or total < ihl:
        raise IPv4Error(f"total length {total} with {n} bytes read")
    if frag & (FLAG_MF | OFFSET_MASK):
        raise IPv4Error("a fragment")
    return src, dst, proto, ihl, total
