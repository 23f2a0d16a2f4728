"""The event loop Gannet's own programs run on.

uvloop when it is installed (a default dependency where it has wheels), unless GANNET_NO_UVLOOP=1;
asyncio's loop otherwise. Gannet's adapter works on either; uvloop's cheaper
wake-ups and callbacks were worth about 10 % of bulk goodput in most runs
(BENCHMARKS.md, sixth session).
Loops an application creates itself are left alone: these are only for the
blocking `Socket`'s I/O thread and the ``gannet`` command-line programs.
"""

from __future__ import annotations

import asyncio
from typing import Any, Coroutine, TypeVar

from .. import _startup
from .endpoint import _env_off

__all__ = ["new_event_loop", "run"]

T = TypeVar("T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when installed and not switched off, else asyncio's."""
    if not _env_off("GANNET_NO_UVLOOP"):
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on `new_event_loop()`'s loop. When `main` first
    waits (a client: once its SYN is out), the garbage collector's start-up
    pause ends (gannet._startup)."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(_resume_collector_when_waiting(main))


async def _resume_collector_when_waiting(main: Coroutine[Any, Any, T]) -> T:
    # (called before `main` runs, this callback runs once it yields to the loop)
    asyncio.get_running_loop().call_soon(_startup.resume)
    return await main
