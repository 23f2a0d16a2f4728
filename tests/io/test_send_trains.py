"""Several trains in one sendmmsg (wire/_batch.c's send_trains, through
io/endpoint.py's `_send_trains`): GSO Trains and SourceTrains (path MTU
discovery's 64 KB datagrams, their payloads gathered from the send buffer)
give the same datagrams as a sendmsg of each (its equivalent, which runs
without the extension), for one system call; what the kernel does not take,
or refuses, goes on one train at a time through `_send_train`, which meets
the error as before."""

from __future__ import annotations

import asyncio
import errno
import random
import socket

import pytest

from gannet.config import Config
from gannet.io import endpoint as endpoint_mod
from gannet.io.endpoint import AioEndpoint, gso_supported, make_udp_socket, sockaddr_of
from gannet.wire.batch import SourceTrain, Train, encode_run, encode_source
from gannet.wire.segment import ACK, PSH, SegmentRun

from test_batching import bulk_transfer, run

pytestmark = pytest.mark.timeout(30)

NATIVE = endpoint_mod._send_trains


def _kernel_gso() -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return gso_supported(s)


needs_gso = pytest.mark.skipif(not _kernel_gso(), reason="kernel without UDP_SEGMENT")
needs_native = pytest.mark.skipif(NATIVE is None, reason="gannet.wire._batch's send_trains is not built here")


def _trains(rng: random.Random, n: int) -> list[Train]:
    out = []
    for k in range(n):
        mss = rng.choice([1448, 1000, 100])
        count = rng.randint(2, 44)
        data = rng.randbytes(mss * count - rng.randint(0, mss - 1))
        out.append(encode_run(rng.getrandbits(32) or 1, SegmentRun(k, 1, ACK, ACK | PSH, 9, 9, 9, data, 0,
                                                                  len(data), mss)))
    return out


def _sources(rng: random.Random, shapes: list[tuple[int, int, int]]) -> list[SourceTrain]:
    """SourceTrains of (mss, rows, bytes short of full) each, over one
    buffer (as a send buffer's chunk holds consecutive runs)."""
    data = memoryview(rng.randbytes(sum(mss * rows for mss, rows, _ in shapes) + 5))
    out, at = [], 5
    for k, (mss, rows, short) in enumerate(shapes):
        length = mss * rows - short
        run_ = SegmentRun(rng.getrandbits(32), 1, ACK, ACK | PSH, 9, 9, 9, data, at, length, mss)
        out.append(encode_source(rng.getrandbits(32) or 1, run_))
        at += length
    return out


def _receiver(family: int, host: str) -> socket.socket:
    rx = socket.socket(family, socket.SOCK_DGRAM)
    rx.bind((host, 0))
    rx.settimeout(5)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    return rx


