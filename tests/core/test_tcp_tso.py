"""TcpEndpoint with `offload` (the TUN carrier's mode), sans I/O: runs of
segments leave as TsoPackets whose partial checksum and header, cut the way
Linux's TCP segmentation cuts them, give exactly the segments a plain
endpoint would have sent; the receiving side's `receive_offloaded` checks
the checksums the kernel did not vouch for."""

import random
import struct

from gannet.core.states import State
from gannet.core.tcp_endpoint import TcpEndpoint, TsoPacket
from gannet.wire import ipv4
from gannet.wire import tcp as tcpwire
from gannet.wire.segment import FIN, PSH

A, B = "10.0.0.1", "10.0.0.2"


def finish(segment, src, dst):
    """What the kernel does to a CHECKSUM_PARTIAL segment: the field holds
    the pseudo-header sum; the sum over the segment, complemented, replaces it."""
    seg = bytearray(segment)
    assert (seg[16] << 8 | seg[17]) % 0xFFFF == tcpwire.pseudo_sum(src, dst, len(seg))
    total = int.from_bytes(seg + (b"\0" if len(seg) & 1 else b""), "big") % 0xFFFF
    seg[16:18] = struct.pack("!H", 0xFFFF - total if total else 0)
    assert tcpwire.checksum_ok(seg, src, dst)
    return bytes(seg)


def cut(packet):
    """A TsoPacket cut into segments as tcp_gso_segment does (each piece its
    own sequence number, PSH and FIN only on the last), checksums finished;
    another packet with its checksum finished."""
    src, dst, _proto, start, end = ipv4.parse(packet)
    tcp = packet[start:end]
    hlen = (tcp[12] >> 4) * 4
    if type(packet) is not TsoPacket:
        return [ipv4.build(src, dst, len(tcp)) + finish(tcp, src, dst)]
    head, data = bytearray(tcp[:hlen]), tcp[hlen:]
    mss = packet.mss
    pieces = [data[i:i + mss] for i in range(0, len(data), mss)]
    assert len(pieces) == packet.segments > 1
    seq = struct.unpack_from("!I", head, 4)[0]
    out = []
    for i, piece in enumerate(pieces):
        h = bytearray(head)
        struct.pack_into("!I", h, 4, (seq + i * mss) & 0xFFFFFFFF)
        if i < len(pieces) - 1:
            h[13] &= ~(PSH | FIN) & 0xFF
        seg = bytes(h) + piece
        seg = seg[:16] + struct.pack("!H", tcpwire.pseudo_sum(src, dst, len(seg))) + seg[18:]
        out.append(ipv4.build(src, dst, len(seg)) + finish(seg, src, dst))
    return out


def test_a_bulk_transfer_through_tso_packets_arrives_whole():
    client = TcpEndpoint(40000, rng=random.Random(1), local_ip=A)
    client.offload = True
    server = TcpEndpoint(8888, rng=random.Random(2))
    server.listen()
    c = client.connect((B, 8888), 0.0)
    data = random.Random(3).randbytes(3_000_000)
    sent_tso = pieces_seen = 0
    got = bytearray()
    now = 0.0
    s = None
    started = False
    for _ in range(20000):
        for packet, _ in client.datagrams_to_send(now, True):
            if type(packet) is TsoPacket:
                sent_tso += 1
                assert len(packet) <= 65535
            for piece in cut(packet):
                pieces_seen += 1
                # every piece a plain segment of at most one MSS
                src, dst, _p, start, end = ipv4.parse(piece)
                _sp, _dp, seg = tcpwire.decode(piece[start:end], src, dst)
                assert len(seg.payload) <= c.mss
                server.receive_datagram(piece, None, now)
        for packet, _ in server.datagrams_to_send(now):
            # the server's packets reach the client through receive_offloaded,
            # unvouched: their checksums are verified
            client.receive_offloaded(packet, now, checked=False)
        if not started and c.state == State.ESTABLISHED:
            started = True
            c.send(data)
            c.shutdown_write(now)
        if s is None:
            s = server.accept()
        if s is not None:
            got.extend(s.recv(1 << 20))
            if s.eof:
                break
        now += 0.001
        for ep in (client, server):
            t = ep.get_timer()
            if t is not None and t <= now:
                ep.handle_timer(now)
    assert bytes(got) == data
    assert sent_tso > 0
    assert pieces_seen > 3_000_000 // c.mss
    assert client.drop_reasons == {} and server.drop_reasons == {}


def test_receive_offloaded_verifies_what_the_kernel_did_not_vouch_for():
    client = TcpEndpoint(40000, rng=random.Random(1), local_ip=A)
    server = TcpEndpoint(8888, rng=random.Random(2))
    server.listen()
    client.connect((B, 8888), 0.0)
    [(syn, _)] = client.datagrams_to_send(0.0)
    src, dst, _p, start, end = ipv4.parse(syn)
    # the kernel's unfinished form: accepted only when vouched for
    partial = bytearray(syn)
    partial[start + 16:start + 18] = struct.pack("!H", tcpwire.pseudo_sum(src, dst, end - start))
    server.receive_offloaded(bytes(partial), 0.0, checked=False)
    assert server.drop_reasons == {"checksum mismatch": 1}
    assert server.connection_count == 0
    server.receive_offloaded(bytes(partial), 0.0, checked=True)
    assert server.connection_count == 1
