"""The adapter's clock and timers on a loop whose own clock is coarse."""

import asyncio
import random
import socket
import time

import pytest

from gannet.config import Config
from gannet.io.endpoint import AioEndpoint, make_udp_socket
from gannet.io.security import make_endpoint

uvloop = pytest.importorskip("uvloop")
fired = None


def replaceable():
    """A core endpoint whose get_timer and handle_timer the test replaces on
    the instance: of the class an observed adapter uses
    (gannet.observe.trace.observable), whose methods the compiled adapter
    calls through Python."""
    return make_endpoint(Config(), random.Random(1), observed=True)


@pytest.fixture
def coarse_loop_endpoint():
    loop = uvloop.new_event_loop()
    aep = AioEndpoint(make_udp_socket(socket.AF_INET, ("127.0.0.1", 0)), Config(), loop,
                      endpoint=replaceable())
    yield loop, aep
    aep.close()
    loop.close()


def test_the_clock_is_finer_than_a_millisecond(coarse_loop_endpoint):
    """uvloop's loop.time() moves in whole milliseconds; a loopback round
    trip is a fraction of one, and zero-length RTT samples collapse BBR."""
    loop, aep = coarse_loop_endpoint

    async def steps():
        # Read the clock until it has moved 20 times; keep each move's size.
        # (Counting moves, not timing a wait: a loaded machine only makes
        # some moves larger.)
        moves, last = [], aep.now()
        for _ in range(10_000_000):  # (bounded: a stopped clock fails below)
            if len(moves) == 20:
                break
            now = aep.now()
            if now != last:
                moves.append(now - last)
                last = now
        return moves

    moves = loop.run_until_complete(steps())
    assert len(moves) == 20 and all(m > 0 for m in moves)  # it moves, never backwards
    assert min(moves) < 0.0005, moves  # a millisecond clock never moves by less than 0.001
    assert abs(aep.now() - loop.time()) < 0.01  # the same clock as the loop's timers


def test_timers_never_fire_before_their_deadline(coarse_loop_endpoint):
    loop, aep = coarse_loop_endpoint
    early = []
    due = [None]

    def handle_timer(now):
        early.append(due[0] - time.monotonic())
        due[0] = None
        fired.set_result(None)

    aep.ep.get_timer = lambda: due[0]
    aep.ep.handle_timer = handle_timer

    async def arm_many():
        global fired
        for i in range(20):
            fired = loop.create_future()
            due[0] = aep.now() + 0.0003 + i * 0.00007  # sub-millisecond waits, as a pacer asks
            aep._arm_timer()
            await fired

    loop.run_until_complete(asyncio.wait_for(arm_many(), 5))
    assert len(early) == 20
    assert max(early) <= 0  # at or after the deadline, every time
