"""Path MTU discovery's large datagrams read without a copy in user space
(io/datapath.py's receive_gro): the header into a small buffer, the rest
into a Receptacle (wire/_batch.c) whose storage becomes the payload's
bytes object, which the core keeps (Endpoint.receive_parts)."""

from __future__ import annotations

import asyncio
import random
import socket

import pytest

from gannet.config import Config
from gannet.io import endpoint as io_endpoint
from gannet.io.endpoint import AioEndpoint, make_udp_socket
from gannet.wire.batch import Receptacle
from gannet.wire.checksum import crc32c
from gannet.wire.datagram import SHORT_FORM
from gannet.wire.segment import ACK

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


@pytest.fixture
def insecure_aep():
    loop = asyncio.new_event_loop()
    sock = make_udp_socket(socket.AF_INET, ("127.0.0.1", 0))
    aep = AioEndpoint(sock, Config(insecure=True), loop, gro=True)
    yield aep
    aep.close()
    loop.close()


def _read_one(aep, data: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.sendto(data, aep.sock.getsockname())
    aep.sock.setblocking(True)
    aep.sock.settimeout(5)
    try:
        aep._receive_gro(aep._rbufs, aep._rview)
    finally:
        aep.sock.setblocking(False)


@needs_receptacle
def test_what_a_split_read_cannot_keep_goes_the_usual_way(insecure_aep):
    """Read apart (after a large datagram), a datagram that is not a
    short-form segment, or a damaged one, is put back together and judged
    as every other: unknown connections and damage counted, nothing kept;
    a small datagram ends the split reads, a large one starts them."""
    aep = insecure_aep
    assert aep._split is not None and aep._parts_passed_on is not None
    st = aep.ep.stats
    rng = random.Random(3)
    aep._large = True
    # a well-formed short-form segment for no connection: kept apart, then refused
    head = bytes([SHORT_FORM, ACK, 0, 1]) + (12345).to_bytes(4, "big") + bytes(12)
    body = head + rng.randbytes(20000)
    before = (st.unknown_connection, st.malformed_dropped, aep.io_stats.uncopied)
    _read_one(aep, body + crc32c(body).to_bytes(4, "little"))
    assert (st.unknown_connection, st.malformed_dropped, aep.io_stats.uncopied) == (
        before[0] + 1, before[1], before[2] + 1)
    assert aep._large  # 20 KB: the next read is split too
    # the same, damaged: dropped and counted as malformed
    _read_one(aep, body + (crc32c(body) ^ 1).to_bytes(4, "little"))
    assert st.malformed_dropped == before[1] + 1 and st.unknown_connection == before[0] + 1
    # a long-form datagram (garbage): put back together, decoded, dropped
    _read_one(aep, bytes([0x01]) + rng.randbytes(30000))
    assert st.malformed_dropped == before[1] + 2
    assert aep.io_stats.uncopied == before[2] + 2
    assert aep._large
    # a small datagram: read apart still (it follows a large one), then back to the shared buffer
    _read_one(aep, bytes([0x01]) + rng.randbytes(100))
    assert st.malformed_dropped == before[1] + 3
    assert not aep._large
    _read_one(aep, bytes([0x01]) + rng.randbytes(30000))  # read whole, and the next split
    assert st.malformed_dropped == before[1] + 4 and aep._large
    assert aep.io_stats.uncopied == before[2] + 2
