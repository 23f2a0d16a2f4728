"""One timer heap per event loop for every AioEndpoint on it (_LoopTimers).

A client holds one endpoint per connection; their deadlines share one heap
and one asyncio timer instead of one TimerHandle each.
"""

import asyncio
import random
import socket
import time

import pytest

from gannet.config import Config
from gannet.io.endpoint import AioEndpoint, _timers_of, make_udp_socket
from gannet.io.security import make_endpoint

def replaceable():
    """A core endpoint whose get_timer and handle_timer the test replaces on
    the instance: of the class an observed adapter uses
    (gannet.observe.trace.observable), whose methods the compiled adapter
    calls through Python."""
    return make_endpoint(Config(), random.Random(1), observed=True)


pytestmark = pytest.mark.timeout(30)


def endpoints(loop, n):
    out = []
    for _ in range(n):
        aep = AioEndpoint(make_udp_socket(socket.AF_INET, ("127.0.0.1", 0)), Config(), loop,
                      endpoint=replaceable())
        due = {"at": None, "fired": []}

        def handle_timer(now, due=due):
            due["fired"].append(time.monotonic())
            due["at"] = None

        aep.ep.get_timer = lambda due=due: due["at"]
        aep.ep.handle_timer = handle_timer
        out.append((aep, due))
    return out


async def until(condition, limit: float = 10.0) -> None:
    """Let the loop run until `condition()` holds; fail after `limit` seconds."""
    end = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < end, "timed out waiting"
        await asyncio.sleep(0.005)


def test_many_endpoints_share_one_asyncio_timer_and_fire_on_time():
    async def main():
        loop = asyncio.get_running_loop()
        eps = endpoints(loop, 50)
        start = time.monotonic()
        before = len(loop._scheduled)
        for i, (aep, due) in enumerate(eps):
            due["at"] = start + 0.02 + 0.001 * (i % 10)
            aep._arm_timer()
        assert len(loop._scheduled) - before <= 1  # one handle, not fifty
        # Wait for the fifty firings themselves (a loaded machine runs the
        # loop late, so a fixed sleep would measure the machine), then a few
        # more timer turns in which none may fire again.
        await until(lambda: all(due["fired"] for _, due in eps))
        await asyncio.sleep(0.03)
        for aep, due in eps:
            assert len(due["fired"]) == 1
            assert due["fired"][0] >= due_at(due, start, eps)  # never early
            aep.close()

    def due_at(due, start, eps):
        i = [d for _, d in eps].index(due)
        return start + 0.02 + 0.001 * (i % 10)

    asyncio.run(main())


def test_an_earlier_deadline_fires_early_and_once():
    async def main():
        loop = asyncio.get_running_loop()
        (aep, due), = endpoints(loop, 1)
        t0 = time.monotonic()
        due["at"] = t0 + 5.0
        aep._arm_timer()
        due["at"] = t0 + 0.01  # moved earlier: a new entry, the old one goes stale
        aep._arm_timer()
        await asyncio.sleep(0.05)
        assert len(due["fired"]) == 1 and due["fired"][0] - t0 < 1.0
        timers = _timers_of(loop)
        # The stale 5 s entry never fires; nothing else is armed.
        assert aep._timer_at is None
        assert all(e[2]._timer_at != e[0] for e in timers.heap)
        aep.close()

    asyncio.run(main())


def test_a_closed_endpoint_does_not_fire_and_stale_entries_are_compacted():
    async def main():
        loop = asyncio.get_running_loop()
        eps = endpoints(loop, 300)
        t0 = time.monotonic()
        for aep, due in eps:
            due["at"] = t0 + 0.03
            aep._arm_timer()
        for aep, _ in eps[:200]:
            aep.close()
        timers = _timers_of(loop)
        assert len(timers.heap) <= 200  # compacted once most entries were stale
        await asyncio.sleep(0.1)
        assert [len(d["fired"]) for _, d in eps] == [0] * 200 + [1] * 100
        for aep, _ in eps[200:]:
            aep.close()

    asyncio.run(main())


