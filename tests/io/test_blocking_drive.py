"""The blocking Socket runs the protocol on the calling thread while it waits.

A message must not cost a hand-off to the I/O thread: these tests count the
event loop's callbacks for an endpoint (IoStats.loop_calls) and the passes
application threads ran (IoStats.caller_passes), not wall time. The rest
check that what the loop thread did before still happens: several threads
on several sockets, a receive blocked while another thread sends, close from
another thread, timeouts while another thread drives, and keep-alive and
ACKs while no thread calls at all.
"""

import threading
import time

import pytest

import gannet
from gannet.core.states import State

from gannet_io_helpers import pattern

pytestmark = pytest.mark.timeout(30)


def pair(**kw):
    """(listener, client, server side) connected over loopback."""
    ls = gannet.Socket(**kw)
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)
    c = gannet.Socket(**kw)
    c.connect(ls.getsockname())
    s, _ = ls.accept()
    return ls, c, s


def wait_until(cond, limit=10.0):
    deadline = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def echo(conn):
    while data := conn.recv(65536):
        conn.sendall(data)


def test_ping_pong_messages_are_run_by_the_calling_threads():
    ls, c, s = pair()
    server = threading.Thread(target=echo, args=(s,), daemon=True)
    server.start()
    try:
        for _ in range(20):  # settle: both ends now driven by their callers
            c.sendall(b"x" * 64)
            assert c.recv(64) == b"x" * 64
        cs, ss = c.io_stats, s.io_stats
        before = (cs.loop_calls, ss.loop_calls, cs.caller_passes, ss.caller_passes)
        n = 1000
        for i in range(n):
            msg = i.to_bytes(4, "big") * 16
            c.sendall(msg)
            assert c.recv(64) == msg
        loop_c, loop_s = cs.loop_calls - before[0], ss.loop_calls - before[1]
        passes_c, passes_s = cs.caller_passes - before[2], ss.caller_passes - before[3]
        # Each message was read by the thread waiting for it (but for the few
        # that came while that thread was descheduled for over CALLER_GRACE
        # on a busy machine, which the loop read)...
        assert passes_c >= 0.8 * n and passes_s >= 0.8 * n, (passes_c, passes_s)
        # ...and the loop thread woke only for its periodic look (once per
        # CALLER_GRACE), not once or twice per message as a hand-off would.
        assert loop_c < n / 2 and loop_s < n / 2, (loop_c, loop_s)
    finally:
        c.close()
        server.join(10)
        s.close()
        ls.close()
    assert not server.is_alive()


def test_a_message_costs_no_wake_up_notification_or_second_deadline_look(monkeypatch):
    """In a steady ping-pong the thread that drives is the one that waits:
    no Condition is notified and no wake-up is written to the driver's poll
    by the callers' own passes (only the I/O thread's rare looks may, when
    a thread was away for CALLER_GRACE on a busy machine), and end_drive
    does not ask the core again for the deadline the drive computed."""
    import gannet.io.endpoint as endpoint_mod

    ls, c, s = pair()
    server = threading.Thread(target=echo, args=(s,), daemon=True)
    server.start()
    counts = {"notify": 0, "wake": 0, "get_timer": 0}
    real_notify_all, real_wake = threading.Condition.notify_all, endpoint_mod._Drive.wake
    after = endpoint_mod._Drive.after  # (the slot end_drive reads the drive's deadline from)

    def notify_all(cond):
        counts["notify"] += 1
        real_notify_all(cond)

    def wake(d):
        counts["wake"] += 1
        real_wake(d)

    def get_after(d):
        # Read by end_drive only: nan (the drive returned before its pass)
        # is what makes it ask the core for the deadline.
        value = after.__get__(d)
        if value != value:
            counts["get_timer"] += 1
        return value

    try:
        for _ in range(20):  # settle: both ends now driven by their callers
            c.sendall(b"x" * 64)
            assert c.recv(64) == b"x" * 64
        monkeypatch.setattr(threading.Condition, "notify_all", notify_all)
        monkeypatch.setattr(endpoint_mod._Drive, "wake", wake)
        monkeypatch.setattr(endpoint_mod._Drive, "after", property(get_after, after.__set__))
        loop_before = c.io_stats.loop_calls + s.io_stats.loop_calls
        drives_before = c.io_stats.caller_passes + s.io_stats.caller_passes
        n = 300
        for i in range(n):
            msg = i.to_bytes(4, "big") * 16
            c.sendall(msg)
            assert c.recv(64) == msg
        monkeypatch.undo()
        loop_calls = c.io_stats.loop_calls + s.io_stats.loop_calls - loop_before
        drives = c.io_stats.caller_passes + s.io_stats.caller_passes - drives_before
        assert drives >= n  # (both sides drove: the client's n, the server's)
        # One thread per endpoint here: a wake-up or a notification can only
        # come from the I/O thread's passes, never one per message.
        assert counts["notify"] + counts["wake"] <= loop_calls < n / 2, (counts, loop_calls)
        # A drive that returned before its pass (closed, or what it waits
        # for already there) leaves end_drive to ask; a drive that ran its
        # pass hands the deadline on.
        assert counts["get_timer"] <= drives // 10, (counts, drives)
    finally:
        monkeypatch.undo()
        c.close()
        server.join(10)
        s.close()
        ls.close()


