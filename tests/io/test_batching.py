"""Batched datagram I/O: UDP GSO on send, UDP GRO on receive, their fallbacks,
and the receive-buffer contract the adapter relies on."""

import asyncio
import errno
import hashlib
import random
import socket
import struct

import pytest

import gannet
from gannet.config import Config
from gannet.core.endpoint import Endpoint
from gannet.io import endpoint as endpoint_mod
from gannet.io.endpoint import (
    SOL_UDP,
    UDP_GRO,
    UDP_SEGMENT,
    AioEndpoint,
    gro_segment_size,
    gso_supported,
    make_udp_socket,
)

from gannet_io_helpers import count_ioctls, pattern

pytestmark = pytest.mark.timeout(30)

ADDR = ("127.0.0.1", 9)


def _kernel_gso() -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return gso_supported(s)


needs_gso = pytest.mark.skipif(not _kernel_gso(), reason="kernel without UDP_SEGMENT")


def run(coro, timeout=25):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def bulk_transfer(size: int, **overrides):
    """Send `size` bytes client -> server; returns (client aep, server aep)."""
    data = pattern(size, seed=7)
    got = asyncio.get_running_loop().create_future()

    async def sink(reader, writer):
        h, n = hashlib.sha256(), 0
        while chunk := await reader.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
        got.set_result((n, h.hexdigest()))
        writer.close()

    server = await gannet.start_server(sink, "127.0.0.1", 0, **overrides)
    try:
        reader, writer = await gannet.open_connection(*server.addresses[0], **overrides)
        client_aep = writer.get_extra_info("endpoint")
        for off in range(0, size, 256 * 1024):
            writer.write(data[off:off + 256 * 1024])
            await writer.drain()
        writer.write_eof()
        n, digest = await got
        assert n == size and digest == hashlib.sha256(data).hexdigest()
        writer.close()
        await writer.wait_closed()
        return client_aep, server.endpoint
    finally:
        server.close()
        await server.wait_closed()


# ------------------------------------------------------------------ GSO send
@needs_gso
def test_bulk_transfer_uses_fewer_send_calls_than_datagrams(monkeypatch):
    monkeypatch.delenv("GANNET_NO_GSO", raising=False)
    client, server = run(bulk_transfer(4 * 1024 * 1024))
    st = client.io_stats
    assert client.gso
    assert st.gso_calls > 0 and st.gso_datagrams > st.gso_calls
    assert st.send_calls < st.datagrams_sent
    assert st.send_errors == 0
    # what the core produced is what the adapter sent
    assert st.datagrams_sent == client.stats.datagrams_sent


def test_gso_disabled_by_environment_sends_one_datagram_per_call(monkeypatch):
    monkeypatch.setenv("GANNET_NO_GSO", "1")
    client, server = run(bulk_transfer(1024 * 1024))
    st = client.io_stats
    assert not client.gso and st.gso_calls == 0
    assert st.send_calls == st.datagrams_sent == client.stats.datagrams_sent


class RecordingSocket:
    """Wraps a real socket: records sends, and can fail them on demand."""

    def __init__(self, sock, fail_sendmsg=None, block_after=None):
        self._sock = sock
        self.calls = []  # ("sendto", size) / ("sendmsg", seg_size, [sizes])
        self.fail_sendmsg = fail_sendmsg
        self.block_after = block_after

    def __getattr__(self, name):
        return getattr(self._sock, name)

    def _maybe_block(self):
        if self.block_after is not None and len(self.calls) >= self.block_after:
            raise BlockingIOError(errno.EAGAIN, "full")

    def sendto(self, data, addr):
        self._maybe_block()
        self.calls.append(("sendto", len(data)))
        return len(data)

    def sendmsg(self, bufs, anc, flags, addr):
        self._maybe_block()
        if self.fail_sendmsg is not None:
            raise OSError(self.fail_sendmsg, "refused")
        ((level, kind, value),) = anc
        assert (level, kind) == (SOL_UDP, UDP_SEGMENT)
        (seg,) = struct.unpack("=H", value)
        self.calls.append(("sendmsg", seg, [len(b) for b in bufs]))
        return sum(len(b) for b in bufs)


@pytest.fixture
def aep():
    loop = asyncio.new_event_loop()
    sock = make_udp_socket(socket.AF_INET, ("127.0.0.1", 0))
    ep = AioEndpoint(sock, Config(), loop, gso=True, gro=False)
    ep.gso = True  # exercise the grouping even where the kernel lacks GSO
    yield ep
    ep.close()
    loop.close()


