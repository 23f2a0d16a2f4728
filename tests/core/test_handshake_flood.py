"""Issue 12 finding 1: forged SYNs must not lock a listener out.

2,000 forged SYNs from 500 source ports used to fill the backlog, each
half-open connection living through 15 SYN,ACK retransmissions, and a real
client was refused for over two minutes. Now the listener keeps state for
at most `half_open_limit` unproven half-open connections, answers the rest
with a stateless Retry whose token the client echoes (RFC 9000 8.1.2),
sends an unproven address at most three times what it sent, gives up a
half-open connection after `synack_retries`, and ignores addresses that
answered with an ICMP unreachable."""

import random

import pytest

from gannet.config import Config
from gannet.core.endpoint import PRESSURE_HOLD, RETRY_TOKEN_LIFETIME, Endpoint
from gannet.core.states import State
from gannet.sim import LinkConfig, Simulator
from gannet.wire import Segment, decode, encode
from gannet.wire.segment import ACK, SYN

SERVER = ("10.0.0.2", 2000)
CLIENT = ("10.0.0.1", 1000)


def forged_syn(rng, options=True) -> bytes:
    seg = Segment(rng.getrandbits(32), 0, SYN, 0xFFFF)
    if options:
        seg.mss, seg.wscale, seg.sack_permitted = 1448, 9, True
        seg.tsval, seg.tsecr, seg.mode, seg.max_packet = rng.getrandbits(32), 0, 0, 1472
    return encode(0, rng.getrandbits(32) | 1, seg)


def recording(ep):
    """The bytes `ep` sends to each address, and the simulator's `drain`
    for `ep` that counts them."""
    sent: dict = {}

    def drain(now):
        out = ep.datagrams_to_send(now)
        for data, addr in out:
            sent[addr] = sent.get(addr, 0) + len(data)
        return out

    return sent, drain


def flood(sim, server, rng, count, start, spacing, ports=500, options=True, hosts=1):
    """Forged SYNs from `ports` source ports spread over `hosts` hosts in
    10.6/16; returns the bytes sent from each address."""
    received: dict = {}
    for k in range(count):
        host = k % hosts
        addr = (f"10.6.{host // 256}.{host % 256}", 1 + k % ports)
        raw = forged_syn(rng, options)
        received[addr] = received.get(addr, 0) + len(raw)
        t = start + k * spacing
        sim.call_at(t, server.receive_datagram, raw, addr, t)
    return received


@pytest.mark.parametrize("hosts", [1, 500], ids=["one-host", "500-hosts"])
def test_a_syn_flood_does_not_lock_out_a_real_client(hosts):
    """2,000 SYNs from 500 source ports (the issue's flood), from one host
    (the per-source limit holds it) or from 500 (the total limit does)."""
    sim = Simulator(seed=1, default_link=LinkConfig(delay=0.005))
    cfg = Config()
    server = Endpoint(cfg, rng=sim.make_rng("server"))
    sent, drain = recording(server)
    sim.add_node(SERVER, server, drain=drain)
    client = sim.add_node(CLIENT, Endpoint(Config(), rng=sim.make_rng("client")))
    server.listen()
    received = flood(sim, server, random.Random(2), 2000, 0.0, 0.00001, hosts=hosts)
    sim.run(until=0.05)  # the flood is in
    kept = cfg.half_open_per_source if hosts == 1 else cfg.half_open_limit
    assert server.connection_count == kept
    assert server.stats.retries_sent == 2000 - kept
    conn = client.connect(SERVER, sim.now)
    start = sim.now
    sim.run(until=start + 0.1)
    assert conn.state == State.ESTABLISHED, "a real client was not served during the flood"
    # The listener is under pressure: the client went through a Retry (one
    # more round trip) and was served.
    assert conn.retry_token is not None
    assert server.accept() is not None
    # Every forged address got at most three times what it sent.
    for addr, n in received.items():
        assert sent.get(addr, 0) <= 3 * n, addr
    # The half-open connections are gone within a few SYN,ACKs (1 + 2 + 4 s).
    sim.run(until=start + 8)
    assert server.connection_count == 1
    assert sum(sent.get(a, 0) for a in received) <= 3 * sum(received.values())


