"""The adapter's gathered send of a SourceTrain (io/endpoint.py,
`_send_train`): one sendmsg of the train's pieces puts on the wire the
datagrams of the Train it stands for; a plaintext transfer of large
datagrams sends its runs that way; a refused send falls back as a Train's
does, from the train's bytes."""

from __future__ import annotations

import asyncio
import errno
import random
import socket
import struct

import pytest

from gannet.config import Config
from gannet.io.endpoint import SOL_UDP, UDP_SEGMENT, AioEndpoint, gso_supported, make_udp_socket
from gannet.wire.batch import SourceTrain, encode_source
from gannet.wire.segment import ACK, PSH, SegmentRun

from test_batching import bulk_transfer, run

pytestmark = pytest.mark.timeout(30)


def _kernel_gso() -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return gso_supported(s)


needs_gso = pytest.mark.skipif(not _kernel_gso(), reason="kernel without UDP_SEGMENT")


def _source(rng: random.Random, mss: int, count: int, short: int = 0) -> SourceTrain:
    length = mss * count - short
    data = rng.randbytes(length + 7)
    run_ = SegmentRun(rng.getrandbits(32), 5, ACK, ACK | PSH, 9, 10, 11, memoryview(data), 3, length, mss)
    return encode_source(rng.getrandbits(32) or 1, run_)


@pytest.fixture
def aep():
    loop = asyncio.new_event_loop()
    sock = make_udp_socket(socket.AF_INET, ("127.0.0.1", 0))
    ep = AioEndpoint(sock, Config(), loop, gso=True, gro=False)
    ep.gso = True
    yield ep
    ep.close()
    loop.close()


@needs_gso
@pytest.mark.parametrize("mss,count,short", [(65000 - 24, 1, 0), (16384, 3, 0), (16384, 3, 100), (1448, 44, 1000)])
def test_a_gathered_send_puts_the_trains_datagrams_on_the_wire(aep, mss, count, short):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(5)
        source = _source(random.Random(mss + count + short), mss, count, short)
        out = [(source, rx.getsockname())]
        assert aep._transmit(out) == 1
        got = [rx.recv(70000) for _ in range(source.count)]
        assert got == source.train().datagrams()
        st = aep.io_stats
        assert (st.gathered_sends, st.send_calls, st.datagrams_sent) == (1, 1, source.count)
        assert st.gso_calls == (source.count > 1)


@needs_gso
def test_a_plaintext_transfer_of_large_datagrams_gathers_its_runs(monkeypatch):
    monkeypatch.delenv("GANNET_NO_GSO", raising=False)
    client, server = run(bulk_transfer(8 * 1024 * 1024, insecure=True, pmtud=False, mtu=65000))
    st = client.io_stats
    assert client.ep.source_trains
    assert st.gathered_sends > 0 and st.send_errors == 0
    assert st.datagrams_sent == client.stats.datagrams_sent


@needs_gso
@pytest.mark.parametrize("overrides", [dict(insecure=True, pmtud=False, mtu=1472), dict(pmtud=False, mtu=65000)])
def test_small_datagrams_and_sealed_runs_are_not_gathered(monkeypatch, overrides):
    monkeypatch.delenv("GANNET_NO_GSO", raising=False)
    client, server = run(bulk_transfer(2 * 1024 * 1024, **overrides))
    assert client.io_stats.gathered_sends == 0
    assert client.ep.source_trains is bool(overrides.get("insecure"))


class _Refusing:
    """A socket whose sendmsg fails with `code` until `code` is None."""

    def __init__(self, sock, code):
        self._sock, self.code, self.sent = sock, code, []

    def __getattr__(self, name):
        return getattr(self._sock, name)

    def sendto(self, data, addr):
        self.sent.append(("sendto", bytes(data)))
        return len(data)

    def sendmsg(self, bufs, anc, flags, addr):
        if self.code is not None:
            raise OSError(self.code, "refused")
        seg = [struct.unpack("=H", value)[0] for level, kind, value in anc if (level, kind) == (SOL_UDP, UDP_SEGMENT)]
        self.sent.append(("sendmsg", seg, b"".join(bufs)))
        return sum(len(b) for b in bufs)


ADDR = ("127.0.0.1", 9)


@pytest.mark.parametrize("count", [1, 3])
def test_a_refused_gathered_send_goes_one_datagram_at_a_time(aep, count):
    aep.sock = rec = _Refusing(aep.sock, errno.EIO)
    source = _source(random.Random(4), 16384, count)
    if count == 1:
        # (a lone datagram's error drops it, as a Train's: the core retransmits)
        assert aep._transmit([(source, ADDR)]) == 1
        assert rec.sent == [] and aep.io_stats.send_errors == 1
        return
    assert aep._transmit([(source, ADDR)]) == 1
    assert rec.sent == [("sendto", d) for d in source.train().datagrams()]
    assert aep.io_stats.gso_fallbacks == 1 and aep.io_stats.datagrams_sent == count
    assert aep.io_stats.gathered_sends == 0


def test_a_full_socket_keeps_the_source_train_and_sends_it_gathered_later(aep):
    aep.sock = rec = _Refusing(aep.sock, errno.EAGAIN)
    source = _source(random.Random(5), 16384, 3)
    aep._send([(source, ADDR), (b"x" * 10, ADDR)])
    assert [d for d, _ in aep._backlog] == [source, b"x" * 10] and aep._writing
    rec.code = None
    aep._on_writable()
    assert rec.sent == [("sendmsg", [source.size], bytes(source.train())), ("sendto", b"x" * 10)]
    assert not aep._backlog and aep.io_stats.gathered_sends == 1