def test_several_threads_on_several_sockets():
    ls = gannet.Socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    addr = ls.getsockname()
    handlers = []

    def accept_loop(k):
        for _ in range(k):
            conn, _ = ls.accept()
            t = threading.Thread(target=lambda conn=conn: (echo(conn), conn.close()), daemon=True)
            t.start()
            handlers.append(t)

    acceptor = threading.Thread(target=accept_loop, args=(6,), daemon=True)
    acceptor.start()
    results = {}

    def client(k):
        with gannet.Socket() as s:
            s.connect(addr)
            got = 0
            for i in range(150):
                msg = bytes([k]) * (1 + (i * 37) % 3000)
                s.sendall(msg)
                buf = b""
                while len(buf) < len(msg):
                    buf += s.recv(len(msg) - len(buf))
                assert buf == msg
                got += 1
            results[k] = got

    clients = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(6)]
    for t in clients:
        t.start()
    for t in clients:
        t.join(25)
    acceptor.join(5)
    for t in handlers:
        t.join(5)
    ls.close()
    assert results == {k: 150 for k in range(6)}


def test_receive_blocked_while_another_thread_sends_on_the_same_socket():
    ls, c, s = pair()
    server = threading.Thread(target=echo, args=(s,), daemon=True)
    server.start()
    data = pattern(2_000_000, seed=5)
    got = bytearray()

    def reader():
        while len(got) < len(data):
            chunk = c.recv(1 << 20)
            if not chunk:
                break
            got.extend(chunk)

    r = threading.Thread(target=reader, daemon=True)
    r.start()
    time.sleep(0.05)  # the reader is inside recv, driving the endpoint
    c.sendall(data)
    r.join(20)
    assert not r.is_alive()
    assert bytes(got) == data
    c.close()
    server.join(10)
    s.close()
    ls.close()


@pytest.mark.parametrize("what", ["recv", "accept"])
def test_close_from_another_thread_ends_a_blocked_call(what):
    ls, c, s = pair()
    outcome = []

    def blocked():
        try:
            if what == "recv":
                outcome.append(c.recv(100))
            else:
                ls.accept()
                outcome.append("accepted")
        except OSError as exc:
            outcome.append(exc)

    t = threading.Thread(target=blocked, daemon=True)
    t.start()
    target = c if what == "recv" else ls
    drive = lambda: target._aep._drive  # noqa: E731
    # Close while the blocked thread sleeps in its own poll of the socket.
    wait_until(lambda: drive() is not None and drive().poll_until is not None, 5)
    target.close()
    t.join(5)
    assert not t.is_alive(), f"{what} still blocked after close()"
    if what == "recv":
        assert outcome == [b""]
    else:
        assert len(outcome) == 1 and isinstance(outcome[0], OSError)
    for x in (c, s, ls):
        x.close()


