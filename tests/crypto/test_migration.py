"""A peer that moves (NAT rebinding, RFC 9000 section 9): an encrypted
connection follows its peer to a new address once a path challenge sent
there is answered; a datagram from elsewhere that does not open, or was
seen before, or whose sender cannot answer the challenge, moves nothing.
Simulated network and time; every run bounded."""

from __future__ import annotations

import hashlib
import random

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from gannet.config import Config
from gannet.core.states import State
from gannet.crypto.endpoint import SecureEndpoint, Security
from gannet.sim import LinkConfig, Simulator
from gannet.wire.protected import PROTECTED, RESET_SIZE, seal_header

SERVER = ("10.0.0.2", 2000)
CLIENT = ("10.0.0.1", 1000)
MOVED = ("10.0.0.1", 41234)  # the same host, another source port: a NAT rebinding
ATTACKER = ("10.6.6.6", 666)
ATTACKER2 = ("10.6.6.7", 667)
CONFIG = Config(pmtud=False)


class Recorder:
    """A node that receives and never answers (an attacker's address, or a
    victim's that an attacker wrote on a datagram)."""

    def __init__(self):
        self.received: list[bytes] = []

    def receive_datagram(self, data, addr, now):
        self.received.append(bytes(data))

    def datagrams_to_send(self, now):
        return []

    def get_timer(self):
        return None

    def handle_timer(self, now):
        pass


class Tap:
    """The client's node, with an on-path attacker's hand on its output:
    `copy(datagram) -> bool` picks datagrams to send also from one of
    `sources` in turn, at once, so that the copy reaches the server first
    (a race the attacker wins). Every datagram sent is in `sent`, with its
    time."""

    def __init__(self, sim: Simulator, ep: SecureEndpoint, server: SecureEndpoint, copy,
                 sources=(ATTACKER,)):
        self.sim, self.ep, self.server, self.copy, self.sources = sim, ep, server, copy, sources
        self.copied: list[bytes] = []
        self.sent: list[tuple[float, bytes]] = []

    def receive_datagram(self, data, addr, now):
        self.ep.receive_datagram(data, addr, now)

    def datagrams_to_send(self, now):
        out = self.ep.datagrams_to_send(now)
        for d, _ in out:
            self.sent.append((now, bytes(d)))
            if d[0] == PROTECTED and self.copy(d):
                source = self.sources[len(self.copied) % len(self.sources)]
                self.copied.append(bytes(d))
                self.sim.call_at(now, self.server.receive_datagram, bytes(d), source, now)
        return out

    def get_timer(self):
        return self.ep.get_timer()

    def handle_timer(self, now):
        self.ep.handle_timer(now)


def _world(seed: int, *, insecure: bool = False, config: Config = CONFIG,
           link: LinkConfig | None = None):
    # (20 Mbit/s: a transfer of a few MB takes about a second)
    link = link or LinkConfig(delay=0.005, bandwidth=2_500_000, queue_bytes=200_000)
    sim = Simulator(seed=seed, default_link=link)
    key = X25519PrivateKey.generate()
    sec_s = Security(insecure=True) if insecure else Security(static=key)
    sec_c = Security(insecure=True) if insecure else Security(server_key=key.public_key().public_bytes_raw())
    server = SecureEndpoint(config, sim.make_rng("server"), security=sec_s)
    client = SecureEndpoint(config, sim.make_rng("client"), security=sec_c)
    sim.add_node(SERVER, server)
    server.listen()
    return sim, server, client


def _connected(sim: Simulator, server, client, first: bytes, until: float):
    """The client, at CLIENT, connects and sends `first`; run to `until`;
    (the client's connection, the server's, which read `first`)."""
    sim.add_node(CLIENT, client)
    conn = client.connect(SERVER, sim.now)
    conn.send(first)
    sim.run(until=until)
    peer = server.accept()
    assert peer is not None and peer.recv(100) == first
    return conn, peer


def _rebind(sim: Simulator, client) -> None:
    """The NAT gives the client's flow a new source port: its datagrams now
    come from MOVED, and only what is sent to MOVED reaches it."""
    sim.remove_node(client)
    sim.add_node(MOVED, client)


def _transfer(sim: Simulator, server, client, data: bytes, until: float = 30.0):
    """Send `data` client -> server and close; returns (client conn, server
    conn, what the server read)."""
    conn = client.connect(SERVER, sim.now)
    state = {"sent": 0, "peer": None, "closed": False}
    got = bytearray()

    def pump():
        while state["sent"] < len(data) and (n := conn.send(data[state["sent"] : state["sent"] + 65536])):
            state["sent"] += n
        if state["sent"] == len(data) and not state["closed"] and conn.state == State.ESTABLISHED:
            conn.close(sim.now)
            state["closed"] = True
        if state["peer"] is None:
            state["peer"] = server.accept()
        if state["peer"] is not None:
            while chunk := state["peer"].recv(1 << 20):
                got.extend(chunk)
        if conn.error is None and not (state["peer"] is not None and state["peer"].eof):
            sim.call_later(0.002, pump)

    sim.call_at(sim.now, pump)
    sim.run(until=until, stop=lambda: state["peer"] is not None and state["peer"].eof)
    if state["peer"] is not None:
        while chunk := state["peer"].recv(1 << 20):
            got.extend(chunk)
    return conn, state["peer"], bytes(got)


