"""Classic pcap files of the datagrams as they cross the socket.

The UDP socket shows only payloads and addresses, so each record gets an
IPv4 or IPv6 header and a UDP header made up from the two addresses
(LINKTYPE_RAW: the packet starts at the IP header; Wireshark and tshark
read it as they read a capture taken on a tunnel device). Checksums are
left zero (IPv4's header checksum is filled in; a zero UDP checksum means
"none" in IPv4, and Wireshark does not check it unless asked).
"""

from __future__ import annotations

import ipaddress
import struct
import threading
from collections.abc import Iterator

MAGIC = 0xA1B2C3D4  # microsecond timestamps
LINKTYPE_RAW = 101
SNAPLEN = 262144
_GLOBAL = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_UDP = struct.Struct("!HHHH")


def _ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


_SPLIT: dict = {}  # address -> _split's answer (parsing an address costs more than a record)


def _split(addr: object) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    try:
        return _SPLIT[addr]
    except (KeyError, TypeError):
        pass
    got = _parse(addr)
    if len(_SPLIT) < 4096:
        try:
            _SPLIT[addr] = got
        except TypeError:
            pass
    return got


def _parse(addr: object) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    if isinstance(addr, tuple) and len(addr) >= 2:
        try:
            return ipaddress.ip_address(str(addr[0]).split("%")[0]), int(addr[1])
        except ValueError:
            pass
    return ipaddress.ip_address("0.0.0.0"), 0


def packet(src: object, dst: object, payload: bytes | memoryview, ident: int = 0) -> bytes:
    """`payload` as an IP packet from `src` to `dst` ((host, port) pairs)."""
    sip, sport = _split(src)
    dip, dport = _split(dst)
    if sip.version != dip.version:  # a v4-mapped peer on a v6 socket, or an unbound side
        if isinstance(sip, ipaddress.IPv6Address) and sip.ipv4_mapped:
            sip = sip.ipv4_mapped
        if isinstance(dip, ipaddress.IPv6Address) and dip.ipv4_mapped:
            dip = dip.ipv4_mapped
        if sip.version != dip.version:
            sip = ipaddress.ip_address("::") if dip.version == 6 else ipaddress.ip_address("0.0.0.0")
    # An unbound (wildcard) side of a loopback exchange: the kernel sent
    # from the loopback address, so the record says so.
    if sip.is_unspecified and dip.is_loopback:
        sip = dip
    elif dip.is_unspecified and sip.is_loopback:
        dip = sip
    n = len(payload)
    udp = _UDP.pack(sport, dport, min(8 + n, 0xFFFF), 0)
    if sip.version == 4:
        total = 20 + 8 + n
        head = _IPV4.pack(0x45, 0, min(total, 0xFFFF), ident & 0xFFFF, 0x4000, 64, 17, 0,
                          sip.packed, dip.packed)
        head = head[:10] + struct.pack("!H", _ip_checksum(head)) + head[12:]
    else:
        head = _IPV6.pack(0x60000000, min(8 + n, 0xFFFF), 17, 64, sip.packed, dip.packed)
    return head + udp + bytes(payload)


class PcapWriter:
    """Appends records to one pcap file; shared by every endpoint of a
    process that writes to the same path (`open_shared`), so it locks."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file = open(path, "wb")  # noqa: SIM115 - closed by close()
        self._file.write(_GLOBAL.pack(MAGIC, 2, 4, 0, 0, SNAPLEN, LINKTYPE_RAW))
        self._lock = threading.Lock()
        self._ident = 0
        self.records = 0
        self.closed = False

    def write(self, wall: float, src: object, dst: object, payload: bytes | memoryview) -> None:
        with self._lock:
            if self.closed:
                return
            self._ident += 1
            pkt = packet(src, dst, payload, self._ident)
            sec = int(wall)
            usec = int((wall - sec) * 1_000_000)
            caplen = min(len(pkt), SNAPLEN)
            self._file.write(_RECORD.pack(sec, usec, caplen, len(pkt)))
            self._file.write(pkt[:caplen])
            self.records += 1

    def flush(self) -> None:
        with self._lock:
            if not self.closed:
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                self.closed = True
                self._file.close()


_shared: dict[str, PcapWriter] = {}
_shared_lock = threading.Lock()


def open_shared(path: str) -> PcapWriter:
    with _shared_lock:
        w = _shared.get(path)
        if w is None or w.closed:
            w = _shared[path] = PcapWriter(path)
        return w


def close_all() -> None:
    with _shared_lock:
        for w in _shared.values():
            w.close()
        _shared.clear()


def read(path: str) -> Iterator[tuple[float, tuple[str, int], tuple[str, int], bytes]]:
    """(time, source, destination, UDP payload) per record of a file this
    module wrote (or any LINKTYPE_RAW capture of UDP over IP)."""
    with open(path, "rb") as f:
        head = f.read(_GLOBAL.size)
        magic, _, _, _, _, _, linktype = _GLOBAL.unpack(head)
        if magic != MAGIC or linktype != LINKTYPE_RAW:
            raise ValueError(f"{path}: not a raw-IP pcap file (magic {magic:#x}, linktype {linktype})")
        while True:
            rec = f.read(_RECORD.size)
            if len(rec) < _RECORD.size:
                return
            sec, usec, caplen, _ = _RECORD.unpack(rec)
            pkt = f.read(caplen)
            if len(pkt) < caplen or not pkt:
                return  # a record still being written (a live capture) ends the read
            if pkt[0] >> 4 == 4:
                ihl = (pkt[0] & 0xF) * 4
                src_ip = str(ipaddress.IPv4Address(pkt[12:16]))
                dst_ip = str(ipaddress.IPv4Address(pkt[16:20]))
            else:
                ihl = 40
                src_ip = str(ipaddress.IPv6Address(pkt[8:24]))
                dst_ip = str(ipaddress.IPv6Address(pkt[24:40]))
            sport, dport, length, _ = _UDP.unpack_from(pkt, ihl)
            yield sec + usec / 1e6, (src_ip, sport), (dst_ip, dport), pkt[ihl + 8 : ihl + length]
