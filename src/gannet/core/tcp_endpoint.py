"""The endpoint for segments in real TCP headers: IPv4 packets in and out, sans I/O.

`TcpEndpoint` is `Endpoint` (listen backlog, accept queue, timer heap,
events) with TCP's addressing instead of Gannet's connection IDs: it owns one
local port, and a connection is named by the 4-tuple, that is by the peer's
address and port (plus the local address the peer wrote to). It takes whole
IPv4 packets, as a raw IP socket or a TUN device yields them, and gives
IPv4 packets back, so a carrier only moves bytes (gannet.io.rawtcp).

Every connection is the same `Connection` as over UDP; only the encoding
differs (gannet.wire.tcp). What that encoding changes for a connection is
set in its `Config` by `tcp_config`: the MSS option is the MTU less 40 (as
TCP announces it), the segment payload leaves room for the header with
timestamps, and the UDP-only path MTU probing is off.

Packets for other ports are ignored (a raw socket sees every TCP packet the
host receives, unless a filter spares it them). Malformed ones are dropped
and counted by reason (`drop_reasons`), never raised.

With `offload` (a carrier whose kernel finishes checksums and cuts large
segments, as a TUN device with virtio-net headers does: gannet.io.tuntcp),
packets leave with the checksum left partial (`tcpwire.encode(partial=True)`)
and a run of full-size segments leaves as one `TsoPacket`, which the kernel
segments; `receive_offloaded` takes packets whose checksum the kernel has
vouched for.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import replace

from ..config import Config
from ..wire import ipv4
from ..wire import tcp as tcpwire
from ..wire.segment import ACK, PSH, RST, SEQ_MOD, SYN, Segment, SegmentRun, reset_for
from .connection import Connection
from .endpoint import Endpoint

LOOPBACK_MTU = 65535  # an IPv4 packet's largest size (lo's MTU is 65536)
ETHERNET_MTU = 1500
# What Connection subtracts from its datagram size for a data segment's
# framing in the UDP encoding (wire.datagram.DATA_OVERHEAD).
_UDP_DATA_OVERHEAD = 24
_TCP_DATA_OVERHEAD = ipv4.HEADER_SIZE + tcpwire.HEADER_SIZE + tcpwire.TS_OPTION_SIZE  # 52
_ACK_PSH = ACK | PSH
_ADDRESS_CACHE = 4096
_TSO_ROOM = 65535 - _TCP_DATA_OVERHEAD  # an IPv4 packet's payload past the headers


class TsoPacket(bytes):
    """An IPv4 packet holding several segments' data in one TCP segment, to
    be cut into segments of `mss` bytes by the kernel (TSO): every piece
    gets this header with its own sequence number, PSH and FIN only on the
    last (Linux's tcp_gso_segment)."""

    mss: int
    segments: int


def tcp_config(config: Config, mtu: int = ETHERNET_MTU) -> Config:
    """`config` for a connection whose segments travel in TCP/IPv4 packets of
    at most `mtu` bytes: MSS option `mtu - 40` (RFC 9293 3.7.1), data
    segments of `mtu - 52` bytes (the header with timestamps), no PMTUD.
    Idempotent: a config it made comes back unchanged."""
    mss = min(config.mss, mtu - ipv4.HEADER_SIZE - tcpwire.HEADER_SIZE)
    size = mtu - _TCP_DATA_OVERHEAD + _UDP_DATA_OVERHEAD
    if config.mss == mss and config.max_datagram_size == size and not config.pmtud:
        return config
    return replace(config, mss=mss, max_datagram_size=size, pmtud=False, max_packet_size=None,
                   pmtud_max=max(config.pmtud_max, size))


class TcpEndpoint(Endpoint):
    def __init__(self, port: int, config: Config | None = None, rng: random.Random | None = None,
                 *, local_ip: str | None = None, mtu: int = ETHERNET_MTU) -> None:
        """An endpoint owning TCP port `port` on `local_ip` (None: every
        local address; a client must name one). `mtu` bounds the packets
        it sends."""
        super().__init__(tcp_config(config or Config(), mtu), rng)
        if not 0 < port < 65536:
            raise ValueError(f"port {port} out of range")
        self.port = port
        self.mtu = mtu
        self.local_ip = local_ip
        self._local_packed = ipaddress.IPv4Address(local_ip).packed if local_ip else None
        self._peers: dict[tuple[str, int], Connection] = {}
        self._local_of: dict[Connection, bytes] = {}  # the address each connection's peer wrote to
        self.drop_reasons: dict[str, int] = {}
        """Malformed packets dropped, by reason (the decoder's message)."""
        self.other_ports = 0
        """Packets for other ports or protocols, ignored."""
        self.ident = 0  # IPv4 identification of the next packet
        self.offload = False
        """Leave checksums partial and send runs as TsoPacket (see the module doc)."""
        # Address text <-> bytes, for the hosts seen lately (the ipaddress
        # module costs microseconds per packet); cleared when it grows.
        self._names: dict[bytes, str] = {}
        self._packed: dict[str, bytes] = {}

    # ----------------------------------------------------------- application
    def connect(self, addr: object, now: float, config: Config | None = None) -> Connection:
        if self._local_packed is None:
            raise ValueError("a connecting TcpEndpoint needs its local_ip")
        if not isinstance(addr, tuple) or len(addr) != 2:
            raise TypeError(f"a TcpEndpoint connects to a (host, port) pair, not {addr!r}")
        host, port = addr
        key = (str(ipaddress.IPv4Address(host)), int(port))
        if key in self._peers:
            raise OSError(98, f"a connection to {key[0]}:{key[1]} from port {self.port} exists")
        cfg = tcp_config(config, self.mtu) if config is not None else None
        conn = self._new_connection(key, now, cfg)
        self._peers[key] = conn
        self._local_of[conn] = self._local_packed
        conn.connect(now)
        return conn

    def connection_for(self, addr: tuple[str, int]) -> Connection | None:
        return self._peers.get(addr)

    # --------------------------------------------------------------- network
    def receive_batch(self, buf: bytes | bytearray | memoryview, seg: int, addr: object,
                      now: float, authenticated: bool = False) -> None:
        """Packets as a raw socket delivers them: one at a time (`seg` 0).
        (`authenticated` is the UDP endpoint's; every packet here is checked.)"""
        if seg <= 0 or seg >= len(buf):
            self.receive_datagram(buf, addr, now)
            return
        for i in range(0, len(buf), seg):
            self.receive_datagram(buf[i : i + seg], addr, now)

    def receive_datagram(self, data: bytes | bytearray | memoryview, addr: object, now: float) -> None:
        """One IPv4 packet (header included) that arrived; `addr` is unused
        (the packet names its source)."""
        self._receive_one(data, addr, now)

    def receive_offloaded(self, data: bytes | bytearray | memoryview, now: float,
                          checked: bool) -> None:
        """One IPv4 packet from a carrier that tells whether its TCP checksum
        is vouched for (`checked`: the kernel verified it, or made the
        packet itself and left the checksum for a NIC to fill); others are
        verified in full, without the loopback exception."""
        self._receive_one(data, None, now, verify=not checked, partial=False)

    def _receive_one(self, data: bytes | bytearray | memoryview, addr: object, now: float,
                     fast: bool = False, verify: bool = True, partial: bool = True) -> None:
        try:
            src, dst, proto, start, end = ipv4.parse(data)
        except ipv4.IPv4Error as exc:
            self._drop(str(exc))
            return
        if proto != ipv4.PROTO_TCP:
            self.other_ports += 1
            return
        view = memoryview(data)[start:end]
        ports = tcpwire.peek_ports(view)
        if ports is None or ports[1] != self.port or (self._local_packed and dst != self._local_packed):
            self.other_ports += 1
            return
        self.stats.datagrams_received += 1
        try:
            sport, _dport, seg = tcpwire.decode(view, src, dst, verify, partial)
        except tcpwire.TcpWireError as exc:
            self._drop(str(exc))
            return
        name = self._names.get(src)
        if name is None:
            if len(self._names) > _ADDRESS_CACHE:
                self._names.clear()
            name = self._names[src] = str(ipaddress.IPv4Address(src))
        key = (name, sport)
        conn = self._peers.get(key)
        if conn is None:
            self._no_connection(seg, key, dst, now)
            return
        flags = seg.flags
        if (flags | PSH == _ACK_PSH and seg.tsval is not None and not seg.sack
                and seg.mss is None and seg.wscale is None and not seg.sack_permitted):
            # Timestamps the only option: header prediction, then the
            # in-order data path, as Endpoint does for its short form.
            payload = seg.payload
            if conn.on_predicted(seg.seq, seg.ack, seg.wnd, seg.tsval, payload, now):
                return
            if payload and conn.on_data_run(seg.seq, seg.ack, seg.wnd, seg.tsval, seg.tsval,
                                            payload, 1, len(payload), now):
                return
        conn.on_segment(seg, now)

    def _no_connection(self, seg: Segment, key: tuple[str, int], dst: bytes, now: float) -> None:
        """RFC 9293 3.10.7.1-2: a SYN opens a connection if we listen; any
        other segment (and a SYN when we do not) is answered with RST."""
        flags = seg.flags
        if flags & SYN and not flags & (ACK | RST) and self._listening:
            conn = self._passive_open(seg, key, now)
            if conn is not None:
                self._peers[key] = conn
                self._local_of[conn] = dst
            return
        self.stats.unknown_connection += 1
        rst = reset_for(seg)
        if rst is None:
            return
        if type(self._out) is not list:
            self._out = []
        self._out.append((self._packet(key, dst, rst), key))
        self.stats.resets_sent += 1

    def _drop(self, reason: str) -> None:
        self.stats.malformed_dropped += 1
        self.drop_reasons[reason] = self.drop_reasons.get(reason, 0) + 1

    # ---------------------------------------------------------------- output
    def _encode_into(self, conn: Connection, segs: list, out: list, trains: bool) -> int:
        key = conn.remote_addr
        assert isinstance(key, tuple)  # a (host, port) pair: connect and accept make it so
        local = self._local_of[conn]
        sent = 0
        for seg in segs:
            if type(seg) is SegmentRun:
                if trains and self.offload and seg.length > seg.mss:
                    sent += self._tso_packets(key, local, seg, out)
                    continue
                for one in seg.segments():
                    out.append((self._packet(key, local, one), key))
                    sent += 1
            else:
                out.append((self._packet(key, local, seg), key))
                sent += 1
        return sent

    def _tso_packets(self, key: tuple[str, int], local: bytes, run: SegmentRun, out: list) -> int:
        """`run` as TsoPackets of as many whole segments as an IPv4 packet holds."""
        mss = run.mss
        step = _TSO_ROOM // mss * mss
        data = bytes(run.buf[run.offset : run.offset + run.length])  # the buffer may change
        sent = 0
        for start in range(0, run.length, step):
            chunk = data[start : start + step]
            last = start + step >= run.length
            seg = Segment((run.seq + start) % SEQ_MOD, run.ack,
                          run.last_flags if last else run.flags, run.wnd, chunk,
                          tsval=run.tsval, tsecr=run.tsecr)
            count = -(-len(chunk) // mss)
            packet = TsoPacket(self._packet(key, local, seg))
            packet.mss = mss
            packet.segments = count
            # The kernel numbers the pieces' IPv4 identification from this one's.
            self.ident = (self.ident + count - 1) & 0xFFFF
            out.append((packet, key))
            sent += count
        return sent

    def _packet(self, key: tuple[str, int], local: bytes, seg: Segment) -> bytes:
        peer = self._packed.get(key[0])
        if peer is None:
            if len(self._packed) > _ADDRESS_CACHE:
                self._packed.clear()
            peer = self._packed[key[0]] = ipaddress.IPv4Address(key[0]).packed
        segment = tcpwire.encode(self.port, key[1], seg, local, peer, self.offload)
        self.ident = (self.ident + 1) & 0xFFFF
        return ipv4.build(local, peer, len(segment), ident=self.ident) + segment

    # --------------------------------------------------------------- helpers
    def _forget(self, conn: Connection) -> None:
        super()._forget(conn)
        key = conn.remote_addr
        if isinstance(key, tuple) and self._peers.get(key) is conn:
            del self._peers[key]
        self._local_of.pop(conn, None)
