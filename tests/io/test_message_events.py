"""What one small message costs the adapter, counted, not timed.

A 64-byte request-response exchange is the workload: per message and side,
the event loop wakes once (the datagram's readiness), the endpoint runs one
pass (the read's events go to the application first; its reply, written
at once, joins the pass that decides the ACK), each side makes one send and
one receive system call, and no timer is armed again for every message
(the delayed ACK rides on the reply). The blocking `Socket` runs two passes
on the calling threads (the send's and the read datagram's); a read that
opened no window runs none. Counters: IoStats (loop_calls, passes,
send_calls, recv_calls) and the loop's shared timer heap (_LoopTimers.arm).
"""

import asyncio
import threading

import pytest

import gannet
from gannet.io import endpoint as endpoint_mod
from gannet_io_helpers import count_ioctls

pytestmark = pytest.mark.timeout(60)

N = 400
MSG = b"m" * 64


def per_message(after, before, n=N):
    return {k: (after[k] - before[k]) / n for k in after}


def counters(st):
    return {k: getattr(st, k) for k in ("loop_calls", "passes", "send_calls", "recv_calls",
                                        "caller_passes")}


async def _echo(reader, writer):
    """Echoes 64-byte messages until the peer's FIN."""
    try:
        while True:
            writer.write(await reader.readexactly(64))
    except asyncio.IncompleteReadError:
        writer.close()


def test_asyncio_message_costs_one_wakeup_one_pass_and_no_timer_rearm(monkeypatch):
    arms = []
    real_arm = endpoint_mod._LoopTimers.arm

    def counted_arm(self, aep, when):
        arms.append(when)
        return real_arm(self, aep, when)

    monkeypatch.setattr(endpoint_mod._LoopTimers, "arm", counted_arm)

    async def main():
        async with await gannet.start_server(_echo, "127.0.0.1", 0) as server:
            reader, writer = await gannet.open_connection(*server.addresses[0])
            for _ in range(20):  # settle: handshake done, RTT measured
                writer.write(MSG)
                assert await reader.readexactly(64) == MSG
            cst, sst = writer.get_extra_info("endpoint").io_stats, server.endpoint.io_stats
            before = (counters(cst), counters(sst))
            del arms[:]
            for _ in range(N):
                writer.write(MSG)
                await writer.drain()
                assert await reader.readexactly(64) == MSG
            client, srv = per_message(counters(cst), before[0]), per_message(counters(sst), before[1])
            timer_arms = len(arms) / N
            # The adapter reads the core's event queue, dirty set and timer
            # heap through references of its own: still the core's objects
            # after a handshake, messages, ACKs and timers.
            for aep in (writer.get_extra_info("endpoint"), server.endpoint):
                assert aep._events is aep.ep._events
                assert aep._dirty is aep.ep._dirty
                assert aep._heap is aep.ep._heap
            writer.close()
            await writer.wait_closed()
        return client, srv, timer_arms

    client, srv, timer_arms = asyncio.run(asyncio.wait_for(main(), 50))
    for side in (client, srv):
        # One loop callback per message (the datagram's readiness) and one
        # pass: the reply, written by the task the message woke, leaves in
        # the pass that follows the read (two passes before: the read's,
        # then the write's).
        assert side["loop_calls"] <= 1.1, (client, srv)
        assert side["passes"] <= 1.1, (client, srv)
        assert 1.0 <= side["send_calls"] <= 1.1 and 1.0 <= side["recv_calls"] <= 1.1, (client, srv)
    # The delayed ACK armed by each message is carried by the reply: the
    # loop's timer is not moved for every message (a few retransmission
    # deadlines moving earlier are allowed for).
    assert timer_arms <= 0.1, timer_arms


