"""Busy polling (Config.busy_poll; docs/design.md, "Polling before sleeping"),
counted, not timed.

After a pass that sent, with the endpoint's one connection's data in flight,
the endpoint polls its socket without sleeping for up to the budget; a
datagram found that way goes through the reader's own receive path. The
counters are IoStats' busy_polls (polls begun), busy_poll_hits (polls that
found the socket readable) and busy_poll_checks (the non-blocking checks
they made): none when the budget is 0, on one CPU, with nothing in flight,
or with another endpoint on the loop; few after answers keep coming late;
none while idle. The peers run on loops of their own (a thread each) where
a poll is to be answered: a poll on the loop that runs both ends could only
hold up the answer it waits for.
"""

import asyncio
import queue
import threading
import time

import pytest

import gannet
from gannet.config import Config
from gannet.io import datapath
from gannet.io import endpoint as endpoint_mod

pytestmark = pytest.mark.timeout(60)

MSG = b"p" * 64
N = 200
# Long enough that a peer on another thread of this process answers within
# it on a loaded test machine (the poll yields the CPU between checks).
LONG = 100_000  # microseconds

needs_two_cpus = pytest.mark.skipif(endpoint_mod._cpus() < 2,
                                    reason="busy polling is off on one CPU")


async def _echo(reader, writer, delay=0.0):
    try:
        while True:
            data = await reader.readexactly(64)
            if delay:
                await asyncio.sleep(delay)
            writer.write(data)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


class ServerThread:
    """A Gannet echo server on an event loop of its own, in a thread."""

    def __init__(self, delay=0.0, **overrides):
        self.address = queue.Queue()
        self.stop = None
        self.endpoint = None
        self.thread = threading.Thread(target=asyncio.run, args=(self._main(delay, overrides),),
                                       daemon=True)

    async def _main(self, delay, overrides):
        self.stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        async def echo(r, w):
            if delay is None:  # a sink: read to the end, answer nothing
                while await r.read(1 << 20):
                    pass
                w.close()
                return
            await _echo(r, w, delay)

        async with await gannet.start_server(echo, "127.0.0.1", 0, insecure=True,
                                             **overrides) as server:
            self.endpoint = server.endpoint
            self.address.put((server.addresses[0], loop))
            await self.stop.wait()

    def __enter__(self):
        self.thread.start()
        self.addr, self.loop = self.address.get(timeout=20)
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(20)


def stats(st):
    return {k: getattr(st, k) for k in ("busy_polls", "busy_poll_hits", "busy_poll_checks",
                                        "datagrams_received", "recv_calls", "datagrams_sent",
                                        "loop_calls", "timer_calls")}


async def ping_pong(reader, writer, n):
    for i in range(n):
        msg = i.to_bytes(4, "big") + MSG[4:]
        writer.write(msg)
        await writer.drain()
        assert await reader.readexactly(64) == msg


def run_client(addr, n, settle=20, idle=0.0, peer=None, **overrides):
    """Ping-pong n messages after `settle`; returns the client endpoint's
    counters over the n (and over `idle` seconds after them, with those of
    `peer`, the server's IoStats, over the same seconds)."""

    async def main():
        reader, writer = await gannet.open_connection(*addr, insecure=True, **overrides)
        aep = writer.get_extra_info("endpoint")
        await ping_pong(reader, writer, settle)
        before = stats(aep.io_stats)
        await ping_pong(reader, writer, n)
        after = stats(aep.io_stats)
        idle_counts = None
        if idle:
            # The last reply is acknowledged (delayed ACK) within ack_delay;
            # from then on nothing is in flight on either side.
            await asyncio.sleep(0.2)
            start, peer_start = stats(aep.io_stats), stats(peer)
            await asyncio.sleep(idle)
            idle_counts = ({k: v - start[k] for k, v in stats(aep.io_stats).items()},
                           {k: v - peer_start[k] for k, v in stats(peer).items()})
        writer.close()
        await writer.wait_closed()
        return {k: v - before[k] for k, v in after.items()}, idle_counts, aep

    return asyncio.run(asyncio.wait_for(main(), 50))


def test_config_busy_poll_is_checked():
    assert Config().busy_poll == 200
    assert Config(busy_poll=0).busy_poll == 0
    with pytest.raises(ValueError):
        Config(busy_poll=-1)
    with pytest.raises(ValueError):
        Config(busy_poll=100_001)
    with pytest.raises(TypeError):
        Config(busy_poll=0.5)