def test_runs_of_equal_sizes_to_one_address_become_one_sendmsg(aep):
    other = ("127.0.0.1", 10)
    sizes = [1000, 1000, 1000, 500, 1000, 1000, 1200, 300]
    out = [(bytes(n), ADDR) for n in sizes] + [(bytes(1000), other), (bytes(1000), other)]
    aep.sock = rec = RecordingSocket(aep.sock)
    assert aep._transmit(out) == len(out)
    assert rec.calls == [
        ("sendmsg", 1000, [1000, 1000, 1000, 500]),  # a shorter one ends a run
        ("sendmsg", 1000, [1000, 1000]),  # a longer one starts the next
        ("sendmsg", 1200, [1200, 300]),
        ("sendmsg", 1000, [1000, 1000]),  # another address, another call
    ]
    st = aep.io_stats
    assert (st.send_calls, st.gso_calls, st.datagrams_sent) == (4, 4, len(out))


def test_runs_respect_the_segment_and_byte_limits(aep):
    aep.sock = rec = RecordingSocket(aep.sock)
    aep._transmit([(bytes(100), ADDR)] * 130 + [(bytes(1472), ADDR)] * 50 + [(bytes(9), ADDR)])
    counts = [len(c[2]) if c[0] == "sendmsg" else 1 for c in rec.calls]
    # 64 + 64 + 2 small ones; 44 * 1472 fit in 64 KB; the last 6 and the 9-byte tail
    assert counts == [64, 64, 2, 44, 7]
    for call in rec.calls:
        if call[0] == "sendmsg":
            assert len(call[2]) <= 64 and sum(call[2]) <= 65507


def test_a_single_datagram_goes_out_with_sendto(aep):
    aep.sock = rec = RecordingSocket(aep.sock)
    aep._transmit([(bytes(50), ADDR)])
    aep._transmit([(bytes(50), ADDR), (bytes(60), ADDR)])
    assert rec.calls == [("sendto", 50), ("sendto", 50), ("sendto", 60)]


def test_unsupported_gso_falls_back_to_sendto_and_turns_off(aep):
    aep.sock = rec = RecordingSocket(aep.sock, fail_sendmsg=errno.EIO)
    out = [(bytes(1000), ADDR)] * 5
    assert aep._transmit(out) == 5
    assert rec.calls == [("sendto", 1000)] * 5
    assert not aep.gso and aep.io_stats.gso_fallbacks == 1
    assert aep.io_stats.datagrams_sent == 5 and aep.io_stats.send_errors == 0


def test_emsgsize_falls_back_for_that_call_only(aep):
    aep.sock = rec = RecordingSocket(aep.sock, fail_sendmsg=errno.EMSGSIZE)
    aep._transmit([(bytes(1000), ADDR)] * 3)
    assert rec.calls == [("sendto", 1000)] * 3
    assert aep.gso and aep.io_stats.gso_fallbacks == 1


def test_full_socket_buffer_keeps_the_rest_in_order(aep):
    loop = aep.loop
    aep.sock = rec = RecordingSocket(aep.sock, block_after=1)
    out = [(bytes([i]) * 1000, ADDR) for i in range(4)] + [(bytes([9]) * 10, ADDR)]
    aep._send(out[:2] + out[2:])
    assert rec.calls == [("sendmsg", 1000, [1000, 1000, 1000, 1000, 10])]
    assert not aep._backlog  # one call took them all
    aep._send([(b"a" * 700, ADDR), (b"b" * 700, ADDR)])
    assert [d for d, _ in aep._backlog] == [b"a" * 700, b"b" * 700]
    assert aep._writing
    aep._send([(b"c", ADDR)])  # queued behind, never overtaking
    rec.block_after = None
    aep._on_writable()
    assert rec.calls[1:] == [("sendmsg", 700, [700, 700, 1])]
    assert not aep._backlog and not aep._writing
    assert loop.is_closed() is False


# ------------------------------------------------------------------ GRO receive
def test_gro_segment_size_reads_the_control_message():
    assert gro_segment_size([(SOL_UDP, UDP_GRO, struct.pack("=i", 1400))]) == 1400
    assert gro_segment_size([(SOL_UDP, UDP_GRO, struct.pack("=H", 1200))]) == 1200
    assert gro_segment_size([(socket.SOL_SOCKET, 1, b"\0" * 8)]) == 0
    assert gro_segment_size([]) == 0


