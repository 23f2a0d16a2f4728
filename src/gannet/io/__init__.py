"""Gannet's I/O adapters: the only code that touches sockets, clocks and threads.

- `gannet.io.endpoint`: `AioEndpoint`, one UDP socket driven by an asyncio loop
- `gannet.io.aio`: asyncio streams (`open_connection`, `start_server`)
- `gannet.io.blocking`: the blocking `Socket`, run by the threads that call it
  (and a background loop thread while none does)

The names are loaded on first use (PEP 562), as `gannet`'s are.
"""

from __future__ import annotations

TYPE_CHECKING = False  # (typing.TYPE_CHECKING without importing typing)

_HOMES = {
    "AioEndpoint": "gannet.io.endpoint",
    "create_endpoint": "gannet.io.endpoint",
    "make_config": "gannet.io.endpoint",
    "Server": "gannet.io.aio",
    "StreamWriter": "gannet.io.aio",
    "open_connection": "gannet.io.aio",
    "start_server": "gannet.io.aio",
    "Socket": "gannet.io.blocking",
}

__all__ = sorted(_HOMES)

if TYPE_CHECKING:
    from typing import Any

    from .aio import Server, StreamWriter, open_connection, start_server
    from .blocking import Socket
    from .endpoint import AioEndpoint, create_endpoint, make_config


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'gannet.io' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