def test_minimal_forged_syns_are_answered_with_at_most_three_times_their_size():
    """A SYN without options is smaller than our SYN,ACK: three SYN,ACKs
    would be more than 3x; the endpoint sends what fits and counts the rest."""
    sim = Simulator(seed=3, default_link=LinkConfig(delay=0.005))
    server = Endpoint(Config(), rng=sim.make_rng("server"))
    sent, drain = recording(server)
    sim.add_node(SERVER, server, drain=drain)
    server.listen()
    received = flood(sim, server, random.Random(4), 40, 0.0, 0.001, ports=40, options=False)
    sim.run(until=10)
    for addr, n in received.items():
        assert 0 < sent.get(addr, 0) <= 3 * n
    assert server.stats.amplification_limited > 0
    assert server.connection_count == 0


def test_retry_handshake_negotiates_every_option_as_a_direct_one():
    """With half_open_limit=0 every connection goes through a Retry; what the
    handshake negotiates (MSS, window scale, SACK, timestamps, mode, packet
    size, connection IDs) is what it is without one."""
    results = []
    for limit in (64, 0):
        sim = Simulator(seed=5, default_link=LinkConfig(delay=0.01))
        cfg = Config(half_open_limit=limit, max_packet_size=9000)
        server = sim.add_node(SERVER, Endpoint(cfg, rng=sim.make_rng("server")))
        client = sim.add_node(CLIENT, Endpoint(Config(window_size=1 << 22), rng=sim.make_rng("client")))
        server.listen()
        conn = client.connect(SERVER, sim.now)
        conn.send(b"hello through a retry" * 100)
        sim.run(until=1)
        peer = server.accept()
        assert peer is not None and conn.state == State.ESTABLISHED
        assert peer.recv(10_000) == b"hello through a retry" * 100
        assert (conn.retry_token is not None) == (limit == 0)
        assert server.stats.retries_sent == (1 if limit == 0 else 0)
        results.append([(c.mss, c.peer_mss, c.snd_wscale, c.rcv_wscale, c.sack_ok, c.ts_ok, c.mode,
                         c.max_datagram_size) for c in (conn, peer)]
                       + [conn.remote_cid == peer.local_cid, peer.remote_cid == conn.local_cid])
    assert results[0] == results[1]
    assert results[0][0][2] > 0 and results[0][0][4] and results[0][0][5]  # scaled, SACK, timestamps


def test_a_listener_with_a_backlog_of_one_answers_a_syn_without_a_retry():
    """Half the backlog, rounded down, is 0 for listen(1): the limit on
    unproven half-open connections is at least one, so a quiet listener
    costs its first client no Retry round trip."""
    sim = Simulator(seed=7, default_link=LinkConfig(delay=0.01))
    server = sim.add_node(SERVER, Endpoint(Config(), rng=sim.make_rng("server")))
    client = sim.add_node(CLIENT, Endpoint(Config(), rng=sim.make_rng("client")))
    server.listen(1)
    conn = client.connect(SERVER, sim.now)
    sim.run(until=1)
    assert server.accept() is not None and conn.state == State.ESTABLISHED
    assert server.stats.retries_sent == 0 and conn.retry_token is None


def token_for(ep: Endpoint, addr, syn_raw: bytes, now: float) -> bytes:
    ep.receive_datagram(syn_raw, addr, now)
    ((reply, to),) = ep.datagrams_to_send(now)
    _, src, retry = decode(reply)
    assert to == addr and src == 0 and retry.flags == ACK and retry.retry_token is not None
    assert len(reply) <= len(syn_raw)  # the Retry is no larger than a client's SYN (56 bytes)
    return retry.retry_token


def with_token(syn_raw: bytes, token: bytes) -> bytes:
    dst, src, seg = decode(syn_raw)
    seg.retry_token = token
    return encode(dst, src, seg)