@needs_native
@needs_gso
@pytest.mark.parametrize("family,host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_send_trains_puts_each_trains_datagrams_on_the_wire_in_order(family, host):
    try:
        rx = _receiver(family, host)
    except OSError:
        pytest.skip(f"no {host}")
    with rx, socket.socket(family, socket.SOCK_DGRAM) as tx:
        trains = _trains(random.Random(1), 6)
        assert NATIVE(tx.fileno(), trains, sockaddr_of(family, rx.getsockname())) == len(trains)
        want = [d for t in trains for d in t.datagrams()]
        assert [rx.recv(70000) for _ in want] == want


@needs_native
@needs_gso
def test_send_trains_gathers_source_trains_beside_trains():
    rng = random.Random(11)
    with _receiver(socket.AF_INET, "127.0.0.1") as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        # one 64 KB datagram each (path MTU discovery's), several rows with
        # a short last one, and GSO Trains between them
        trains = [*_sources(rng, [(65000 - 24, 1, 0), (65000 - 24, 1, 999), (16384, 3, 100)]),
                  *_trains(rng, 2), *_sources(rng, [(20000, 2, 0)])]
        assert NATIVE(tx.fileno(), trains, sockaddr_of(socket.AF_INET, rx.getsockname())) == len(trains)
        want = [d for t in trains for d in (t.train() if type(t) is SourceTrain else t).datagrams()]
        assert [rx.recv(70000) for _ in want] == want


@needs_native
def test_send_trains_refuses_a_source_train_whose_parts_do_not_hold_its_rows():
    name = sockaddr_of(socket.AF_INET, ("127.0.0.1", 9))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        good, bad = _sources(random.Random(12), [(16384, 2, 0), (16384, 2, 0)])
        bad.heads = bad.heads[:30]  # two rows need 48 bytes of headers and trailers
        with pytest.raises(ValueError):
            NATIVE(s.fileno(), [good, bad], name)
        short = _sources(random.Random(13), [(16384, 2, 0)])[0]
        short.length += 1  # a third row's byte that its buffer does not hold
        with pytest.raises(ValueError):
            NATIVE(s.fileno(), [good, short], name)


@needs_native
def test_send_trains_raises_the_sockets_error_and_refuses_what_is_not_a_train():
    trains = _trains(random.Random(2), 2)
    name = sockaddr_of(socket.AF_INET, ("127.0.0.1", 9))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fd = s.fileno()
    s.close()
    with pytest.raises(OSError) as info:
        NATIVE(fd, trains, name)
    assert info.value.errno == errno.EBADF
    empty = Train()
    empty.size = 100
    with pytest.raises(ValueError):
        NATIVE(fd, [trains[0], empty], name)


@needs_native
def test_send_trains_sends_a_train_of_one_datagram_as_that_datagram():
    """A Train of one row (a sealed 64 KB datagram of path MTU discovery,
    or a short one) goes without UDP_SEGMENT, as sendto would send it."""
    rng = random.Random(16)
    with _receiver(socket.AF_INET, "127.0.0.1") as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        ones = []
        for n, size in [(65000, 65000), (100, 100), (64990, 65000)]:
            one = Train(rng.randbytes(n))
            one.size = size
            ones.append(one)
        assert NATIVE(tx.fileno(), ones, sockaddr_of(socket.AF_INET, rx.getsockname())) == 3
        assert [rx.recv(70000) for _ in ones] == [bytes(t) for t in ones]


def test_what_sockaddr_of_does_not_pack_is_none():
    assert sockaddr_of(socket.AF_INET, ("localhost", 9)) is None
    assert sockaddr_of(socket.AF_INET, ("127.0.0.1", 70000)) is None
    assert sockaddr_of(socket.AF_INET6, ("fe80::1%nosuchif", 9, 0, 0)) is None
    assert len(sockaddr_of(socket.AF_INET, ("127.0.0.1", 9)) or b"") == 16
    assert len(sockaddr_of(socket.AF_INET6, ("::1", 9, 0, 0)) or b"") == 28


@pytest.fixture
def aep():
    loop = asyncio.new_event_loop()
    sock = make_udp_socket(socket.AF_INET, ("127.0.0.1", 0))
    ep = AioEndpoint(sock, Config(), loop, gso=True, gro=False)
    ep.gso = True
    yield ep
    ep.close()
    loop.close()


@needs_native
@needs_gso
def test_the_adapter_sends_a_passs_trains_in_one_call(aep):
    with _receiver(socket.AF_INET, "127.0.0.1") as rx:
        trains = _trains(random.Random(3), 5)
        addr = rx.getsockname()
        extra = b"lone datagram"
        assert aep._transmit([(t, addr) for t in trains] + [(extra, addr)]) == 6
        want = [d for t in trains for d in t.datagrams()] + [extra]
        assert [rx.recv(70000) for _ in want] == want
        st = aep.io_stats
        assert (st.send_calls, st.gso_calls, st.datagrams_sent) == (2, 5, len(want))


def _calls(aep, monkeypatch, took):
    """`_send_trains`' native call replaced: takes `took` trains (or raises
    it, an OSError); the socket's own sendmsg records what `_send_train`
    sends one at a time."""
    seen, single = [], []

    def fake(fd, trains, name):
        seen.append(len(trains))
        if isinstance(took, OSError):
            raise took
        return took

    monkeypatch.setattr(endpoint_mod, "_send_trains", fake)
    real = aep.sock

    class Recording:
        def __getattr__(self, name):
            return getattr(real, name)

        def sendmsg(self, bufs, anc, flags, addr):
            if isinstance(took, OSError) and took.errno == errno.EAGAIN:
                raise BlockingIOError(errno.EAGAIN, "full")
            single.append(bytes(bufs[0]))
            return len(bufs[0])

    aep.sock = Recording()
    return seen, single


@pytest.mark.parametrize("took", [0, 2, 4])
def test_the_trains_it_did_not_take_go_one_at_a_time(aep, monkeypatch, took):
    seen, single = _calls(aep, monkeypatch, took)
    trains = _trains(random.Random(4), 4)
    assert aep._transmit([(t, ("127.0.0.1", 9)) for t in trains]) == 4
    assert seen[0] == 4
    assert single == [bytes(t) for t in trains[took:]]
    assert aep.io_stats.datagrams_sent == sum(len(t.datagrams()) for t in trains)


def test_a_refused_call_leaves_the_trains_to_send_train(aep, monkeypatch):
    seen, single = _calls(aep, monkeypatch, BlockingIOError(errno.EAGAIN, "full"))
    trains = _trains(random.Random(5), 3)
    aep._send([(t, ("127.0.0.1", 9)) for t in trains])
    assert seen == [3] and single == []
    assert [d for d, _ in aep._backlog] == trains and aep._writing  # all kept, in order


def _counted_send_trains(monkeypatch) -> list[int]:
    """GSO on, and the adapter's sendmmsg call counted: the list gets how
    many trains each call sent."""
    monkeypatch.delenv("GANNET_NO_GSO", raising=False)
    took: list[int] = []

    def counted(fd, trains, name):
        took.append(NATIVE(fd, trains, name))
        return took[-1]

    monkeypatch.setattr(endpoint_mod, "_send_trains", counted)
    return took


@needs_native
@needs_gso
def test_a_plaintext_transfer_sends_its_trains_together(monkeypatch):
    took = _counted_send_trains(monkeypatch)
    client, server = run(bulk_transfer(4 * 1024 * 1024, insecure=True, pmtud=False, mtu=1472))
    st = client.io_stats
    assert took and max(took) >= 2  # calls that sent several trains
    assert st.send_calls < st.gso_calls  # fewer system calls than trains
    assert st.send_errors == 0 and st.datagrams_sent == client.stats.datagrams_sent


@needs_native
@needs_gso
def test_the_adapter_sends_a_passs_source_trains_in_one_call_per_fragment_setting(aep, monkeypatch):
    """Lone datagrams larger than the safe size go with don't-fragment set,
    as `_send_call` sends each, and several-datagram trains without: one
    call for each stretch of the same setting."""
    calls = []

    def counted(fd, trains, name):
        calls.append((len(trains), aep._df))
        return NATIVE(fd, trains, name)

    monkeypatch.setattr(endpoint_mod, "_send_trains", counted)
    rng = random.Random(14)
    with _receiver(socket.AF_INET, "127.0.0.1") as rx:
        big = _sources(rng, [(65000 - 24, 1, 0)] * 3)
        rows = _sources(rng, [(16384, 3, 0)]) + _trains(rng, 2)
        addr = rx.getsockname()
        assert aep._transmit([(t, addr) for t in big + rows]) == 6
        want = [d for t in big + rows for d in (t.train() if type(t) is SourceTrain else t).datagrams()]
        assert [rx.recv(70000) for _ in want] == want
        df = aep._df_supported
        assert calls == [(3, df), (3, False)]
        st = aep.io_stats
        assert (st.send_calls, st.gathered_sends, st.gso_calls, st.datagrams_sent) == (2, 4, 3, len(want))


@needs_native
@needs_gso
def test_the_adapter_sends_a_passs_one_datagram_trains_in_one_call(aep, monkeypatch):
    """Sealed, path MTU discovery's datagrams are Trains of one row each:
    a pass's go in one sendmmsg, don't-fragment set as `_send_call` sets it
    for each, and each Train goes back to the pool."""
    calls = []
    released = []

    def counted(fd, trains, name):
        calls.append((len(trains), aep._df))
        return NATIVE(fd, trains, name)

    monkeypatch.setattr(endpoint_mod, "_send_trains", counted)
    monkeypatch.setattr(endpoint_mod, "release", released.append)
    rng = random.Random(17)
    with _receiver(socket.AF_INET, "127.0.0.1") as rx:
        ones = []
        for _ in range(4):
            one = Train(rng.randbytes(65000))
            one.size = 65000
            ones.append(one)
        addr = rx.getsockname()
        assert aep._transmit([(t, addr) for t in ones]) == 4
        assert [rx.recv(70000) for _ in ones] == [bytes(t) for t in ones]
        assert calls == [(4, aep._df_supported)]
        assert released == ones
        st = aep.io_stats
        assert (st.send_calls, st.gso_calls, st.datagrams_sent) == (1, 0, 4)


def test_the_source_trains_it_did_not_take_go_one_at_a_time(aep, monkeypatch):
    seen, single = _calls(aep, monkeypatch, 1)
    trains = _sources(random.Random(15), [(65000 - 24, 1, 0)] * 3)
    assert aep._transmit([(t, ("127.0.0.1", 9)) for t in trains]) == 3
    assert seen == [3]  # the call took the first
    # the rest went one at a time, each its pieces gathered (header first)
    assert single == [bytes(t.pieces()[0]) for t in trains[1:]]
    assert aep.io_stats.datagrams_sent == 3 and aep.io_stats.gathered_sends == 3


@needs_native
@needs_gso
def test_a_path_mtu_discovery_transfer_sends_its_datagrams_together(monkeypatch):
    took = _counted_send_trains(monkeypatch)
    client, server = run(bulk_transfer(8 * 1024 * 1024, insecure=True))
    st = client.io_stats
    assert client.ep.source_trains and st.gathered_sends > 0
    assert took and max(took) >= 2  # calls that sent several 64 KB datagrams
    assert st.send_calls < st.gathered_sends  # fewer system calls than datagrams
    assert st.send_errors == 0 and st.datagrams_sent == client.stats.datagrams_sent


@needs_native
@needs_gso
def test_an_encrypted_path_mtu_discovery_transfer_sends_its_datagrams_together(monkeypatch):
    """Encrypted, each 64 KB datagram is sealed into a Train of its own:
    still several to a system call."""
    took = _counted_send_trains(monkeypatch)
    client, server = run(bulk_transfer(8 * 1024 * 1024))
    st = client.io_stats
    assert not client.ep.source_trains and client.ep.security_stats.sealed > 0
    assert took and max(took) >= 2  # calls that sent several 64 KB datagrams
    assert st.send_calls * 2 < st.datagrams_sent  # fewer system calls than datagrams
    assert st.send_errors == 0 and st.datagrams_sent == client.stats.datagrams_sent
