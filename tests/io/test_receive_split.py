"""Path MTU discovery's large datagrams read without a copy in user space
(io/datapath.py's receive_gro): the header into a small buffer, the rest
into a Receptacle (wire/_batch.c) whose storage becomes the payload's
bytes object, which the core keeps (Endpoint.receive_parts)."""

from __future__ import annotations

import random
import socket

import pytest

from gannet.io import endpoint as io_endpoint
from gannet.wire.batch import Receptacle

from test_batching import bulk_transfer, run

pytestmark = pytest.mark.timeout(60)

needs_receptacle = pytest.mark.skipif(
    Receptacle is None, reason="gannet.wire._batch is not built in this build (GANNET_PURE=1 or no compiler)")


@pytest.fixture
def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    yield a, b
    a.close()
    b.close()


@needs_receptacle
@pytest.mark.parametrize("size", [24, 25, 1000, 65000])
def test_take_hands_over_what_was_received_byte_for_byte(pair, size):
    a, b = pair
    r = Receptacle(70000)
    head = bytearray(20)
    datagrams = [random.Random(size + k).randbytes(size) for k in range(3)]
    taken = []
    for d in datagrams:
        a.send(d)
        n, _anc, _flags, _addr = b.recvmsg_into([head, r])
        assert n == size
        assert bytes(head) == d[:20]
        taken.append(r.take(n - 20, 4))
    # each taken object is the datagram's, untouched by the receives after it
    for d, (body, trailer) in zip(datagrams, taken):
        assert type(body) is bytes and type(trailer) is bytes
        assert body == d[20:-4] and trailer == d[-4:]
        assert hash(body) == hash(bytes(d[20:-4]))


@needs_receptacle
def test_take_refuses_what_it_cannot_hand_over(pair):
    a, b = pair
    r = Receptacle(100)
    with pytest.raises(ValueError):
        r.take(10, 4)  # nothing received
    a.send(b"x" * 50)
    b.recvmsg_into([r])
    with pytest.raises(ValueError):
        r.take(101, 4)  # more than it holds
    with pytest.raises(ValueError):
        r.take(3, 4)  # less than the trailer
    view = memoryview(r)
    with pytest.raises(BufferError):
        r.take(50, 4)  # its storage is still lent
    view.release()
    body, trailer = r.take(50, 4)
    assert body == b"x" * 46 and trailer == b"x" * 4
    with pytest.raises(ValueError):
        r.take(50, 4)  # taken already: the next receive starts a new object
    with pytest.raises(ValueError):
        Receptacle(0)


@needs_receptacle
def test_a_plaintext_transfer_with_path_mtu_discovery_reads_without_a_copy():
    client, server = run(bulk_transfer(16 * 1024 * 1024, insecure=True))
    st = server.io_stats
    assert st.uncopied > 0
    assert st.uncopied <= st.datagrams_received
    assert server.stats.malformed_dropped == 0


@pytest.mark.parametrize("overrides", [dict(insecure=True, pmtud=False, mtu=1472), dict()])
def test_small_or_sealed_datagrams_are_read_as_before(overrides):
    """1,472-byte datagrams stay in the shared buffer (GRO batches); an
    encrypted transfer's datagrams are opened, never kept as they came."""
    client, server = run(bulk_transfer(4 * 1024 * 1024, **overrides))
    assert server.io_stats.uncopied == 0


def test_without_the_extension_a_transfer_reads_into_the_shared_buffer(monkeypatch):
    monkeypatch.setattr(io_endpoint, "Receptacle", None)
    client, server = run(bulk_transfer(8 * 1024 * 1024, insecure=True))
    assert server._split is None
    assert server.io_stats.uncopied == 0
