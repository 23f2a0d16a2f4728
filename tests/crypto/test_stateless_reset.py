"""Stateless reset (docs/security.md): a server that restarted answers the
old connection's sealed datagrams with a reset the client can check, and
the client ends at once with a clear error instead of timing out; a forged
reset changes nothing and is counted; resets are paced and never answer a
reset, so two sides that both lost their state cannot keep each other busy.
Simulated time, counted in steps."""

from __future__ import annotations

import random

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from gannet.config import Config
from gannet.crypto.endpoint import PEER_RESET_MESSAGE, SecureEndpoint, Security, reset_key, reset_token
from gannet.wire.protected import RESET_SIZE, encode_reset, parse_header, seal_header

from securepair import Pair

CONFIG = Config(pmtud=False)


def _established(pair: Pair):
    conn = pair.client.connect("s", pair.now)
    accepted = []

    def done():
        if not accepted and (srv := pair.server.accept()) is not None:
            accepted.append(srv)
        return bool(accepted) and conn.state.name == "ESTABLISHED"

    pair.run(done, 1000)
    srv = accepted[0]
    conn.send(b"hello" * 300)
    got = bytearray()

    def received():
        got.extend(srv.recv(1 << 16))
        return len(got) == 1500

    pair.run(received, 1000)
    return conn, srv


def _restart_server(pair: Pair, security: Security) -> None:
    """The server process is gone and a new one listens at the same address
    with the same settings: none of the old connections are known."""
    pair.server = SecureEndpoint(CONFIG, random.Random(77), security=security)
    pair.server.listen()


def _send_until_it_ends(pair: Pair, conn, steps: int) -> float:
    """`conn` (whose peer restarted) sends; run `steps` steps of 1 ms
    (simulated) or until it ends in error; the simulated time that took."""
    start = pair.now
    conn.send(b"are you there?")
    for _ in range(steps):
        if conn.error is not None:
            break
        pair.step()
    return pair.now - start


def _forged_resets_change_nothing(pair: Pair, endpoint: SecureEndpoint, addr: str, local, remote,
                                  forged: list[bytes], right: bytes) -> None:
    """Each of `forged` reaches `endpoint` from its peer's address `addr`,
    then `right` (a true reset) from another address: every one is counted
    as forged and none as received, `local` (the connection there) stays
    established and still delivers to `remote`, and nothing answered a
    reset."""
    for d in forged:
        endpoint.receive_datagram(d, addr, pair.now)
    endpoint.receive_datagram(right, "elsewhere", pair.now)
    stats = endpoint.security_stats
    assert (stats.resets_forged, stats.resets_received) == (len(forged) + 1, 0)
    assert local.error is None and local.state.name == "ESTABLISHED"
    local.send(b"still here")
    got = bytearray()

    def received():
        got.extend(remote.recv(100))
        return got == b"still here"

    pair.run(received, 200)
    assert stats.resets_sent == 0


def _after_restart(security: Security, steps: int, client: Security | None = None):
    """Connect, exchange data, restart the server, send again
    (`_send_until_it_ends`)."""
    pair = Pair(client or Security(), security, config=CONFIG)
    conn, _ = _established(pair)
    _restart_server(pair, security)
    return pair, conn, _send_until_it_ends(pair, conn, steps)


def test_a_restarted_server_resets_the_connection_and_the_client_fails_at_once():
    security = Security(static=X25519PrivateKey.generate())
    pair, conn, elapsed = _after_restart(security, 200)
    assert isinstance(conn.error, ConnectionResetError)
    assert str(conn.error) == PEER_RESET_MESSAGE
    assert elapsed <= 0.005  # one exchange of simulated milliseconds, not a timeout
    assert [type(e.error) for e in pair.terminated("c")] == [ConnectionResetError]
    assert pair.server.security_stats.resets_sent == 1
    assert pair.client.security_stats.resets_received == 1
    assert pair.client.security_stats.resets_forged == 0
    reset = [d for d in pair.recorded if len(d) == RESET_SIZE]
    assert len(reset) == 1 and parse_header(reset[0])[1] == conn.remote_cid