def test_blocking_message_costs_each_side_two_passes_on_its_own_thread():
    ls = gannet.Socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    c = gannet.Socket()
    c.connect(ls.getsockname())
    s, _ = ls.accept()

    def echo():
        while data := s.recv(65536):
            s.sendall(data)

    server = threading.Thread(target=echo, daemon=True)
    server.start()
    try:
        for _ in range(20):
            c.sendall(MSG)
            assert c.recv(64) == MSG
        before = (counters(c.io_stats), counters(s.io_stats))
        for _ in range(N):
            c.sendall(MSG)
            got = c.recv(64)
            while len(got) < 64:
                got += c.recv(64 - len(got))
            assert got == MSG
        client, srv = per_message(counters(c.io_stats), before[0]), per_message(counters(s.io_stats), before[1])
    finally:
        c.close()
        server.join(10)
        s.close()
        ls.close()
    for side in (client, srv):
        # The send's pass and the read datagram's pass; the recv that takes
        # the message opens no window worth a pass (it ran a third before).
        assert side["passes"] <= 2.1, (client, srv)
        # Run by the threads waiting in recv, not handed to the I/O thread.
        assert side["caller_passes"] >= 0.8, (client, srv)
        # (the server thread counts its last reply's send after the system
        # call returns, which may be after the client read the counters)
        assert (N - 1) / N <= side["send_calls"] <= 1.1, (client, srv)


@pytest.mark.skipif(not endpoint_mod._FIONREAD, reason="no FIONREAD (not POSIX)")
def test_the_readiness_check_after_a_datagram_raises_nothing_inside(monkeypatch):
    # FIONREAD's answer goes into a writable buffer: handed bytes, fcntl.ioctl
    # tries the buffer as writable first and builds and clears a TypeError
    # inside, per message (a tenth of the adapter's instructions per message).
    real = endpoint_mod.fcntl
    args = []

    class Recording:
        @staticmethod
        def ioctl(fd, request, arg=0, mutate=True):
            args.append(arg)
            return real.ioctl(fd, request, arg, mutate)

    monkeypatch.setattr(endpoint_mod, "fcntl", Recording)

    async def main():
        async with await gannet.start_server(_echo, "127.0.0.1", 0, insecure=True) as server:
            # Two clients: a server's endpoint with two connections asks
            # after each lone datagram (see the test below).
            pairs = [await gannet.open_connection(*server.addresses[0], insecure=True)
                     for _ in range(2)]
            for _ in range(20):
                for reader, writer in pairs:
                    writer.write(MSG)
                    assert await reader.readexactly(64) == MSG
            for _, writer in pairs:
                writer.close()
                await writer.wait_closed()

    asyncio.run(asyncio.wait_for(main(), 30))
    assert len(args) >= 40  # once per datagram the server read
    assert all(type(a) is bytearray and len(a) == 4 for a in args), {type(a) for a in args}