def test_retry_tokens_are_bound_to_address_connection_and_time():
    ep = Endpoint(Config(half_open_limit=0), rng=random.Random(7))
    ep.listen()
    rng = random.Random(8)
    syn = forged_syn(rng)
    token = token_for(ep, CLIENT, syn, 100.0)
    # Another address, another connection ID, a changed byte, too late: dropped, no state.
    ep.receive_datagram(with_token(syn, token), ("10.0.0.9", 1000), 100.1)
    ep.receive_datagram(with_token(forged_syn(rng), token), CLIENT, 100.1)
    ep.receive_datagram(with_token(syn, token[:-1] + bytes([token[-1] ^ 1])), CLIENT, 100.1)
    ep.receive_datagram(with_token(syn, token), CLIENT, 100.0 + RETRY_TOKEN_LIFETIME + 0.1)
    assert ep.stats.retry_tokens_invalid == 4
    assert ep.connection_count == 0 and not ep.datagrams_to_send(100.2)
    # The right one makes a half-open connection and a SYN,ACK.
    ep.receive_datagram(with_token(syn, token), CLIENT, 100.2)
    assert ep.connection_count == 1
    ((reply, _),) = ep.datagrams_to_send(100.2)
    assert decode(reply)[2].flags == SYN | ACK
    # A different endpoint (another secret) does not take it.
    other = Endpoint(Config(half_open_limit=0), rng=random.Random(9))
    other.listen()
    other.receive_datagram(with_token(syn, token), CLIENT, 100.2)
    assert other.stats.retry_tokens_invalid == 1 and other.connection_count == 0


def test_a_forged_retry_is_ignored_by_the_client():
    ep = Endpoint(Config(), rng=random.Random(10))
    conn = ep.connect(SERVER, 0.0)
    ep.datagrams_to_send(0.0)
    wrong_ack = Segment(0, (conn.iss + 2) & 0xFFFFFFFF, ACK, 0, retry_token=b"x" * 16)
    ep.receive_datagram(encode(conn.local_cid, 0, wrong_ack), SERVER, 0.01)
    right = Segment(0, (conn.iss + 1) & 0xFFFFFFFF, ACK, 0, retry_token=b"y" * 16)
    ep.receive_datagram(encode(conn.local_cid, 0, right), ("10.6.6.6", 1), 0.01)  # not from the server
    assert conn.retry_token is None
    ep.receive_datagram(encode(conn.local_cid, 0, right), SERVER, 0.02)
    assert conn.retry_token == b"y" * 16
    # (The forged ones were answered as strangers are: with a RST.)
    (syn,) = [seg for d, _ in ep.datagrams_to_send(0.02) if (seg := decode(d)[2]).flags & SYN]
    assert syn.retry_token == b"y" * 16
    # Only one Retry per connection.
    again = Segment(0, (conn.iss + 1) & 0xFFFFFFFF, ACK, 0, retry_token=b"z" * 16)
    ep.receive_datagram(encode(conn.local_cid, 0, again), SERVER, 0.03)
    assert conn.retry_token == b"y" * 16


def test_half_open_connections_are_limited_per_source_host():
    ep = Endpoint(Config(half_open_per_source=4), rng=random.Random(11))
    ep.listen()
    rng = random.Random(12)
    for port in range(10):
        ep.receive_datagram(forged_syn(rng), ("10.6.6.6", port + 1), 0.0)
    assert ep.connection_count == 4
    assert ep.stats.retries_sent == 6
    # The listener is now under pressure: another host's SYN gets a Retry too,
    # for PRESSURE_HOLD seconds after the last one, then a SYN,ACK again.
    ep.receive_datagram(forged_syn(rng), ("10.0.0.1", 1), 1.0)
    assert ep.stats.retries_sent == 7 and ep.connection_count == 4
    ep.receive_datagram(forged_syn(rng), ("10.0.0.1", 2), 1.0 + PRESSURE_HOLD + 0.1)
    assert ep.stats.retries_sent == 7


def test_half_open_lifetime_is_a_few_syn_acks():
    ep = Endpoint(Config(synack_retries=2), rng=random.Random(13))
    ep.listen()
    ep.receive_datagram(forged_syn(random.Random(14)), CLIENT, 0.0)
    synacks = len(ep.datagrams_to_send(0.0))
    now = 0.0
    while (deadline := ep.get_timer()) is not None and now < 100:
        now = deadline
        ep.handle_timer(now)
        synacks += sum(decode(d)[2].flags == SYN | ACK for d, _ in ep.datagrams_to_send(now))
    assert synacks == 3  # the first and two retransmissions
    assert ep.connection_count == 0
    assert now <= 1 + 2 + 4 + 0.01


