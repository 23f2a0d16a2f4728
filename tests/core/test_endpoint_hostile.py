"""Well-formed hostile datagrams at a live endpoint: forged connection IDs,
spoofed peers, blind RSTs and SYNs. Each is dropped or challenged and counted,
and the connections keep going, byte-exact."""

import random

from gannet.config import Config
from gannet.core.endpoint import Endpoint
from gannet.core.states import State
from gannet.sim import LinkConfig, Simulator
from gannet.wire import Segment, decode, encode
from gannet.wire.segment import ACK, PSH, RST, SYN

SERVER = ("10.0.0.2", 2000)
CLIENTS = [("10.0.0.1", 1000 + i) for i in range(4)]
ATTACKER = ("10.6.6.6", 666)


def test_forged_segments_do_not_disturb_live_connections():
    sim = Simulator(seed=5, default_link=LinkConfig(delay=0.002))
    server = sim.add_node(SERVER, Endpoint(Config(), rng=sim.make_rng("server")))
    replies_to_attacker = []

    class Attacker:
        def receive_datagram(self, data, addr, now):
            replies_to_attacker.append(decode(data)[2])

        def datagrams_to_send(self, now):
            return []

        def get_timer(self):
            return None

        def handle_timer(self, now):
            pass

    sim.add_node(ATTACKER, Attacker())
    server.listen()
    payloads = [random.Random(i).randbytes(200_000) for i in range(len(CLIENTS))]
    clients, conns = [], []
    for i, addr in enumerate(CLIENTS):
        ep = sim.add_node(addr, Endpoint(Config(), rng=sim.make_rng(f"client{i}")))
        clients.append(ep)
        conns.append(ep.connect(SERVER, sim.now))
    sim.run(until=0.05)
    accepted = []
    while (c := server.accept()) is not None:
        accepted.append(c)
    assert len(accepted) == len(CLIENTS)

    sent = [0] * len(CLIENTS)

    def pump():
        for i, conn in enumerate(conns):
            while sent[i] < len(payloads[i]) and (n := conn.send(payloads[i][sent[i]:sent[i] + 65536])):
                sent[i] += n

    rng = random.Random(9)
    forged = {"unknown": 0, "spoofed": 0, "blind": 0}
    answerable = 0  # forged datagrams that are not RSTs (a RST is never answered)
    for k in range(300):
        t = 0.06 + k * 0.003
        sim.call_at(t, pump)
        victim = accepted[k % len(accepted)]
        kind = k % 5
        if kind == 0:  # a connection ID that does not exist
            raw = encode(rng.getrandbits(32) | 1, rng.getrandbits(32) | 1,
                         Segment(rng.getrandbits(32), rng.getrandbits(32), ACK | PSH, 100, b"junk"))
            forged["unknown"] += 1
        elif kind == 1:  # the victim's ID, but not its peer's
            raw = encode(victim.local_cid, victim.remote_cid ^ 0x5A5A, Segment(1, 2, RST | ACK))
            forged["spoofed"] += 1
        else:  # both IDs right (an on-path observer), sequence numbers guessed
            flags = (RST, SYN, ACK | PSH)[kind - 2]
            ack = 0 if flags == RST else rng.getrandbits(32)
            seg = Segment(rng.getrandbits(32), ack, flags, 100, b"evil" if flags & PSH else b"")
            raw = encode(victim.local_cid, victim.remote_cid, seg)
            forged["blind"] += 1
        answerable += not decode(raw)[2].flags & RST
        sim.call_at(t, server.receive_datagram, raw, ATTACKER, t)
    sim.call_at(1.0, pump)
    sim.run(until=5)  # every forged datagram is in by t=1
    by_peer = {c.remote_cid: c for c in accepted}
    for conn, payload in zip(conns, payloads):
        peer = by_peer[conn.local_cid]
        got = peer.recv(1 << 22)
        assert got == payload, f"connection {conn.local_cid:#x}: {len(got)} of {len(payload)} bytes"
        assert peer.state == State.ESTABLISHED and conn.state == State.ESTABLISHED
        assert peer.remote_addr == conn_addr(clients, conn), "a forged datagram moved the connection"
    stats = server.stats
    assert stats.malformed_dropped == 0
    assert stats.unknown_connection == forged["unknown"]
    assert stats.spoofed_dropped == forged["spoofed"]
    # Right IDs from another address than the peer's: plaintext, so nothing
    # says the peer sent them; they never reach the connection.
    assert stats.other_address_dropped == forged["blind"]
    # The attacker hears only RSTs, never the victims' data, and the same for
    # a live ID as for one it made up: one RST per forged datagram that is
    # not itself a RST (issue 12, finding 13: no scanning for live IDs).
    assert all(s.flags & RST for s in replies_to_attacker)
    assert len(replies_to_attacker) == answerable


def conn_addr(clients, conn):
    return next(addr for addr, ep in zip(CLIENTS, clients) if conn in ep.connections)


def test_a_plaintext_peer_that_moves_is_not_followed():
    """Nothing in a plaintext datagram proves who sent it, so a plaintext
    connection keeps its peer's address (docs/security.md, "A peer that
    moves"): what comes from elsewhere is dropped and counted, and the
    connection is unchanged. An encrypted one follows its peer once the new
    path is validated (tests/crypto/test_migration.py)."""
    sim = Simulator(seed=6, default_link=LinkConfig(delay=0.002))
    server = sim.add_node(SERVER, Endpoint(Config(), rng=sim.make_rng("server")))
    client = sim.add_node(CLIENTS[0], Endpoint(Config(), rng=sim.make_rng("client")))
    server.listen()
    conn = client.connect(SERVER, sim.now)
    conn.send(b"before the move ")
    sim.run(until=0.5)
    peer = server.accept()
    assert peer.recv(100) == b"before the move "
    # NAT rebinding: the same endpoint now sends from another address.
    sim.remove_node(client)
    moved = ("10.0.0.9", 4444)
    sim.add_node(moved, client)
    sim.call_at(0.6, conn.send, b"after")
    sim.run(until=2)
    assert peer.remote_addr == CLIENTS[0]
    assert peer.recv(100) == b""
    assert server.stats.other_address_dropped > 0
    assert peer.state == State.ESTABLISHED
