"""Which byte-stream transport carries the message layer.

The message layer only needs asyncio-shaped streams: an `open_connection(host,
port) -> (reader, writer)` and a `start_server(cb, host, port) -> server`.
Gannet's own streams are used when this build provides them; plain asyncio TCP
is the fallback (and what "tcp" asks for explicitly).
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import gannet

OpenConnection = Callable[..., Awaitable[tuple[Any, Any]]]
StartServer = Callable[..., Awaitable[Any]]

TRANSPORTS = ("auto", "gannet", "tcp")


def gannet_streams() -> tuple[OpenConnection, StartServer] | None:
    oc = getattr(gannet, "open_connection", None)
    ss = getattr(gannet, "start_server", None)
    if oc is None or ss is None:
        return None
    return oc, ss


def resolve(name: str = "auto") -> tuple[str, OpenConnection, StartServer]:
    """(actual transport name, open_connection, start_server) for `name`."""
    if name not in TRANSPORTS:
        raise ValueError(f"unknown transport {name!r} (choose from {', '.join(TRANSPORTS)})")
    if name in ("auto", "gannet"):
        streams = gannet_streams()
        if streams is not None:
            return ("gannet", *streams)
        if name == "gannet":
            raise RuntimeError("gannet streams are not available in this build (use --transport tcp)")
    import asyncio  # (here: the command lines' parsers take TRANSPORTS without the loop)

    return "tcp", asyncio.open_connection, asyncio.start_server
