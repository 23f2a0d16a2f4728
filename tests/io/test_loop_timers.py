"""One timer heap per event loop for every AioEndpoint on it (_LoopTimers).

A client holds one endpoint per connection; their deadlines share one heap
and one asyncio timer instead of one TimerHandle each.
"""

import asyncio
import socket
import time

import pytest

from gannet.config import Config
from gannet.io.endpoint import AioEndpoint, _timers_of, make_udp_socket

pytestmark = pytest.mark.timeout(30)


def endpoints(loop, n):
    out = []
    for _ in range(n):
        aep = AioEndpoint(make_udp_socket(socket.AF_INET, ("127.0.0.1", 0)), Config(), loop)
        due = {"at": None, "fired": []}

        def handle_timer(now, due=due):
            due["fired"].append(time.monotonic())
            due["at"] = None

        aep.ep.get_timer = lambda due=due: due["at"]
        aep.ep.handle_timer = handle_timer
        out.append((aep, due))
    return out


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
        await asyncio.sleep(0.08)
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