def test_a_failing_endpoint_does_not_stop_the_others():
    async def main():
        loop = asyncio.get_running_loop()
        errors = []
        loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx["exception"]))
        (bad, bdue), (good, gdue) = endpoints(loop, 2)

        def boom(now):
            raise RuntimeError("boom")

        bad.ep.handle_timer = boom
        t0 = time.monotonic()
        bdue["at"] = gdue["at"] = t0 + 0.01
        bad._arm_timer()
        good._arm_timer()
        await asyncio.sleep(0.05)
        assert len(gdue["fired"]) == 1
        assert [str(e) for e in errors] == ["boom"]
        bad.close()
        good.close()

    asyncio.run(main())


def test_a_deadline_armed_again_at_the_same_time_fires_once_and_nothing_later_early():
    """An endpoint armed for D, superseded by an earlier deadline that fires,
    and armed for the same D again (a connection in TIME-WAIT whose 2 MSL
    deadline stays the latest while delayed ACKs come and go) must be called
    once at D, and the core must never be told that a later deadline has
    come. The stale entries for D used to count as live again once the
    endpoint's deadline equalled their time: D's firing called the endpoint
    once per entry, and each extra call handed the core its next deadline as
    `now` - a chat receiver's keep-alive sent its three probes and gave up
    within a millisecond, mid-transfer."""

    async def main():
        loop = asyncio.get_running_loop()
        aep = AioEndpoint(make_udp_socket(socket.AF_INET, ("127.0.0.1", 0)), Config(), loop,
                      endpoint=replaceable())
        pending: set[float] = set()
        handled: list[tuple[float, float]] = []  # (the core's now, the clock then)

        def handle_timer(now):
            handled.append((now, time.monotonic()))
            pending.difference_update([d for d in pending if d <= now])

        aep.ep.get_timer = lambda: min(pending, default=None)
        aep.ep.handle_timer = handle_timer
        calls = []  # when the endpoint was called
        on_timer = aep._on_timer

        def counted():
            calls.append(time.monotonic())
            on_timer()

        aep._on_timer = counted
        t0 = time.monotonic()
        late = t0 + 0.6  # "TIME-WAIT": the deadline armed again and again
        far = t0 + 30.0  # "keep-alive": must not be reached in this test
        pending.update((late, far))
        aep._arm_timer()
        for _ in range(5):
            if time.monotonic() > late - 0.1:
                break  # a slow machine: fewer rounds, still no early firing allowed
            pending.add(time.monotonic() + 0.01)  # "a delayed ACK", earlier
            aep._arm_timer()
            await asyncio.sleep(0.04)  # it fires; the endpoint re-arms for `late`
        await asyncio.sleep(max(0.0, late - time.monotonic()) + 0.1)
        try:
            for now, clock in handled:
                assert now <= clock + 0.005, f"the core was told {now - clock:.3f} s ahead"
            assert far in pending
            assert late not in pending
            assert sum(1 for now, _ in handled if now >= late) == 1
            assert sum(1 for t in calls if t >= late) == 1  # one live entry, one call
        finally:
            aep.close()

    asyncio.run(main())


@pytest.mark.parametrize("armed", [False, True])
def test_a_loop_that_had_endpoints_can_be_freed(armed):
    """Nothing of Gannet's keeps an event loop alive once its endpoints are
    closed and the loop is dropped (the per-loop timers were once held, with
    their loop, in a module-level dict for good)."""
    import gc
    import weakref

    loop = asyncio.new_event_loop()
    (aep, due), = endpoints(loop, 1)
    if armed:
        due["at"] = time.monotonic() + 60  # a deadline still pending when the loop goes
        aep._arm_timer()
    ref = weakref.ref(loop)
    aep.close()
    loop.close()
    del loop, aep, due
    gc.collect()
    assert ref() is None