class FakeGroSocket:
    """recvmsg_into hands out prepared (payload, segment size) batches."""

    def __init__(self, sock, batches):
        self._sock = sock
        self.batches = list(batches)

    def __getattr__(self, name):
        return getattr(self._sock, name)

    def recvmsg_into(self, bufs, ancsize):
        if not self.batches:
            raise BlockingIOError(errno.EAGAIN, "empty")
        payload, seg = self.batches.pop(0)
        bufs[0][:len(payload)] = payload
        anc = [(SOL_UDP, UDP_GRO, struct.pack("=i", seg))] if seg else []
        return len(payload), anc, 0, ADDR


def _replaceable(config):
    """A core endpoint whose methods a test may replace on the instance:
    of the class an observed adapter uses (gannet.observe.trace.observable),
    whose methods compiled code calls through Python."""
    from gannet.io.security import make_endpoint

    return make_endpoint(config, random.Random(1), observed=True)


def test_coalesced_receive_feeds_each_datagram_to_the_core(monkeypatch):
    # The fake socket's queue is invisible to FIONREAD on the real one: read
    # until EAGAIN, as without the check.
    monkeypatch.setattr(endpoint_mod, "_FIONREAD", 0)
    loop = asyncio.new_event_loop()
    sock = make_udp_socket(socket.AF_INET, ("127.0.0.1", 0))
    aep = AioEndpoint(sock, Config(), loop, gso=False, gro=True, endpoint=_replaceable(Config()))
    try:
        aep.gro = True
        fed = []
        aep.ep.receive_datagram = lambda data, addr, now: fed.append((bytes(data), addr))
        aep.ep.receive_batch = lambda buf, seg, addr, now: fed.extend(
            (bytes(buf[i:i + (seg or len(buf))]), addr) for i in range(0, len(buf), seg or len(buf)))
        batch = b"x" * 1200 + b"y" * 1200 + b"z" * 500
        aep.sock = FakeGroSocket(sock, [(batch, 1200), (b"single", 0), (b"q" * 64, 64)])
        aep._on_readable()
        assert fed == [(b"x" * 1200, ADDR), (b"y" * 1200, ADDR), (b"z" * 500, ADDR),
                       (b"single", ADDR), (b"q" * 64, ADDR)]
        st = aep.io_stats
        assert (st.recv_calls, st.datagrams_received, st.gro_batches) == (3, 5, 1)
    finally:
        aep.close()
        loop.close()


def test_an_insecure_endpoints_short_form_batches_go_straight_to_the_core(monkeypatch):
    """With encryption off, a GRO batch whose first byte is the short form's
    goes to the core's receive_batch directly (InsecureEndpoint.
    batch_passed_on), any other batch through the endpoint's own, which
    screens it; the core counts both alike."""
    from gannet.crypto.endpoint import InsecureEndpoint, Security
    from gannet.wire.datagram import SHORT_FORM

    monkeypatch.setattr(endpoint_mod, "_FIONREAD", 0)
    seen = []

    class Counted(InsecureEndpoint):  # (a Python subclass: compiled code calls its override too)
        def receive_batch(self, buf, seg, addr, now, authenticated=False):
            seen.append(bytes(buf[:1]))
            InsecureEndpoint.receive_batch(self, buf, seg, addr, now, authenticated)

    loop = asyncio.new_event_loop()
    sock = make_udp_socket(socket.AF_INET, ("127.0.0.1", 0))
    ep = Counted(Config(), random.Random(1), security=Security(insecure=True))
    aep = AioEndpoint(sock, Config(), loop, gso=False, gro=True, endpoint=ep)
    try:
        aep.gro = True
        short = bytes([SHORT_FORM]) + bytes(99)  # (a wrong CRC: dropped and counted)
        other = bytes(100)
        aep.sock = FakeGroSocket(sock, [(short * 3, 100), (other * 3, 100), (b"", 0)])
        aep._on_readable()
        assert seen == [b"\x00", b""]  # the other batch and the empty datagram, not the short forms
        assert ep.stats.datagrams_received == 7 and ep.stats.malformed_dropped == 7
    finally:
        aep.close()
        loop.close()


class CountingSocket:
    """The real socket, counting the receive calls made on it."""

    def __init__(self, sock):
        self._sock = sock
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self._sock, name)

    def recvmsg_into(self, *args):
        self.calls += 1
        return self._sock.recvmsg_into(*args)

    def recvfrom_into(self, *args):
        self.calls += 1
        return self._sock.recvfrom_into(*args)