def test_a_transfer_whose_client_changes_source_port_midway_completes_verified():
    sim, server, client = _world(11)
    sim.add_node(CLIENT, client)
    data = random.Random(3).randbytes(3_000_000)
    moved_at = {}

    def rebind():
        _rebind(sim, client)
        moved_at["t"] = sim.now

    sim.call_at(0.5, rebind)
    conn, peer, got = _transfer(sim, server, client, data)
    assert "t" in moved_at and peer is not None
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert len(got) == len(data)
    assert moved_at["t"] < sim.now  # (it moved while the transfer was under way)
    assert peer.remote_addr == MOVED
    stats = server.security_stats
    assert stats.migrations == 1
    assert stats.path_challenges_sent >= 1
    assert client.security_stats.path_responses_sent >= 1
    assert conn.error is None and peer.error is None


def test_a_copy_raced_from_another_address_draws_a_challenge_there_and_moves_nothing():
    """An on-path attacker copies the client's datagrams and gets each copy
    to the server first from its own address: the copy opens (it is the
    client's), its bytes are taken, the original is then a replay; the
    server challenges the attacker's address, which cannot answer (it
    cannot read or seal), and the peer stays where it is."""
    sim, server, client = _world(12)
    copies = {"n": 0}

    def copy(d):  # every tenth sealed datagram once data flows
        copies["n"] += 1
        return copies["n"] > 4 and copies["n"] % 10 == 0

    tap = Tap(sim, client, server, copy, sources=(ATTACKER, ATTACKER2))
    sim.add_node(CLIENT, tap)
    attacker = sim.add_node(ATTACKER, Recorder())
    attacker2 = sim.add_node(ATTACKER2, Recorder())
    data = random.Random(4).randbytes(2_000_000)
    conn, peer, got = _transfer(sim, server, client, data)
    assert tap.copied, "the attacker copied nothing"
    assert got == data
    assert peer.remote_addr == CLIENT
    stats = server.security_stats
    assert stats.migrations == 0
    assert stats.path_challenges_sent >= 1
    assert stats.replay_dropped >= 1  # the originals, after their copies
    # What the attacker's address got: challenges (sealed) and nothing
    # of the connection's data or ACKs; one validation at a time, so far
    # fewer challenges than copies.
    heard = attacker.received + attacker2.received
    assert attacker.received and all(d[0] == PROTECTED for d in heard)
    assert len(heard) == stats.path_challenges_sent
    assert stats.path_challenges_sent < len(tap.copied)
    assert stats.path_challenges_limited >= 1


def test_replayed_and_forged_datagrams_from_another_address_move_nothing():
    sim, server, client = _world(13)
    tap = Tap(sim, client, server, lambda d: False)
    sim.add_node(CLIENT, tap)
    sim.add_node(ATTACKER, Recorder())
    data = random.Random(5).randbytes(500_000)
    rng = random.Random(6)
    conn_holder = {}

    def attack():
        peer_cid = next(iter(server.connections)).local_cid
        conn_holder["cid"] = peer_cid
        # replays of what the client sent and the server has had
        seen = [d for t, d in tap.sent if t < sim.now - 0.05 and d[0] == PROTECTED]
        for d in seen[-20:]:
            server.receive_datagram(d, ATTACKER, sim.now)
        for _ in range(20):  # forgeries naming the connection
            forged = seal_header(0, peer_cid, rng.getrandbits(23)) + rng.randbytes(60)
            server.receive_datagram(forged, ATTACKER, sim.now)

    sim.call_at(0.3, attack)
    conn, peer, got = _transfer(sim, server, client, data)
    assert "cid" in conn_holder
    assert got == data and peer.remote_addr == CLIENT
    stats = server.security_stats
    assert stats.replay_dropped >= 20
    assert stats.unauthenticated_dropped >= 20
    assert stats.path_challenges_sent == 0 and stats.migrations == 0


def test_a_plaintext_connection_does_not_follow_its_peer():
    """--insecure: nothing proves who sent a datagram, so a connection does
    not move; after a NAT rebinding the client's datagrams are dropped and
    counted, and the connection ends as an unreachable peer would."""
    sim, server, client = _world(14, insecure=True)
    conn, peer = _connected(sim, server, client, b"before", 0.2)
    _rebind(sim, client)
    sim.call_at(0.3, conn.send, b"after")
    sim.run(until=1.5)
    assert peer.remote_addr == CLIENT
    assert peer.recv(100) == b""
    assert server.stats.other_address_dropped >= 1
    assert peer.state == State.ESTABLISHED


def test_a_reset_size_datagram_from_a_new_address_is_no_migration():
    # (a reset never opens: it cannot start a validation either)
    sim, server, client = _world(15)
    _, peer = _connected(sim, server, client, b"x", 0.2)
    server.receive_datagram(seal_header(0, peer.local_cid, 5) + bytes(RESET_SIZE - 8), ATTACKER, sim.now)
    assert server.security_stats.resets_forged == 1
    assert server.security_stats.path_challenges_sent == 0 and peer.remote_addr == CLIENT


def test_a_peer_that_moves_while_idle_is_followed_on_its_keep_alive():
    """A client that moved while nothing was in flight sends nothing but
    keep-alive probes, which the connection drops as old (they sit below
    its window): authenticated, they still draw the challenge that moves
    the peer, and data flows to the new address after."""
    sim, server, client = _world(16, config=Config(pmtud=False, keepalive_idle=0.5, keepalive_interval=0.25),
                                 link=LinkConfig(delay=0.005))
    conn, peer = _connected(sim, server, client, b"hello", 0.1)
    _rebind(sim, client)
    dropped = peer.stats.dropped_segments
    sim.run(until=1.5)  # idle: only keep-alive probes cross
    assert peer.stats.dropped_segments > dropped  # (the probes, judged old by the connection)
    assert peer.remote_addr == MOVED
    assert server.security_stats.migrations == 1
    peer.send(b"found you")
    sim.run(until=2.0)
    assert conn.recv(100) == b"found you"
    assert conn.error is None and peer.error is None
