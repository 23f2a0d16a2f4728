"""TcpEndpoint, sans I/O: two of them exchanging IPv4 packets, 4-tuple
demultiplexing, RST for strangers, and hostile packets dropped by reason."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from gannet.config import Config
from gannet.core.states import State
from gannet.core.tcp_endpoint import TcpEndpoint, tcp_config
from gannet.wire import ipv4
from gannet.wire import tcp as tcpwire
from gannet.wire.segment import ACK, RST, SYN, Segment

A, B = "10.0.0.1", "10.0.0.2"
PA, PB = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])


def pair(seed=1):
    client = TcpEndpoint(40000, rng=random.Random(seed), local_ip=A)
    server = TcpEndpoint(8888, rng=random.Random(seed + 1))
    server.listen()
    return client, server


def run(eps, now, until=None, rounds=200, step=0.001, drop=None):
    """Move packets between endpoints (each to the one owning its address and
    port) until nothing moves; timers run as time advances."""
    for _ in range(rounds):
        moved = False
        for ep in eps:
            for packet, _addr in ep.datagrams_to_send(now):
                moved = True
                if drop and drop(packet):
                    continue
                for other in eps:
                    if other is not ep:
                        other.receive_datagram(packet, None, now)
        now += step
        for ep in eps:
            t = ep.get_timer()
            if t is not None and t <= now:
                ep.handle_timer(now)
        if until is not None and until():
            break
        if not moved and until is None:
            break
    return now


def test_handshake_data_and_close_between_two_tcp_endpoints():
    client, server = pair()
    c = client.connect((B, 8888), 0.0)
    now = run([client, server], 0.0, until=lambda: server.accept() is not None or None)
    assert c.state == State.ESTABLISHED
    s = server.connections[0]
    assert s.remote_addr == (A, 40000)
    assert c.sack_ok and c.ts_ok and c.snd_wscale == s.rcv_wscale
    data = bytes(random.Random(3).getrandbits(8) for _ in range(200_000))
    c.send(data)
    c.shutdown_write(now)
    got = bytearray()

    def drained():
        got.extend(s.recv(1 << 20))
        return s.eof

    now = run([client, server], now, until=drained, rounds=5000)
    assert bytes(got) == data
    assert c.mss == 1500 - 52  # room for the header with timestamps


def test_segments_are_real_tcp_in_ipv4():
    client, _ = pair()
    client.connect((B, 8888), 0.0)
    [(packet, addr)] = client.datagrams_to_send(0.0)
    assert addr == (B, 8888)
    src, dst, proto, start, end = ipv4.parse(packet)
    assert (src, dst, proto, end) == (PA, PB, 6, len(packet))
    assert ipv4.header_checksum(packet[:20]) == 0  # a valid header sums to all ones
    sport, dport, syn = tcpwire.decode(packet[start:], src, dst)
    assert (sport, dport, syn.flags) == (40000, 8888, SYN)
    assert syn.mss == 1460 and syn.sack_permitted and syn.wscale is not None and syn.tsval is not None
    assert syn.mode is None and syn.max_packet is None  # Gannet's UDP-only options stay home


def test_segment_for_no_connection_is_reset_and_syn_to_a_non_listener_too():
    _, server = pair()
    stray = tcpwire.encode(5555, 8888, Segment(100, 200, ACK, 10, b"x"), PA, PB)
    server.receive_datagram(ipv4.build(PA, PB, len(stray)) + stray, None, 0.0)
    [(packet, addr)] = server.datagrams_to_send(0.0)
    assert addr == (A, 5555)
    _, _, rst = tcpwire.decode(packet[20:], PB, PA)
    assert (rst.flags, rst.seq) == (RST, 200)  # RFC 9293 3.10.7.1: SEQ = SEG.ACK
    server.stop_listening()
    syn = tcpwire.encode(5556, 8888, Segment(7, 0, SYN, 10), PA, PB)
    server.receive_datagram(ipv4.build(PA, PB, len(syn)) + syn, None, 0.0)
    [(packet, _)] = server.datagrams_to_send(0.0)
    _, _, rst = tcpwire.decode(packet[20:], PB, PA)
    assert (rst.flags, rst.ack) == (RST | ACK, 8)
    assert server.stats.resets_sent == 2


def test_four_tuple_demultiplexing():
    """Two clients from the same address, different ports, one server port."""
    c1 = TcpEndpoint(40001, rng=random.Random(1), local_ip=A)
    c2 = TcpEndpoint(40002, rng=random.Random(2), local_ip=A)
    server = TcpEndpoint(8888, rng=random.Random(3))
    server.listen()
    a = c1.connect((B, 8888), 0.0)
    b = c2.connect((B, 8888), 0.0)
    now = run([c1, c2, server], 0.0)
    a.send(b"one")
    b.send(b"two")
    now = run([c1, c2, server], now)
    by_peer = {conn.remote_addr: conn.recv(10) for conn in server.connections}
    assert by_peer == {(A, 40001): b"one", (A, 40002): b"two"}


def test_packets_for_other_ports_are_ignored_not_reset():
    _, server = pair()
    other = tcpwire.encode(1, 22, Segment(1, 0, SYN, 10), PA, PB)
    server.receive_datagram(ipv4.build(PA, PB, len(other)) + other, None, 0.0)
    assert server.datagrams_to_send(0.0) == []
    assert server.other_ports == 1 and server.stats.malformed_dropped == 0


def test_bad_checksum_is_dropped_with_its_reason():
    _, server = pair()
    syn = bytearray(tcpwire.encode(5, 8888, Segment(1, 0, SYN, 10), PA, PB))
    syn[4] ^= 0xFF
    server.receive_datagram(ipv4.build(PA, PB, len(syn)) + bytes(syn), None, 0.0)
    assert server.drop_reasons == {"checksum mismatch": 1}
    assert server.datagrams_to_send(0.0) == []


def test_tcp_config_is_idempotent_and_sized_for_the_mtu():
    cfg = tcp_config(Config())
    assert tcp_config(cfg) is cfg
    assert (cfg.mss, cfg.pmtud) == (1460, False)
    assert tcp_config(Config(), 65535).mss == 65000  # Config's largest (Linux announces 65495 on lo)


@settings(max_examples=150)
@given(st.lists(st.binary(max_size=80), max_size=20), st.integers(0, 2**32 - 1))
def test_hostile_packets_never_disturb_an_established_connection(junk, seq):
    client, server = pair()
    c = client.connect((B, 8888), 0.0)
    now = run([client, server], 0.0)
    s = server.connections[0]
    for blob in junk:
        # garbage as the IP payload, as a TCP payload with a good checksum,
        # and as a segment with a random sequence number on the 4-tuple
        server.receive_datagram(ipv4.build(PA, PB, len(blob)) + blob, None, now)
        seg = tcpwire.encode(40000, 8888, Segment(seq, seq, ACK, 100, blob), PA, PB)
        server.receive_datagram(ipv4.build(PA, PB, len(seg)) + seg, None, now)
        server.receive_datagram(blob, None, now)
    c.send(b"still fine")
    run([client, server], now + 0.01)
    assert s.state == State.ESTABLISHED and c.state == State.ESTABLISHED
    assert s.recv(100) == b"still fine"