@pytest.mark.parametrize("gro", [True, False])
@pytest.mark.parametrize("queued", [1, 3])
def test_a_lone_datagram_costs_one_receive_call(gro, queued):
    """FIONREAD says when nothing more is queued, so a lone datagram is not
    followed by a call that fails with EAGAIN; several are all read."""
    if not endpoint_mod._FIONREAD:
        pytest.skip("no FIONREAD")
    loop = asyncio.new_event_loop()
    sock = make_udp_socket(socket.AF_INET, ("127.0.0.1", 0))
    aep = AioEndpoint(sock, Config(), loop, gso=False, gro=gro, endpoint=_replaceable(Config()))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        fed = []
        aep.ep.receive_datagram = lambda data, addr, now: fed.append(bytes(data))
        aep.ep.receive_batch = lambda buf, seg, addr, now: fed.append(bytes(buf))
        for i in range(queued):
            sender.sendto(bytes([65 + i]) * (100 + i), sock.getsockname())  # sizes differ: no GRO merge
        for _ in range(100):  # loopback delivers at once, but be patient
            if len(fed) == queued:
                break
            aep.sock = counting = CountingSocket(sock)
            aep._on_readable()
        assert fed == [bytes([65 + i]) * (100 + i) for i in range(queued)]
        # one readiness callback: a lone datagram, one call; three, three and the EAGAIN
        assert counting.calls == (1 if queued == 1 else queued + 1)
    finally:
        sender.close()
        aep.sock = sock
        aep.close()
        loop.close()


def test_a_bulk_sender_asks_whether_more_acks_are_queued(monkeypatch):
    """A sender with data in flight reads its ACKs one datagram at a time:
    after a lone one it asks FIONREAD whether more are queued, so that one
    pass answers a batch of them (datapath.batch_can_grow)."""
    if not endpoint_mod._FIONREAD:
        pytest.skip("no FIONREAD")
    by_fd = count_ioctls(monkeypatch)
    client, server = run(bulk_transfer(4 * 1024 * 1024, insecure=True))
    st = client.io_stats
    assert st.recv_calls >= 8 and not st.gro_batches, st  # its ACKs, each read on its own
    # Once per readiness callback that began with one while data was in
    # flight (all but the handshake's and the last; none if it were skipped:
    # then each ACK would run a pass of its own).
    assert by_fd.get(client._fd, 0) >= st.recv_calls // 2, (by_fd, st)


@needs_gso
def test_bulk_transfer_is_received_in_gro_batches(monkeypatch):
    monkeypatch.delenv("GANNET_NO_GSO", raising=False)
    monkeypatch.delenv("GANNET_NO_GRO", raising=False)
    client, server = run(bulk_transfer(4 * 1024 * 1024))
    st = server.io_stats
    if not server.gro:
        pytest.skip("kernel without UDP_GRO")
    assert st.gro_batches > 0
    assert st.recv_calls < st.datagrams_received == server.stats.datagrams_received


def test_gro_disabled_by_environment(monkeypatch):
    monkeypatch.setenv("GANNET_NO_GRO", "1")
    client, server = run(bulk_transfer(512 * 1024))
    assert not server.gro and server.io_stats.gro_batches == 0
    assert server.io_stats.recv_calls == server.io_stats.datagrams_received


def test_core_keeps_nothing_of_the_receive_buffer():
    """The contract GRO relies on: receive_datagram copies what it keeps, so
    the adapter may overwrite its buffer as soon as the call returns."""
    cfg = Config()
    a, b = Endpoint(cfg, random.Random(1)), Endpoint(cfg, random.Random(2))
    b.listen(4)
    now = 0.0
    a.connect("B", now)

    def deliver(src, dst, dst_name, src_name):
        buf = bytearray(65536)
        for data, addr in src.datagrams_to_send(now):
            assert addr == dst_name
            buf[:len(data)] = data
            dst.receive_datagram(memoryview(buf)[:len(data)], src_name, now)
            buf[:len(data)] = b"\xee" * len(data)  # the next receive overwrites it

    for _ in range(3):
        deliver(a, b, "B", "A")
        deliver(b, a, "A", "B")
    server_conn = b.accept()
    assert server_conn is not None
    (client_conn,) = a.connections
    message = pattern(3000, seed=3)
    assert client_conn.send(message) == len(message)
    deliver(a, b, "B", "A")
    assert server_conn.recv(10_000) == message


def test_uvloop_switch(monkeypatch):
    from gannet.io import blocking

    monkeypatch.setenv("GANNET_NO_UVLOOP", "1")
    loop = blocking.new_event_loop()
    try:
        assert type(loop).__module__.startswith("asyncio")
    finally:
        loop.close()
    monkeypatch.delenv("GANNET_NO_UVLOOP")
    loop = blocking.new_event_loop()
    try:
        uvloop = pytest.importorskip("uvloop")
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