@needs_two_cpus
def test_each_message_polls_and_a_polled_datagram_is_read_as_the_reader_reads_it():
    with ServerThread(busy_poll=LONG) as server:
        client, _, aep = run_client(server.addr, N, busy_poll=LONG)
        srv = server.endpoint.io_stats
        srv_polls = srv.busy_polls
    # One poll per message sent with data in flight (the request); most
    # answered within the budget. (A pass that sent with a poll already
    # queued, or a poll the adaptive rule skipped, adds none.)
    assert N * 0.9 <= client["busy_polls"] <= N + 2, client
    assert client["busy_poll_hits"] >= N * 0.8, client
    assert client["busy_poll_checks"] >= client["busy_polls"], client
    assert srv_polls >= N * 0.9  # the server's replies are in flight until the next request
    # Each datagram the poll found went through the reader's receive: one
    # receive call each, counted as the reader counts them (a reply each,
    # with the ACK of its request), the messages intact and in order
    # (ping_pong)...
    assert N <= client["recv_calls"] == client["datagrams_received"] <= N + 2, client
    # ...but without the loop's readiness callback: without polling, each
    # datagram took one (plus the flushes' callbacks). With it, the loop's
    # callbacks other than the timer's (as many as the run's wall-clock
    # time brings) are the flushes and the readiness a poll raced with:
    # from none to about N/2 here, by the scheduler's timing; never one a
    # datagram.
    readiness_and_flushes = client["loop_calls"] - client["timer_calls"]
    assert readiness_and_flushes < client["recv_calls"], client
    assert aep.closed


