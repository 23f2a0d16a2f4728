"""The client's half of the code exchange computed by a forked child
(gannet.io.spake_child, offered to the handshake through
gannet.crypto.spake): the same agreement as spake2 in the process, taken
by one handshake, and every way the child can fail ends in this process's
exchange or in a handshake error, never in a hang or a stray process."""

from __future__ import annotations

import os
import signal

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from gannet.crypto import spake
from gannet.crypto.handshake import ClientHandshake, HandshakeError, ServerHandshake
from gannet.io.spake_child import ForkedExchange, start_ahead

CODE = "7-guitar-october"


@pytest.fixture(autouse=True)
def _no_exchange_left(monkeypatch):
    monkeypatch.setenv("GANNET_SPAKE_CHILD", "1")  # (whatever this machine's load)
    yield
    left = list(spake._offered.values())
    spake.discard_offered()
    assert not left, "a test left an exchange started ahead"


def _gone(pid: int) -> bool:
    """The child was reaped (it is not ours to wait for any more)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def _traffic_works(client, server):
    from gannet.crypto.protection import Opener, Sealer

    c, s = client.result, server.result
    assert c.handshake_hash == s.handshake_hash
    sealer, opener = Sealer(c.send_secret, c.aead), Opener(s.recv_secret, s.aead)
    assert opener.open(b"h", 0, 0, sealer.seal(b"h", b"data")[1:]) == b"data"


def test_an_exchange_started_ahead_agrees_with_the_server_and_is_taken_once():
    assert start_ahead(CODE)
    assert not start_ahead(CODE)  # (one waits already)
    forked = spake._offered[CODE]
    pid = forked._pid
    client = ClientHandshake(code=CODE)
    assert client._spake is forked and CODE not in spake._offered
    assert not isinstance(ClientHandshake(code=CODE)._spake, ForkedExchange)
    server = ServerHandshake(X25519PrivateKey.generate(), code=CODE)
    reply = server.receive_hello(client.hello())
    server.receive_finished(client.receive_reply(reply))
    _traffic_works(client, server)
    assert forked._local is None  # (the child computed both halves)
    assert pid is not None and _gone(pid)  # reaped once its key came back


def test_the_childs_key_is_spake2s_key():
    """The server's SPAKE2_B with the child's message gives the key the
    child computed from the server's message."""
    assert start_ahead(CODE)
    client = spake.client_exchange(CODE)
    server = spake.server_exchange(CODE)
    server_message = server.start()
    server_key = server.finish(client.start())
    assert client.finish(server_message) == server_key
    assert client._local is None
    assert len(server_key) == spake.KEY_SIZE


def test_a_wrong_code_fails_on_both_sides_with_a_forked_exchange():
    assert start_ahead(CODE)
    client = ClientHandshake(code=CODE)
    server = ServerHandshake(X25519PrivateKey.generate(), code="8-guitar-october")
    reply = server.receive_hello(client.hello())
    with pytest.raises(HandshakeError) as info:
        client.receive_reply(reply)
    assert info.value.reason == "wrong-secret"
    with pytest.raises(HandshakeError):
        server.receive_finished(client.failed())


def test_a_server_message_that_is_no_element_is_malformed():
    assert start_ahead(CODE)
    client = ClientHandshake(code=CODE)
    hello = client.hello()
    assert len(hello) > spake.MESSAGE_SIZE
    bogus = bytes((0x42,)) + b"\xff" * (spake.MESSAGE_SIZE - 1)  # y = 2^255 - 1: not on the curve
    with pytest.raises(HandshakeError) as info:
        client.receive_reply(bogus + b"\x00" * 64)
    assert info.value.reason == "malformed"


def test_a_child_gone_before_its_message_leaves_the_exchange_to_this_process():
    assert start_ahead(CODE)
    forked = spake._offered[CODE]
    assert forked._pid is not None
    os.kill(forked._pid, signal.SIGKILL)
    client = ClientHandshake(code=CODE)
    server = ServerHandshake(X25519PrivateKey.generate(), code=CODE)
    reply = server.receive_hello(client.hello())
    server.receive_finished(client.receive_reply(reply))
    assert forked._local is not None and forked._pid is None  # reaped, replaced
    _traffic_works(client, server)


def test_a_child_gone_after_its_message_fails_the_handshake_here():
    assert start_ahead(CODE)
    client = ClientHandshake(code=CODE)
    server = ServerHandshake(X25519PrivateKey.generate(), code=CODE)
    reply = server.receive_hello(client.hello())  # (the child's message is out)
    pid = client._spake._pid
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(HandshakeError) as info:
        client.receive_reply(reply)
    assert info.value.reason == "local"
    assert _gone(pid)


def test_an_exchange_nobody_took_ends_its_child():
    assert start_ahead(CODE)
    pid = spake._offered[CODE]._pid
    spake.discard_offered()
    assert not spake._offered and pid is not None and _gone(pid)


def test_where_no_child_can_be_made_the_exchange_runs_here(monkeypatch):
    def no_fork():
        raise OSError("fork refused")

    monkeypatch.setattr(os, "fork", no_fork)
    assert not start_ahead(CODE)
    assert not spake._offered
    monkeypatch.delattr(os, "fork")
    assert not start_ahead(CODE)
    assert not isinstance(spake.client_exchange(CODE), ForkedExchange)


def test_a_child_is_started_only_where_a_cpu_is_likely_idle(monkeypatch):
    monkeypatch.delenv("GANNET_SPAKE_CHILD")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (2.1, 0.5, 0.5))  # (the last minute's)
    assert not start_ahead(CODE) and not spake._offered
    monkeypatch.setattr(os, "getloadavg", lambda: (1.9, 4.0, 4.0))
    assert start_ahead(CODE)
    spake.discard_offered()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert not start_ahead(CODE) and not spake._offered  # (one CPU: it would take turns)
    monkeypatch.setenv("GANNET_SPAKE_CHILD", "0")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert not start_ahead(CODE)
    monkeypatch.setenv("GANNET_SPAKE_CHILD", "1")
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    assert start_ahead(CODE)
    spake.discard_offered()


def test_finish_before_start_is_refused():
    assert start_ahead(CODE)
    exchange = spake.client_exchange(CODE)
    with pytest.raises(ValueError):
        exchange.finish(bytes(spake.MESSAGE_SIZE))
    exchange.close()
