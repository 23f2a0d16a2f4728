"""Issue 12 finding 13: negotiated timer values must lie in a sane range.

A client asking the message server for `keepalive_interval=1e-9` was
accepted, and the session's watchdog then woke every quarter nanosecond.
Now a value outside MIN_KEEPALIVE-MAX_KEEPALIVE is refused with a reason
that names it, on both sides of the negotiation."""

import asyncio
import math

import pytest

from gannet.apps.messages import (
    BURST,
    Limits,
    Offer,
    Refused,
    SessionRefused,
    connect,
    negotiate,
    serve,
)
from gannet.apps.messages.negotiation import MAX_KEEPALIVE, MIN_KEEPALIVE, Params
from gannet.apps.messages.transport import resolve

_, OPEN, START = resolve("gannet")


@pytest.mark.parametrize("value", [1e-9, 0.0, -1.0, MIN_KEEPALIVE / 2, math.nan])
def test_negotiate_refuses_a_keepalive_below_the_least_allowed(value):
    with pytest.raises(Refused, match="keepalive_interval .* is outside 0.05-3600 s"):
        negotiate(Offer(BURST, 1024, 4, value), Limits())


def test_the_bounds_themselves_are_accepted():
    assert negotiate(Offer(BURST, 1024, 4, MIN_KEEPALIVE), Limits()).keepalive_interval == MIN_KEEPALIVE
    limits = Limits(keepalive_interval=MAX_KEEPALIVE)
    assert negotiate(Offer(BURST, 1024, 4, MAX_KEEPALIVE), limits).keepalive_interval == MAX_KEEPALIVE
    # Above the server's limit is lowered to it, as before.
    assert negotiate(Offer(BURST, 1024, 4, 1e9), Limits()).keepalive_interval == Limits().keepalive_interval


def test_limits_and_accept_refuse_out_of_range_values():
    with pytest.raises(ValueError, match="keepalive_interval 1e-09 s is outside"):
        Limits(keepalive_interval=1e-9)
    body = negotiate(Offer(BURST, 1024, 4, 1.0), Limits()).to_body()
    body["keepalive_interval"] = 1e-9  # what a hostile server could answer
    with pytest.raises(ValueError, match="ACCEPT: keepalive_interval 1e-09 s is outside"):
        Params.from_body(body)


def test_the_server_refuses_a_nanosecond_keepalive_over_the_wire():
    async def main():
        server = await serve(lambda session, data: None, "127.0.0.1", 0, start_server=START)
        host, port = server.address
        try:
            with pytest.raises(SessionRefused, match="keepalive_interval 1e-09 s is outside"):
                await connect(host, port, keepalive_interval=1e-9, open_connection=OPEN)
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(asyncio.wait_for(main(), 10))
