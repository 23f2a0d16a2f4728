"""Connection info (TCP_INFO-like) from every API, and the limited-time
accounting that says what held a sender back."""

import asyncio
import threading
import time

import pytest

import gannet
from gannet import Socket
from gannet.config import Config
from gannet.observe.info import INFO_FIELDS, ConnectionInfo
from gannet.observe.limits import APP, CWND, IDLE, PACING, RWND, LimitClock
from gannet.sim.config import LinkConfig
from gannet.sim.scenario import run_transfer

SIZE = 3_000_000


def _serve_sink(srv: Socket, got: dict) -> threading.Thread:
    def run():
        c, _ = srv.accept()
        n = 0
        while b := c.recv(1 << 20):
            n += len(b)
        got["n"] = n
        got["info"] = c.info()
        c.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.timeout(60)
@pytest.mark.parametrize("track", [True, False])
def test_socket_info_after_a_transfer(track):
    srv = Socket(track_limits=track)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    got: dict = {}
    t = _serve_sink(srv, got)
    cl = Socket(track_limits=track, congestion_control="cubic")
    assert cl.info() is None  # not connected yet
    cl.connect(srv.getsockname())
    cl.sendall(b"x" * SIZE)
    cl.shutdown(1)
    t.join(30)
    deadline = time.monotonic() + 10
    while (info := cl.info()).bytes_acked < SIZE and time.monotonic() < deadline:
        time.sleep(0.01)  # the last ACK may still be on its way
    cl.close()
    srv.close()
    assert got["n"] == SIZE
    assert isinstance(info, ConnectionInfo)
    assert info.congestion_control == "cubic"
    assert info.role == "client" and got["info"].role == "server"
    assert info.bytes_acked == SIZE  # the FIN's sequence number not counted
    assert got["info"].bytes_received == SIZE
    assert info.bytes_sent >= SIZE and info.delivered >= SIZE
    assert info.srtt is not None and 0 < info.min_rtt <= info.srtt < 1.0
    assert info.rto >= 0.2  # min_rto above SRTT
    assert info.path_mtu >= 1472 and info.mss < info.path_mtu
    assert info.cwnd > 0 and info.segments_sent > 0
    assert set(info.as_dict()) == set(INFO_FIELDS)
    limited = (info.app_limited_time, info.rwnd_limited_time, info.cwnd_limited_time,
               info.pacing_limited_time, info.busy_time)
    if track:
        assert all(x is not None and x >= 0 for x in limited)
        assert info.busy_time > 0
        # the reasons split the time the sender ran: never more than its life
        assert sum(limited[:4]) <= info.age + 1e-6
    else:
        assert all(x is None for x in limited)


@pytest.mark.timeout(60)
def test_asyncio_writer_extra_info():
    async def main():
        done = asyncio.get_running_loop().create_future()

        async def handle(reader, writer):
            n = 0
            while b := await reader.read(1 << 20):
                n += len(b)
            done.set_result((n, writer.get_extra_info("gannet_info")))
            writer.close()

        server = await gannet.start_server(handle, "127.0.0.1", 0, track_limits=True)
        port = server.addresses[0][1]
        reader, writer = await gannet.open_connection("127.0.0.1", port, track_limits=True)
        writer.write(b"y" * SIZE)
        await writer.drain()
        writer.write_eof()
        n, server_info = await asyncio.wait_for(done, 30)
        info = writer.get_extra_info("gannet_info")
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return n, info, server_info

    n, info, server_info = asyncio.run(main())
    assert n == SIZE
    assert info.bytes_acked == SIZE and server_info.bytes_received == SIZE
    assert info.busy_time > 0 and info.congestion_control == Config().congestion_control


def test_limit_clock_accounts_each_reason_for_the_time_until_the_next_pass():
    clock = LimitClock(0.0)
    reasons = [(RWND, True), (CWND, True), (PACING, True), (APP, True), (IDLE, False)]
    for t, (reason, busy) in zip((1.0, 3.0, 6.0, 10.0, 15.0), reasons):
        clock.take(reason, busy, False, False, t)  # (what update does after classify)
    totals = clock.totals(20.0)
    # each reason holds from the pass that saw it to the next one
    assert totals["rwnd"] == 2.0 and totals["cwnd"] == 3.0 and totals["pacing"] == 4.0
    assert totals["app"] == 5.0 and totals["busy"] == 14.0


def test_limit_clock_passes_that_change_nothing_write_nothing_and_count_the_same():
    clock = LimitClock(0.0)
    reasons = iter([(RWND, True), (RWND, True), (RWND, True), (APP, False), (APP, False)])

    def update(t):
        clock.take(*next(reasons), False, False, t)

    update(1.0)
    update(2.0)
    update(4.0)
    assert clock.since == 1.0  # the same reason again: nothing written
    update(7.0)
    assert clock.since == 7.0
    update(8.0)
    totals = clock.totals(10.0)
    assert totals["rwnd"] == 6.0 and totals["busy"] == 6.0 and totals["app"] == 3.0


@pytest.mark.sim
@pytest.mark.parametrize("case, link, config, dominant", [
    ("lossy", LinkConfig(delay=0.02, bandwidth=50e6, loss=0.03, queue_bytes=400_000),
     Config(track_limits=True), "cwnd_limited_time"),
    ("rate-limited", LinkConfig(delay=0.02, bandwidth=10e6, queue_bytes=200_000),
     Config(track_limits=True), "pacing_limited_time"),
    ("tiny window", LinkConfig(delay=0.02, bandwidth=100e6, queue_bytes=400_000),
     Config(track_limits=True, congestion_control="cubic", window_size=65000, autotune=False),
     "rwnd_limited_time"),
])
def test_simulated_transfers_spend_their_time_on_the_expected_limit(case, link, config, dominant):
    r = run_transfer(3, SIZE, link, LinkConfig(delay=0.02), config=config)
    assert r.ok, case
    info = r.info["client"]
    times = {k: info[k] for k in ("app_limited_time", "rwnd_limited_time", "cwnd_limited_time",
                                   "pacing_limited_time")}
    assert max(times, key=times.get) == dominant, times
    assert info["bytes_acked"] == SIZE and r.info["server"]["bytes_received"] == SIZE