def test_a_psk_server_resets_too():
    security = Security(psk=bytes(range(32)))
    _, conn, _ = _after_restart(security, 200, client=security)
    assert str(conn.error) == PEER_RESET_MESSAGE


def test_without_a_lasting_secret_no_reset_is_sent_and_the_connection_waits():
    # (an identity made for the endpoint: the restarted one has another, and
    # could make no token the client would believe, so it sends none)
    pair, conn, _ = _after_restart(Security(), 200)
    assert conn.error is None
    assert pair.server.security_stats.resets_sent == 0
    assert pair.server.security_stats.unknown_sealed > 0


def test_a_forged_reset_changes_nothing_and_is_counted():
    security = Security(static=X25519PrivateKey.generate())
    pair = Pair(Security(), security, config=CONFIG)
    conn, srv = _established(pair)
    rng = random.Random(5)
    wrong_key = reset_key(Security(static=X25519PrivateKey.generate()))
    assert wrong_key is not None
    forged = [
        encode_reset(conn.remote_cid, rng.randbytes(16), rng.randbytes(17)),  # a guessed token
        encode_reset(conn.remote_cid, reset_token(wrong_key, conn.remote_cid), rng.randbytes(17)),
    ]
    right = reset_token(reset_key(security), conn.remote_cid)
    forged.append(encode_reset(conn.remote_cid ^ 1, right, rng.randbytes(17)))  # another connection
    _forged_resets_change_nothing(pair, pair.client, "s", conn, srv, forged,
                                  encode_reset(conn.remote_cid, right, rng.randbytes(17)))


def _junk(cid: int, n: int, rng: random.Random) -> bytes:
    """What a peer that lost its state sees: a sealed datagram for a
    connection it does not know."""
    return seal_header(0, cid, rng.getrandbits(23)) + rng.randbytes(n - 8)


def test_two_sides_that_both_lost_their_state_do_not_reset_each_other_in_a_loop():
    rng = random.Random(6)
    a = SecureEndpoint(CONFIG, random.Random(1), security=Security(static=X25519PrivateKey.generate()))
    b = SecureEndpoint(CONFIG, random.Random(2), security=Security(static=X25519PrivateKey.generate()))
    a.listen()  # (two servers that restarted)
    b.listen()
    a.receive_datagram(_junk(0x1234, 80, rng), "b", 0.0)
    exchanged = []
    now = 0.0
    for _ in range(50):  # ping-pong whatever either sends, far longer than a loop needs
        now += 0.01
        out_a = a.datagrams_to_send(now)
        out_b = b.datagrams_to_send(now)
        for d, _ in out_a:
            exchanged.append(bytes(d))
            b.receive_datagram(d, "a", now)
        for d, _ in out_b:
            exchanged.append(bytes(d))
            a.receive_datagram(d, "b", now)
    assert [len(d) for d in exchanged] == [RESET_SIZE]  # a's one reset, which b does not answer
    assert (a.security_stats.resets_sent, b.security_stats.resets_sent) == (1, 0)
    assert b.security_stats.resets_forged == 1


def test_resets_are_paced_and_never_answer_a_datagram_of_reset_size():
    rng = random.Random(7)
    config = Config(pmtud=False, reset_rate=10, reset_burst=5)
    ep = SecureEndpoint(config, random.Random(1), security=Security(psk=bytes(32)))
    ep.listen()
    for i in range(40):  # a flood of sealed datagrams for unknown connections, at one instant
        ep.receive_datagram(_junk(1000 + i, 60, rng), "x", 1.0)
    for n in (RESET_SIZE, RESET_SIZE - 5):
        ep.receive_datagram(_junk(5000, n, rng), "x", 1.0)
    out = ep.datagrams_to_send(1.0)
    stats = ep.security_stats
    assert len(out) == stats.resets_sent == 5
    assert stats.resets_rate_limited == 35
    assert all(len(d) == RESET_SIZE for d, _ in out)
    ep.receive_datagram(_junk(2000, 60, rng), "x", 1.5)  # half a second later: 5 tokens again
    assert len(ep.datagrams_to_send(1.5)) == 1