@needs_two_cpus
def test_a_bulk_sender_polls_only_once_all_it_wrote_is_sent():
    # Data queued behind the window: the ACKs wake the sender as before
    # (and its loop runs the pacing timer on time); only the passes that
    # send the last of it may poll.
    async def main(addr):
        reader, writer = await gannet.open_connection(*addr, insecure=True, busy_poll=LONG)
        aep = writer.get_extra_info("endpoint")
        chunk = bytes(1 << 20)
        for _ in range(8):
            writer.write(chunk)
            await writer.drain()
        counts = stats(aep.io_stats), aep.io_stats.passes
        writer.close()
        await writer.wait_closed()
        return counts

    with ServerThread(delay=None, busy_poll=LONG) as server:
        (client, passes) = asyncio.run(asyncio.wait_for(main(server.addr), 50))
    assert client["datagrams_sent"] >= 8 * (1 << 20) // 65507, client
    assert client["busy_polls"] <= max(4, passes // 20), (client, passes)


def test_budget_zero_polls_never():
    with ServerThread(busy_poll=0) as server:
        client, _, _ = run_client(server.addr, N, busy_poll=0)
        srv = stats(server.endpoint.io_stats)
    for side in (client, srv):
        assert side["busy_polls"] == side["busy_poll_checks"] == 0, side
    assert client["recv_calls"] == N


def test_a_machine_of_one_cpu_polls_never(monkeypatch):
    monkeypatch.setattr(endpoint_mod, "_cpus", lambda: 1)
    with ServerThread(busy_poll=LONG) as server:
        client, _, aep = run_client(server.addr, 50, busy_poll=LONG)
        srv = stats(server.endpoint.io_stats)
    assert aep._busy_ns == 0
    for side in (client, srv):
        assert side["busy_polls"] == side["busy_poll_checks"] == 0, side


def test_an_answer_found_after_the_budget_is_a_miss():
    # The thread was preempted past the budget: the datagram is read all
    # the same, but polling gained nothing, and the adaptive rule hears so.
    async def main():
        async with await gannet.start_server(_echo, "127.0.0.1", 0, insecure=True,
                                             busy_poll=50) as server:
            aep = server.endpoint
            st = aep.io_stats

            def late(timeout):
                time.sleep(0.001)
                return [(aep._fd, 1)]

            assert datapath.busy_poll(aep, late) == [(aep._fd, 1)]
            assert (st.busy_polls, st.busy_poll_hits, aep._busy_misses) == (1, 0, 1)
            assert datapath.busy_poll(aep, lambda timeout: [(aep._fd, 1)]) == [(aep._fd, 1)]
            assert (st.busy_polls, st.busy_poll_hits, aep._busy_misses) == (2, 1, 0)
            calls = []

            def never(timeout):
                calls.append(timeout)
                return []

            assert datapath.busy_poll(aep, never) == []
            assert (st.busy_polls, st.busy_poll_hits, aep._busy_misses) == (3, 1, 1)
            assert st.busy_poll_checks == 2 + len(calls) and all(t == 0 for t in calls)

    asyncio.run(asyncio.wait_for(main(), 20))


def test_two_endpoints_on_one_loop_poll_never():
    # A client and a server on one loop: a poll would hold up the very
    # callback that answers it, so the loop does not poll.
    async def main():
        async with await gannet.start_server(_echo, "127.0.0.1", 0, insecure=True,
                                             busy_poll=LONG) as server:
            reader, writer = await gannet.open_connection(*server.addresses[0], insecure=True,
                                                          busy_poll=LONG)
            await ping_pong(reader, writer, 50)
            aep = writer.get_extra_info("endpoint")
            assert aep._timer.endpoints == 2
            counts = stats(aep.io_stats), stats(server.endpoint.io_stats)
            writer.close()
            await writer.wait_closed()
            return counts

    for side in asyncio.run(asyncio.wait_for(main(), 30)):
        assert side["busy_polls"] == side["busy_poll_checks"] == 0, side


@needs_two_cpus
def test_an_idle_connection_polls_never():
    with ServerThread(busy_poll=LONG) as server:
        client, idle, _ = run_client(server.addr, 20, idle=0.3, peer=server.endpoint.io_stats,
                                     busy_poll=LONG)
    assert client["busy_polls"] > 0  # (it polls while messages are in flight)
    for side in idle:  # (the client's, then the server's)
        assert side["busy_polls"] == side["busy_poll_checks"] == 0, idle


@needs_two_cpus
def test_answers_later_than_the_budget_turn_polling_down():
    # After BUSY_MISSES_OFF polls in a row without an answer, only one
    # activation in BUSY_RETRY_EVERY polls; an answered poll turns it back
    # on. Driven directly, with a message in flight: sent, and not answered
    # while the server's loop is held (a pause it takes on its own thread).
    async def main(server):
        reader, writer = await gannet.open_connection(*server.addr, insecure=True, busy_poll=50)
        aep = writer.get_extra_info("endpoint")
        await ping_pong(reader, writer, 5)
        server.loop.call_soon_threadsafe(time.sleep, 2.0)
        await asyncio.sleep(0.05)  # (the server's loop is asleep by now)
        writer.write(MSG)
        (conn,) = aep.core._conns.values()
        snd = conn.snd
        for _ in range(1000):  # (on a loaded machine the write's pass may come a turn later)
            if snd.snd_nxt != snd.snd_una and snd.snd_nxt >= snd.sndbuf.end:
                break
            await asyncio.sleep(0.001)
        assert snd.snd_nxt != snd.snd_una and snd.snd_nxt >= snd.sndbuf.end
        # The write's pass polled on the loop already (and missed): start
        # the count from nothing.
        aep._busy_misses = aep._busy_skipped = 0
        checks = []

        def never(timeout):
            checks.append(timeout)
            return []

        for _ in range(datapath.BUSY_MISSES_OFF):
            assert datapath.busy_poll_due(aep)
            assert datapath.busy_poll(aep, never) == []
        due = [datapath.busy_poll_due(aep) for _ in range(2 * datapath.BUSY_RETRY_EVERY)]
        assert due.count(True) == 2 and due[datapath.BUSY_RETRY_EVERY - 1], due
        assert datapath.busy_poll(aep, lambda timeout: [(aep._fd, 1)])  # answered
        assert datapath.busy_poll_due(aep) and datapath.busy_poll_due(aep)
        st = aep.io_stats
        counts = (st.busy_polls, st.busy_poll_hits, len(checks), st.busy_poll_checks)
        assert await reader.readexactly(64) == MSG
        writer.close()
        await writer.wait_closed()
        return counts

    with ServerThread(busy_poll=0) as server:
        polls, hits, checks, counted = asyncio.run(asyncio.wait_for(main(server), 30))
    # (the ping-pong's own polls come first: counted, not asserted)
    assert polls >= datapath.BUSY_MISSES_OFF + 1 and hits >= 1
    assert checks >= datapath.BUSY_MISSES_OFF and counted >= checks


def echo_socket(s):
    while data := s.recv(65536):
        s.sendall(data)


def blocking_pair(**overrides):
    ls = gannet.Socket(insecure=True, **overrides)
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    c = gannet.Socket(insecure=True, **overrides)
    c.connect(ls.getsockname())
    s, _ = ls.accept()
    return ls, c, s


@pytest.mark.parametrize("budget", [LONG, 0])
def test_blocking_socket_polls_while_it_waits_for_an_answer(budget):
    if budget and endpoint_mod._cpus() < 2:
        pytest.skip("busy polling is off on one CPU")
    ls, c, s = blocking_pair(busy_poll=budget)
    server = threading.Thread(target=echo_socket, args=(s,), daemon=True)
    server.start()
    try:
        for _ in range(20):
            c.sendall(MSG)
            assert c.recv(64) == MSG
        before = stats(c.io_stats)
        for i in range(N):
            msg = i.to_bytes(4, "big") + MSG[4:]
            c.sendall(msg)
            got = c.recv(64)
            while len(got) < 64:
                got += c.recv(64 - len(got))
            assert got == msg
        client = {k: v - before[k] for k, v in stats(c.io_stats).items()}
    finally:
        c.close()
        server.join(10)
        s.close()
        ls.close()
    if budget:
        # The caller waiting in recv polls once per message (its request in
        # flight), and the answer usually comes within the budget.
        assert N * 0.9 <= client["busy_polls"] <= N * 1.1, client
        assert client["busy_poll_hits"] >= N * 0.8, client
    else:
        assert client["busy_polls"] == client["busy_poll_checks"] == 0, client
    assert client["recv_calls"] == client["datagrams_received"] >= N, client
