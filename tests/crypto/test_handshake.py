"""Gannet's key exchange in its three modes: both sides agree on keys, and a
wrong code, a wrong PSK, a substituted server key, a man in the middle or
a mode mismatch fails with the error that says so, on both sides."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from gannet.crypto.handshake import ClientHandshake, HandshakeError, Mode, ServerHandshake
from gannet.crypto.protection import AES_128_GCM, CHACHA20_POLY1305, Opener, Sealer


def _run(client: ClientHandshake, server: ServerHandshake) -> None:
    reply = server.receive_hello(client.hello())
    server.receive_finished(client.receive_reply(reply))


def _traffic_works(client, server):
    c, s = client.result, server.result
    assert c.aead == s.aead and c.handshake_hash == s.handshake_hash
    sealer, opener = Sealer(c.send_secret, c.aead), Opener(s.recv_secret, s.aead)
    assert opener.open(b"h", 0, 0, sealer.seal(b"h", b"data")[1:]) == b"data"
    sealer, opener = Sealer(s.send_secret, s.aead), Opener(c.recv_secret, c.aead)
    assert opener.open(b"h", 0, 0, sealer.seal(b"h", b"back")[1:]) == b"back"


def test_identity_mode_gives_the_server_key_and_agreeing_keys():
    static = X25519PrivateKey.generate()
    client, server = ClientHandshake(), ServerHandshake(static)
    _run(client, server)
    assert client.result.server_key == static.public_key().public_bytes_raw()
    assert client.result.mode is Mode.IDENTITY
    assert client.result.send_secret != client.result.recv_secret
    _traffic_works(client, server)


def test_sessions_have_fresh_keys():
    static = X25519PrivateKey.generate()
    secrets = set()
    for _ in range(3):
        client, server = ClientHandshake(), ServerHandshake(static)
        _run(client, server)
        secrets.add(client.result.send_secret)
    assert len(secrets) == 3  # ephemeral keys: forward secrecy


@pytest.mark.parametrize("client_aes,server_aes,expect", [
    (True, True, AES_128_GCM), (True, False, CHACHA20_POLY1305), (False, True, CHACHA20_POLY1305)])
def test_aead_negotiation(client_aes, server_aes, expect):
    client = ClientHandshake(has_aes=client_aes)
    server = ServerHandshake(X25519PrivateKey.generate(), has_aes=server_aes)
    _run(client, server)
    assert client.result.aead == server.result.aead == expect


def test_pinned_key_accepted_and_changed_key_refused():
    static = X25519PrivateKey.generate()
    pinned = static.public_key().public_bytes_raw()
    _run(ClientHandshake(expected_server_key=pinned), ServerHandshake(static))
    client = ClientHandshake(expected_server_key=pinned)
    server = ServerHandshake(X25519PrivateKey.generate())  # someone else's server
    with pytest.raises(HandshakeError, match="not the pinned one") as info:
        client.receive_reply(server.receive_hello(client.hello()))
    assert info.value.reason == "key-changed"
    with pytest.raises(HandshakeError, match="refused this server's key"):
        server.receive_finished(client.failed())


def test_psk_mode_right_and_wrong():
    psk = os.urandom(32)
    client, server = ClientHandshake(psk=psk), ServerHandshake(X25519PrivateKey.generate(), psk=psk)
    _run(client, server)
    _traffic_works(client, server)
    client = ClientHandshake(psk=os.urandom(32))
    server = ServerHandshake(X25519PrivateKey.generate(), psk=psk)
    reply = server.receive_hello(client.hello())
    with pytest.raises(HandshakeError, match="wrong pre-shared key") as info:
        client.receive_reply(reply)
    assert info.value.reason == "wrong-secret"
    with pytest.raises(HandshakeError, match="wrong pre-shared key"):
        server.receive_finished(client.failed())


def test_code_mode_right_code():
    client = ClientHandshake(code="7-guitar-october")
    server = ServerHandshake(X25519PrivateKey.generate(), code="7-guitar-october")
    _run(client, server)
    assert client.result.mode is Mode.CODE
    _traffic_works(client, server)


def test_wrong_code_fails_on_both_sides():
    client = ClientHandshake(code="7-guitar-october")
    server = ServerHandshake(X25519PrivateKey.generate(), code="7-guitar-octopus")
    reply = server.receive_hello(client.hello())
    with pytest.raises(HandshakeError, match="wrong code"):
        client.receive_reply(reply)
    with pytest.raises(HandshakeError, match="wrong code"):
        server.receive_finished(client.failed())


def test_server_detects_wrong_secret_from_the_finished_mac():
    # Even a client that did not notice (here: one whose reply check is
    # skipped by handing it a finished message of another session) is caught.
    server = ServerHandshake(X25519PrivateKey.generate(), code="1-a-b")
    other_c, other_s = ClientHandshake(code="1-a-b"), ServerHandshake(X25519PrivateKey.generate(), code="1-a-b")
    finished = other_c.receive_reply(other_s.receive_hello(other_c.hello()))
    server.receive_hello(ClientHandshake(code="1-a-b").hello())
    with pytest.raises(HandshakeError, match="wrong code"):
        server.receive_finished(finished)


def test_man_in_the_middle_with_its_own_keys_is_refused_when_pinned():
    # The attacker answers the client as a server with its own key, and
    # opens its own session to the real server: the pinned client refuses.
    real = X25519PrivateKey.generate()
    client = ClientHandshake(expected_server_key=real.public_key().public_bytes_raw())
    mitm = ServerHandshake(X25519PrivateKey.generate())
    with pytest.raises(HandshakeError):
        client.receive_reply(mitm.receive_hello(client.hello()))


def test_man_in_the_middle_cannot_relay_a_code_session():
    # With a code, an attacker that does not know it fails as a server
    # (to the client) and as a client (to the server): one guess each.
    client = ClientHandshake(code="5-zoo-zebra")
    attacker_as_server = ServerHandshake(X25519PrivateKey.generate(), code="5-zoo-zero")
    with pytest.raises(HandshakeError, match="wrong code"):
        client.receive_reply(attacker_as_server.receive_hello(client.hello()))


def test_tampered_messages_fail():
    """Any flipped byte of message 1 or 2 makes the exchange fail (on the
    server at once, or on the client at message 2); never a session."""
    static = X25519PrivateKey.generate()
    hello_len = len(ClientHandshake(code="3-ab-cd").hello())
    caught = {"server": 0, "client": 0}
    for pos in range(hello_len):
        client, server = ClientHandshake(code="3-ab-cd"), ServerHandshake(static, code="3-ab-cd")
        bad = bytearray(client.hello())
        bad[pos] ^= 1
        try:
            reply = server.receive_hello(bytes(bad))
        except HandshakeError:
            caught["server"] += 1
            continue
        with pytest.raises(HandshakeError):
            client.receive_reply(reply)
        caught["client"] += 1
    assert caught["server"] + caught["client"] == hello_len
    # Message 2 (a fresh session per try: the client's state is used once).
    reply_len = len(ServerHandshake(static, code="3-ab-cd").receive_hello(ClientHandshake(code="3-ab-cd").hello()))
    for pos in range(reply_len):
        client, server = ClientHandshake(code="3-ab-cd"), ServerHandshake(static, code="3-ab-cd")
        bad = bytearray(server.receive_hello(client.hello()))
        bad[pos] ^= 1
        with pytest.raises(HandshakeError):
            client.receive_reply(bytes(bad))


def test_mode_mismatch_named_on_the_server():
    server = ServerHandshake(X25519PrivateKey.generate(), code="1-a-b")
    with pytest.raises(HandshakeError, match="needs a code") as info:
        server.receive_hello(ClientHandshake().hello())
    assert info.value.reason == "mode-mismatch"
    server = ServerHandshake(X25519PrivateKey.generate())
    with pytest.raises(HandshakeError, match="client uses a pre-shared key"):
        server.receive_hello(ClientHandshake(psk=os.urandom(32)).hello())


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x02\x00\x01" + bytes(32), b"\x01\x09\x01" + bytes(32),
                                  b"\x01\x00\x01" + bytes(31)])
def test_malformed_hello_raises_handshake_error_only(data):
    with pytest.raises(HandshakeError):
        ServerHandshake(X25519PrivateKey.generate()).receive_hello(data)


def test_malformed_reply_and_finish():
    client = ClientHandshake()
    client.hello()
    with pytest.raises(HandshakeError):
        client.receive_reply(b"\x00" * 10)
    server = ServerHandshake(X25519PrivateKey.generate())
    server.receive_hello(ClientHandshake().hello())
    for bad in (b"", b"\x00", b"\x07" * 17, b"\x00" + bytes(16)):
        with pytest.raises(HandshakeError):
            server.receive_finished(bad)


def test_hello_is_stable_for_retransmission_and_misuse_raises():
    client = ClientHandshake(code="1-a-b")
    assert client.hello() == client.hello()
    with pytest.raises(ValueError):
        ClientHandshake(psk=os.urandom(32), code="1-a-b")
    with pytest.raises(ValueError):
        ServerHandshake(X25519PrivateKey.generate()).receive_finished(b"\x00" * 17)
    with pytest.raises(ValueError):
        ClientHandshake().receive_reply(b"")


def test_a_code_exchange_started_ahead_answers_one_hello():
    """The server's SPAKE2 half started before the hello (as a listener does
    while it waits) gives the same agreement; it is used once, and a second
    server given the same started exchange cannot finish it again."""
    from gannet.crypto.handshake import start_code_exchange

    static = X25519PrivateKey.generate()
    started = start_code_exchange("7-guitar-october")
    client = ClientHandshake(code="7-guitar-october")
    server = ServerHandshake(static, code="7-guitar-october", started=started)
    reply = server.receive_hello(client.hello())
    assert reply.startswith(started[1])  # the SPAKE2 message made ahead leads the reply
    server.receive_finished(client.receive_reply(reply))
    _traffic_works(client, server)
    reused = ServerHandshake(static, code="7-guitar-october", started=started)
    with pytest.raises(HandshakeError):
        reused.receive_hello(ClientHandshake(code="7-guitar-october").hello())
    with pytest.raises(ValueError):
        ServerHandshake(static, started=start_code_exchange("1-a-b"))