@pytest.mark.skipif(not endpoint_mod._FIONREAD, reason="no FIONREAD (not POSIX)")
def test_the_readiness_check_is_asked_where_a_batch_can_grow(monkeypatch):
    # After a lone datagram, FIONREAD says whether to read on before the
    # pass. An endpoint with one connection whose data is all acknowledged
    # (either side of a request-response exchange, once it read the other's
    # message) has nothing to batch, and skips the system call; a server
    # with two connections asks (another's datagram may be queued), and so
    # does a sender with data in flight (its ACKs: tests/io/test_batching.py).
    by_fd = count_ioctls(monkeypatch)

    async def exchange(pairs, n):
        for _ in range(n):
            for reader, writer in pairs:
                writer.write(MSG)
                await writer.drain()
                assert await reader.readexactly(64) == MSG

    async def main():
        async with await gannet.start_server(_echo, "127.0.0.1", 0) as server:
            one = [await gannet.open_connection(*server.addresses[0])]
            await exchange(one, 20)  # settle: handshake done, RTT measured
            cfd, sfd = one[0][1].get_extra_info("endpoint")._fd, server.endpoint._fd
            before = dict(by_fd)
            await exchange(one, N)
            alone = {k: (by_fd.get(fd, 0) - before.get(fd, 0)) / N for k, fd in (("client", cfd),
                                                                                  ("server", sfd))}
            two = one + [await gannet.open_connection(*server.addresses[0])]
            await exchange(two, 20)
            before = dict(by_fd)
            await exchange(two, N // 2)
            shared = (by_fd.get(sfd, 0) - before.get(sfd, 0)) / N
            for _, writer in two:
                writer.close()
                await writer.wait_closed()
        return alone, shared

    alone, shared = asyncio.run(asyncio.wait_for(main(), 50))
    # (a retransmission or a probe now and then leaves data in flight)
    assert alone["client"] <= 0.05 and alone["server"] <= 0.05, alone
    assert shared >= 0.9, shared  # once per message read by the server


def test_asyncio_reader_waits_once_per_message_on_one_future():
    # The reader's wait for a message is one future awaited directly
    # (ChunkReader._new_waiter), resolved inline by feed_data: no coroutine
    # around it, and no other future per message on either side (the
    # writer's drain makes none while the send buffer takes the message).
    # Counted at the loop, which every future comes from (the reader is a
    # compiled class: its methods cannot be patched).
    async def main():
        loop = asyncio.get_running_loop()
        made = []
        real_create_future = loop.create_future

        def counted_create_future():
            fut = real_create_future()
            made.append(fut)
            return fut

        async def echo(reader, writer):
            try:
                while True:
                    writer.write(await reader.readexactly(64))
                    await writer.drain()
            except asyncio.IncompleteReadError:
                writer.close()

        async with await gannet.start_server(echo, "127.0.0.1", 0, insecure=True) as server:
            reader, writer = await gannet.open_connection(*server.addresses[0], insecure=True)
            assert not isinstance(reader, asyncio.StreamReader)  # its own class (io/reader.py)
            for _ in range(20):
                writer.write(MSG)
                assert await reader.readexactly(64) == MSG
            loop.create_future = counted_create_future  # (an instance attribute of a Python loop)
            try:
                for _ in range(N):
                    writer.write(MSG)
                    await writer.drain()
                    assert await reader.readexactly(64) == MSG
            finally:
                del loop.create_future
            waits = sum(1 for fut in made if fut.done() and not fut.cancelled())
            counted = len(made), waits
            writer.close()
            await writer.wait_closed()
        return counted

    made, resolved = asyncio.run(asyncio.wait_for(main(), 50))
    # one wait per message and side (the reply is never there before the
    # read asks; the echo's next read waits for the next message)
    assert 2 * N - 2 <= made <= 2 * N + 2, made
    assert resolved >= 2 * N - 2, resolved


def test_asyncio_reply_in_several_writes_leaves_as_one_datagram():
    # A reply written in pieces by the task a message woke joins the one
    # pass the read deferred (AioEndpoint._after_receive): one datagram per
    # reply, carrying the ACK. (Running that pass in the reply's first
    # write, so that the first piece left a little sooner, measured no
    # faster on the ping-pong and sent such a reply as two datagrams.)
    async def main():
        async def echo(reader, writer):
            try:
                while True:
                    data = await reader.readexactly(64)
                    for i in range(0, 64, 16):
                        writer.write(data[i:i + 16])
            except asyncio.IncompleteReadError:
                writer.close()

        async with await gannet.start_server(echo, "127.0.0.1", 0, insecure=True) as server:
            reader, writer = await gannet.open_connection(*server.addresses[0], insecure=True)
            sst = server.endpoint.io_stats
            for _ in range(20):
                writer.write(MSG)
                assert await reader.readexactly(64) == MSG
            sent0, passes0 = sst.datagrams_sent, sst.passes
            for _ in range(N):
                writer.write(MSG)
                assert await reader.readexactly(64) == MSG
            per = ((sst.datagrams_sent - sent0) / N, (sst.passes - passes0) / N)
            writer.close()
            await writer.wait_closed()
        return per

    sent, passes = asyncio.run(asyncio.wait_for(main(), 50))
    assert sent <= 1.1, sent
    assert passes <= 1.1, passes