def test_timeouts_while_another_thread_drives_the_endpoint():
    ls = gannet.Socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(4)
    clients = [gannet.Socket() for _ in range(3)]
    for x in clients:
        x.connect(ls.getsockname())
    accepted = [ls.accept()[0] for _ in clients]  # three connections, one endpoint
    outcomes = []

    def wait_for_nothing(conn):
        conn.settimeout(0.3)
        try:
            conn.recv(10)
            outcomes.append("data")
        except TimeoutError:
            outcomes.append("timeout")

    threads = [threading.Thread(target=wait_for_nothing, args=(a,), daemon=True) for a in accepted]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert outcomes == ["timeout"] * 3
    # and the endpoint still works for each of them afterwards
    for x, a in zip(clients, accepted):
        x.sendall(b"after")
        a.settimeout(5)
        assert a.recv(10) == b"after"
    for x in clients + accepted + [ls]:
        x.close()


def test_keepalive_and_acks_while_no_thread_calls():
    ls, c, s = pair(keepalive_idle=0.2, keepalive_interval=0.1)
    try:
        # Data sent while the receiving application is away is acknowledged
        # by the I/O thread, which takes the endpoint back from its callers.
        c.sendall(b"y" * 50_000)
        conn = c.connection
        wait_until(lambda: conn.snd_una == conn.snd_nxt, 5)
        assert s.io_stats.loop_calls > 0
        # Nobody calls on either side: keep-alive probes go out and are answered.
        wait_until(lambda: conn.stats.keepalive_probes >= 2, 5)
        assert c.state == State.ESTABLISHED and s.state == State.ESTABLISHED
        s.settimeout(5)
        got = b""
        while len(got) < 50_000:
            got += s.recv(65536)
        assert got == b"y" * 50_000
    finally:
        for x in (c, s, ls):
            x.close()


def test_accept_takes_a_connection_that_arrives_as_it_begins_to_drive():
    """The handshake completes after accept's first look but before the
    driving thread's own look: the connection the drive's look takes is the
    one accept returns (a second look used to find the queue empty and wait
    out the timeout, with the connection taken and lost)."""
    ls = gannet.Socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)
    ls.settimeout(10)
    aep = ls._aep
    real = aep.drive

    def drive(until, ready=None):
        # Run the endpoint without taking anything until the handshake is
        # done, then let the drive's own look (ready) take the connection.
        while not aep.ep._accept_queue and (until is None or aep.now() < until):
            real(until, lambda: bool(aep.ep._accept_queue))
        real(until, ready)

    aep.drive = drive
    c = gannet.Socket()
    c.settimeout(10)
    t = threading.Thread(target=c.connect, args=(ls.getsockname(),), daemon=True)
    t.start()
    s, _ = ls.accept()
    del aep.drive  # (the accepted socket shares the listener's endpoint)
    t.join(10)
    c.sendall(b"ping")
    assert s.recv(4) == b"ping"
    for x in (c, s, ls):
        x.close()


def test_a_listener_with_a_code_answers_each_hello_with_an_exchange_started_ahead(monkeypatch):
    """A blocking listener with a code makes its half of the next code
    exchange (the SPAKE2 message) before the hello comes, as the asyncio
    listener does: the first while nobody accepts yet, each next one on the
    thread in accept() as it waits. Every hello finds one started."""
    import gannet.crypto.endpoint as secure

    answered = []
    real = secure.ServerHandshake

    def spy(*args, started=None, **kw):
        answered.append(started is not None)
        return real(*args, started=started, **kw)

    monkeypatch.setattr(secure, "ServerHandshake", spy)
    code = "7-guitar-october"
    ls = gannet.Socket(code=code)
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)
    ls.settimeout(10)
    sec = ls._aep.ep
    wait_until(lambda: sec._code_started is not None)  # nobody in accept() yet
    first = sec._code_started
    socks = [ls]
    for _ in range(3):
        c = gannet.Socket(code=code)
        c.settimeout(10)
        c.connect(ls.getsockname())
        s, _ = ls.accept()
        c.sendall(b"ping")
        assert s.recv(4) == b"ping"
        socks += [c, s]
    assert answered == [True, True, True]
    wait_until(lambda: sec._code_started is not None)  # the next one, ahead again
    assert sec._code_started[1] != first[1]
    for x in socks:
        x.close()