def test_a_reset_in_time_wait_ends_nothing_in_error():
    """The server forgets a connection once its FIN is acknowledged; a late
    duplicate of the client's last ACK then draws a reset, which finds the
    client in TIME_WAIT: the connection was over, and it stays a clean
    close."""
    security = Security(static=X25519PrivateKey.generate())
    pair = Pair(Security(), security, config=CONFIG)
    conn, srv = _established(pair)
    conn.close(pair.now)
    srv.close(pair.now)
    pair.run(lambda: conn.state.name == "TIME_WAIT", 1000)
    _reset_in_time_wait(pair, pair.client, "s", conn, reset_token(reset_key(security), conn.remote_cid))


def _reset_in_time_wait(pair: Pair, endpoint: SecureEndpoint, addr: str, conn, token: bytes) -> None:
    """A true reset (with `token`) reaches `endpoint` from its peer's
    address `addr` while `conn` waits in TIME_WAIT: it is taken, and the
    connection stays a clean close."""
    endpoint.receive_datagram(encode_reset(conn.remote_cid, token, bytes(17)), addr, pair.now)
    assert endpoint.security_stats.resets_received == 1
    assert conn.error is None and conn.state.name == "TIME_WAIT"


def test_a_reflected_datagram_draws_no_reset_that_would_end_our_own_connection():
    """One user's client and server share an identity, so they make the same
    tokens. An attacker reflects a datagram meant for the server back to
    the client: were the client to answer with a reset (for the server's
    ID, under the shared key), the attacker could hand it back to the client
    as the server's. It answers nothing, listening or not."""
    key = X25519PrivateKey.generate()
    for listening in (False, True):
        pair = Pair(Security(static=key), Security(static=key), config=CONFIG)
        if listening:
            pair.client.listen()
        conn, _ = _established(pair)
        conn.send(b"x" * 100)
        to_server = [d for d, _ in pair.client.datagrams_to_send(pair.now)]
        assert to_server and parse_header(to_server[0])[1] == conn.remote_cid
        pair.client.receive_datagram(to_server[0], "s", pair.now)  # reflected
        answered = [bytes(d) for d, _ in pair.client.datagrams_to_send(pair.now)]
        for d in answered:  # and whatever it said, reflected too
            pair.client.receive_datagram(d, "s", pair.now)
        assert pair.client.security_stats.resets_sent == 0, listening
        assert all(len(d) > RESET_SIZE for d in answered)
        assert conn.error is None and conn.state.name == "ESTABLISHED"


# ---------------------------------------------------------------- a client's
def _restart_client(pair: Pair, security: Security) -> None:
    """The client process is gone and a new one runs at the same address
    (a fixed local port) with the same settings: it knows no connection."""
    pair.client = SecureEndpoint(CONFIG, random.Random(78), security=security)


def _token_given(pair: Pair, conn) -> None:
    """Run until the server confirmed having the client's token (sent an
    RTO after the handshake), if the client has one to give."""
    session = pair.client._sessions[conn.local_cid]
    if session.owes_token:
        pair.run(lambda: not session.owes_token, 2000)


def _after_client_restart(client: Security, steps: int, server: Security | None = None):
    """Connect, exchange data, let the client give its token, restart the
    client, have the server send (`_send_until_it_ends`)."""
    pair = Pair(client, server or Security(static=X25519PrivateKey.generate()), config=CONFIG)
    conn, srv = _established(pair)
    _token_given(pair, conn)
    _restart_client(pair, client)
    return pair, conn, srv, _send_until_it_ends(pair, srv, steps)


