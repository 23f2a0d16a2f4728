"""The adapter's clock: a timer that fires early must not leave the output
pass right after it at an earlier time than the deadline it handled."""

import asyncio
import socket

from gannet.config import Config
from gannet.io.endpoint import AioEndpoint, make_udp_socket


def test_now_never_goes_back_before_a_handled_deadline():
    loop = asyncio.new_event_loop()
    aep = AioEndpoint(make_udp_socket(socket.AF_INET, ("127.0.0.1", 0)), Config(), loop)
    try:
        clock = [100.0]
        loop.time = lambda: clock[0]  # a loop whose clock ticks coarsely
        seen = []
        aep.ep.handle_timer = seen.append
        times = []
        aep.ep.datagrams_to_send = lambda now, trains=False: times.append(now) or []
        aep._timer_at = 100.0008  # due 0.8 ms from now, fired by the loop at once
        aep._on_timer()
        assert seen == [100.0008]
        assert times and min(times) >= 100.0008  # the output pass saw the deadline too
        assert aep.now() == 100.0008
        clock[0] = 100.002
        assert aep.now() == 100.002  # and follows the loop's clock once it passes
    finally:
        aep.close()
        loop.close()