def test_blocking_socket_round_trip_reports_io_stats():
    server = gannet.Socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(10)
    client = gannet.Socket()
    client.settimeout(10)
    try:
        client.connect(server.getsockname())
        conn, _ = server.accept()
        data = pattern(300_000, seed=5)
        client.sendall(data)
        got = bytearray()
        while len(got) < len(data):
            got += conn.recv(65536)
        assert bytes(got) == data
        st = client._aep.io_stats
        assert st.datagrams_sent > 0 and st.send_calls <= st.datagrams_sent
        conn.close()
    finally:
        client.close()
        server.close()


class TooBigSocket(RecordingSocket):
    """Refuses datagrams larger than `mtu` as the kernel does for DF ones."""

    def __init__(self, sock, mtu):
        super().__init__(sock)
        self.mtu = mtu

    def sendto(self, data, addr):
        if len(data) > self.mtu:
            raise OSError(errno.EMSGSIZE, "Message too long")
        return super().sendto(data, addr)

    def sendmsg(self, bufs, anc, flags, addr):
        if any(len(b) > self.mtu for b in bufs):
            raise OSError(errno.EMSGSIZE, "Message too long")
        return super().sendmsg(bufs, anc, flags, addr)


@pytest.mark.parametrize("gso", [True, False])
def test_a_datagram_refused_as_too_big_is_reported_to_the_core(aep, monkeypatch, gso):
    told = []
    # (on the endpoint's own class, compiled or not: the adapter's send
    # error path asks it from Python)
    monkeypatch.setattr(type(aep.ep), "datagram_too_big",
                        lambda self, data, addr: told.append((len(data), addr)))
    aep.gso = gso
    aep.sock = TooBigSocket(aep.sock, 1472)
    out = [(bytes(1472), ADDR), (bytes(8972), ADDR), (bytes(1472), ADDR)]
    assert aep._transmit(out) == 3
    assert told == [(8972, ADDR)]  # the probe; the others went
    assert aep.io_stats.send_errors == 1


class FailingSocket(RecordingSocket):
    """sendto raises `error` (an OSError instance) for every datagram."""

    def __init__(self, sock, error):
        super().__init__(sock)
        self.error = error

    def sendto(self, data, addr):
        if self.error is not None:
            raise self.error
        return super().sendto(data, addr)


def _send_the_general_way(aep, out):
    """What AioEndpoint._send did before its one-datagram shortcut."""
    if aep._backlog:
        aep._backlog.extend(out)
        return
    i = aep._transmit(out)
    if i < len(out):
        if aep._backlog is None:
            from collections import deque
            aep._backlog = deque()
        aep._backlog.extend(out[i:] if i else out)


@pytest.mark.parametrize("error", [
    None,
    BlockingIOError(errno.EAGAIN, "full"),
    OSError(errno.ENOBUFS, "no buffers"),
    OSError(errno.EMSGSIZE, "Message too long"),
    OSError(errno.ECONNREFUSED, "refused"),
])
@pytest.mark.parametrize("size", [64, 1472, 1473, 9000])
def test_one_datagram_shortcut_matches_the_general_send(monkeypatch, error, size):
    """_send's path for one datagram ends where _transmit_gso's would: same
    calls, counters, DF setting, backlog, retry or writable wait, and the
    core told of a datagram too big."""
    from gannet.crypto.endpoint import SecureEndpoint

    told = []
    # (on the class of the endpoint the adapter makes: its send error path
    # asks it from Python)
    monkeypatch.setattr(SecureEndpoint, "datagram_too_big",
                        lambda self, data, addr: told.append((len(data), addr)))
    results = []
    for send in (lambda a, out: a._send(out), _send_the_general_way):
        loop = asyncio.new_event_loop()
        sock = make_udp_socket(socket.AF_INET, ("127.0.0.1", 0))
        a = AioEndpoint(sock, Config(), loop, gso=True, gro=False)
        a.gso = True
        a.sock = rec = FailingSocket(a.sock, error)
        told.clear()
        out = [(bytes(size), ADDR)]
        send(a, out)
        send(a, [(b"x" * 10, ADDR)])  # behind a backlog, if one formed
        st = a.io_stats
        results.append((rec.calls, list(a._backlog or ()), a._writing, a._retry_handle is not None,
                        a._df, st.send_calls, st.datagrams_sent, st.send_errors, st.last_send_error,
                        st.gso_calls, st.gso_fallbacks, a.gso, list(told)))
        a.close()
        loop.close()
    assert results[0] == results[1]