def test_the_client_gives_the_server_its_token_sealed_after_the_handshake():
    client = Security(static=X25519PrivateKey.generate())
    pair = Pair(client, Security(static=X25519PrivateKey.generate()), config=CONFIG)
    conn, srv = _established(pair)
    established = pair.now
    # Not with the handshake: an RTO later (a connection over sooner never
    # needed it, and the handshake's datagrams are as they were).
    assert pair.server.security_stats.reset_tokens_received == 0
    _token_given(pair, conn)
    assert pair.now - established >= 0.2  # (min_rto)
    assert pair.server.security_stats.reset_tokens_received == 1
    # It arrived (the server answered the challenge that carried it), and
    # it is the token the client's key makes for its ID, as a client.
    assert pair.client.security_stats.path_challenges_sent == 1
    assert pair.server.security_stats.path_responses_sent == 1
    assert not pair.client._sessions[conn.local_cid].owes_token
    token = pair.server._sessions[srv.local_cid].peer_reset_token
    assert token == reset_token(reset_key(client), conn.local_cid, False)
    assert token not in b"".join(pair.recorded)  # never in clear
    assert pair.server.security_stats.migrations == 0  # (the control moved no one)


def test_a_restarted_client_resets_the_servers_connection_at_once():
    client = Security(static=X25519PrivateKey.generate())
    pair, conn, srv, elapsed = _after_client_restart(client, 200)
    assert isinstance(srv.error, ConnectionResetError)
    assert str(srv.error) == PEER_RESET_MESSAGE
    assert elapsed <= 0.005  # one exchange of simulated milliseconds, not a timeout
    assert [type(e.error) for e in pair.terminated("s")] == [ConnectionResetError]
    # (one reset per sealed datagram the server sent after the restart: its
    # data and an ACK went in the same step, and both drew one)
    reset = [d for d in pair.recorded if len(d) == RESET_SIZE]
    assert 1 <= len(reset) == pair.client.security_stats.resets_sent
    assert all(parse_header(d)[1] == srv.remote_cid for d in reset)
    assert pair.server.security_stats.resets_received == len(reset)
    assert pair.server.security_stats.resets_forged == 0


def test_a_psk_client_resets_too():
    security = Security(psk=bytes(range(32)))
    _, _, srv, _ = _after_client_restart(security, 200, server=security)
    assert str(srv.error) == PEER_RESET_MESSAGE


def test_a_client_without_a_lasting_secret_gives_no_token_and_the_server_waits():
    # (a code, or an identity made for the endpoint: a restarted client
    # could make no token the server would believe, so it gives none)
    pair, _, srv, _ = _after_client_restart(Security(), 200)
    assert pair.server.security_stats.reset_tokens_received == 0
    assert srv.error is None and srv.state.name == "ESTABLISHED"
    assert pair.client.security_stats.resets_sent == 0
    assert pair.client.security_stats.unknown_sealed > 0


def test_a_lost_token_is_sent_again_until_the_server_confirms_it():
    lost = {"n": 0}
    control_size = 71  # a sealed control segment with a challenge and a token

    def tap(d: bytes, direction: str) -> list[bytes]:
        if direction == "c->s" and len(d) == control_size and lost["n"] < 2:
            lost["n"] += 1
            return []
        return [d]

    client = Security(static=X25519PrivateKey.generate())
    pair = Pair(client, Security(static=X25519PrivateKey.generate()), config=CONFIG, tap=tap)
    conn, srv = _established(pair)
    session = pair.client._sessions[conn.local_cid]
    pair.run(lambda: not session.owes_token, 3000)  # each RTO, again (the output pass sends it)
    assert lost["n"] == 2
    assert pair.client.security_stats.path_challenges_sent == 3
    assert pair.server.security_stats.reset_tokens_received == 1
    _restart_client(pair, client)
    srv.send(b"still there?")
    pair.run(lambda: srv.error is not None, 200)
    assert str(srv.error) == PEER_RESET_MESSAGE


