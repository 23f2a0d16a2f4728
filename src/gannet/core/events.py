"""What the core tells its driver. Each event names its connection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .connection import Connection


@dataclass(frozen=True, eq=False)
class Event:
    """Something that happened to `conn`."""

    conn: Connection


@dataclass(frozen=True, eq=False)
class ConnectionEstablished(Event):
    """The three-way handshake completed."""


@dataclass(frozen=True, eq=False)
class ConnectionAvailable(Event):
    """An incoming connection is established and waiting in the accept queue."""


@dataclass(frozen=True, eq=False)
class DataReceived(Event):
    """New in-order bytes can be read with `conn.recv`."""


@dataclass(frozen=True, eq=False)
class StreamEnded(Event):
    """The peer finished sending (FIN); everything before it is readable."""


@dataclass(frozen=True, eq=False)
class SendSpaceAvailable(Event):
    """The send buffer has room again after `send` accepted less than asked."""


@dataclass(frozen=True, eq=False)
class ConnectionTerminated(Event):
    """The connection is gone. `error` is None after a clean close."""

    error: Exception | None = None


@dataclass(frozen=True, eq=False)
class AllDataAcknowledged(Event):
    """Everything written so far (and the FIN, once sent) is acknowledged."""