def test_an_unreachable_address_gets_no_more_syn_acks():
    ep = Endpoint(Config(), rng=random.Random(15))
    ep.listen()
    rng = random.Random(16)
    ep.receive_datagram(forged_syn(rng), CLIENT, 0.0)
    ((synack, _),) = ep.datagrams_to_send(0.0)
    assert ep.connection_count == 1
    # ICMP port unreachable came back, quoting the SYN,ACK.
    assert ep.address_unreachable(CLIENT, 0.001, synack[:64]) == []
    assert not ep.datagrams_to_send(0.001)  # dropped silently: no RST to a closed port
    assert ep.connection_count == 0 and ep.stats.half_open_unreachable == 1
    ep.receive_datagram(forged_syn(rng), CLIENT, 1.0)  # its SYNs are ignored for a while
    assert not ep.datagrams_to_send(1.0) and ep.stats.syn_dropped_unreachable == 1
    ep.receive_datagram(forged_syn(rng), CLIENT, 1.0 + Config().unreachable_hold)
    # Heard again after: a Retry (a half-open connection died of an ICMP
    # error: the listener is under pressure for a while), then a SYN,ACK.
    ((reply, _),) = ep.datagrams_to_send(6.0)
    assert decode(reply)[2].retry_token is not None
    later = 6.0 + PRESSURE_HOLD + 0.1  # (each Retry extends the pressure)
    ep.receive_datagram(forged_syn(rng), CLIENT, later)
    ((reply, _),) = ep.datagrams_to_send(later)
    assert decode(reply)[2].flags == SYN | ACK


@pytest.mark.parametrize("retry", [False, True])
def test_a_backlog_full_of_forged_syns_leaves_room_for_a_proven_client(retry):
    """Forged SYNs take at most half the backlog; a client that echoes a
    Retry token finds the rest."""
    sim = Simulator(seed=17, default_link=LinkConfig(delay=0.005))
    server = sim.add_node(SERVER, Endpoint(Config(backlog=8, half_open_limit=0 if retry else 64),
                                           rng=sim.make_rng("server")))
    client = sim.add_node(CLIENT, Endpoint(Config(), rng=sim.make_rng("client")))
    server.listen()
    flood(sim, server, random.Random(18), 200, 0.0, 0.0001, ports=200)
    sim.run(until=0.03)
    assert server.connection_count <= 4
    conns = [client.connect(SERVER, sim.now) for _ in range(3)]
    sim.run(until=sim.now + 0.1)
    assert all(c.state == State.ESTABLISHED for c in conns)


def test_an_error_for_our_own_syn_or_ack_does_not_shut_the_address_out():
    """A chat peer not started yet answers our SYN with port unreachable; a
    peer that exited answers our last ACK so. Either may connect to us next:
    only an error for a listener's answer (SYN,ACK or Retry) holds the address."""
    ep = Endpoint(Config(), rng=random.Random(19))
    ep.listen()
    conn = ep.connect(CLIENT, 0.0)
    ((syn, _),) = ep.datagrams_to_send(0.0)
    assert ep.address_unreachable(CLIENT, 0.001, syn[:64]) == [conn]  # ours to refuse
    ack = encode(5, 6, Segment(1, 2, ACK, 100, tsval=1, tsecr=0))
    ep.address_unreachable(CLIENT, 0.002, ack[:64])
    ep.receive_datagram(forged_syn(random.Random(20)), CLIENT, 0.5)
    assert ep.stats.syn_dropped_unreachable == 0
    assert any(decode(d)[2].flags == SYN | ACK for d, _ in ep.datagrams_to_send(0.5))
    # A Retry that drew the error does hold it.
    retry = encode(7, 0, Segment(0, 1, ACK, 0, retry_token=bytes(16)))
    ep.address_unreachable(("10.6.6.6", 1), 0.6, retry[:64])
    ep.receive_datagram(forged_syn(random.Random(21)), ("10.6.6.6", 1), 0.7)
    assert ep.stats.syn_dropped_unreachable == 1


@pytest.mark.parametrize("field, value", [
    ("half_open_limit", -1), ("half_open_per_source", 0), ("synack_retries", -1),
    ("unreachable_hold", -1.0), ("reset_rate", -5.0), ("reset_burst", -1),
])
def test_limits_reject_impossible_values(field, value):
    with pytest.raises(ValueError, match=field):
        Config(**{field: value})