def test_a_forged_reset_for_the_clients_id_is_counted_and_changes_nothing():
    client = Security(static=X25519PrivateKey.generate())
    server = Security(static=X25519PrivateKey.generate())
    pair = Pair(client, server, config=CONFIG)
    conn, srv = _established(pair)
    _token_given(pair, conn)
    rng = random.Random(8)
    key = reset_key(client)
    cid = srv.remote_cid  # the client's ID, which a reset for the server names
    forged = [
        encode_reset(cid, rng.randbytes(16), rng.randbytes(17)),  # a guessed token
        encode_reset(cid, reset_token(reset_key(server), cid, False), rng.randbytes(17)),  # another key's
        # the client's key as a listener makes it (what a server of the same
        # user would answer: no oracle for the client's token)
        encode_reset(cid, reset_token(key, cid, True), rng.randbytes(17)),
        encode_reset(cid ^ 1, reset_token(key, cid, False), rng.randbytes(17)),  # another connection
    ]
    _forged_resets_change_nothing(pair, pair.server, "c", srv, conn, forged,
                                  encode_reset(cid, reset_token(key, cid, False), rng.randbytes(17)))


def test_a_clients_reset_in_time_wait_ends_nothing_in_error():
    """The server closes first and waits in TIME_WAIT; the client, done,
    forgets the connection, and a late duplicate of the server's draws a
    reset (here: made with the client's key): the connection was over."""
    client = Security(static=X25519PrivateKey.generate())
    pair = Pair(client, Security(static=X25519PrivateKey.generate()), config=CONFIG)
    conn, srv = _established(pair)
    _token_given(pair, conn)
    srv.close(pair.now)
    pair.run(lambda: conn.eof, 1000)
    conn.close(pair.now)
    pair.run(lambda: srv.state.name == "TIME_WAIT", 1000)
    _reset_in_time_wait(pair, pair.server, "c", srv, reset_token(reset_key(client), srv.remote_cid, False))


def test_a_client_with_the_servers_identity_is_no_reset_oracle_for_it():
    """One user's server and client share an identity. An attacker names
    the server's connection ID in a datagram to that client (which has no
    such connection): the client's reset is made as a client's, so handed
    to the server's peer as the server's, it is counted as forged."""
    key = X25519PrivateKey.generate()
    pair = Pair(Security(), Security(static=key), config=CONFIG)
    conn, srv = _established(pair)
    oracle = SecureEndpoint(CONFIG, random.Random(9), security=Security(static=key))
    oracle.receive_datagram(_junk(srv.local_cid, 80, random.Random(10)), "attacker", pair.now)
    out = oracle.datagrams_to_send(pair.now)
    assert len(out) == 1 and len(out[0][0]) == RESET_SIZE
    pair.client.receive_datagram(out[0][0], "s", pair.now)
    assert pair.client.security_stats.resets_forged == 1
    assert conn.error is None and conn.state.name == "ESTABLISHED"


def test_a_control_segment_at_the_end_of_a_gro_batch_reaches_the_security_layer():
    """GRO appends a shorter datagram to a batch of equal ones: a control
    segment after a run of data rows is taken by the security layer (here:
    a path challenge, answered), and the rows before it by the connection."""
    pair = Pair(Security(), Security(static=X25519PrivateKey.generate()), config=CONFIG)
    conn, srv = _established(pair)
    data = bytes(range(256)) * 40
    conn.send(data)
    rows = [bytes(d) for d, _ in pair.client.datagrams_to_send(pair.now)]
    size = len(rows[0])
    full = [r for r in rows if len(r) == size]
    assert len(full) >= 3
    session = pair.client._sessions[conn.local_cid]
    pair.client._challenge(conn, session, "s", pair.now)
    control = [bytes(d) for d, _ in pair.client.datagrams_to_send(pair.now)]
    assert len(control) == 1 and len(control[0]) < size
    responses = pair.server.security_stats.path_responses_sent
    pair.server.receive_batch(b"".join(full) + control[0], size, "c", pair.now)
    assert pair.server.security_stats.path_responses_sent == responses + 1
    assert srv.recv(1 << 20) == data[: len(full) * (size - 39)]
