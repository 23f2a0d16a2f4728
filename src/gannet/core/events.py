"""What the core tells its driver. Each event names its connection."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .connection import Connection


# An event that adds no field to Event is a plain subclass: the dataclass
# methods Event has (its __init__, __repr__, and the frozen __setattr__ and
# __delattr__) serve it as they are, and `dataclasses.fields` finds Event's
# field in it. Decorating each again would only make the same methods anew
# at import, about half a millisecond per class on a `gannet send`'s way to
# its SYN (BENCHMARKS.md, start-up). Slots (Event's own, and none in each
# such subclass) keep those immutable too: the field is frozen, and any
# other name raises AttributeError, as on a decorated class. (Event's slot
# is declared, not made by `slots=True`: Python 3.11's frozen __setattr__
# would name the class that option replaces.)
@dataclass(frozen=True, eq=False)
class Event:
    """Something that happened to `conn`."""

    __slots__ = ("conn",)
    conn: Connection

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Copies and pickles go through the constructor: a frozen class's
        # slot refuses the setattr that copy would otherwise restore it with.
        return type(self), tuple(getattr(self, f.name) for f in fields(self))


class ConnectionEstablished(Event):
    """The three-way handshake completed."""

    __slots__ = ()


class ConnectionAvailable(Event):
    """An incoming connection is established and waiting in the accept queue."""

    __slots__ = ()


class DataReceived(Event):
    """New in-order bytes can be read with `conn.recv`."""

    __slots__ = ()


class StreamEnded(Event):
    """The peer finished sending (FIN); everything before it is readable."""

    __slots__ = ()


class SendSpaceAvailable(Event):
    """The send buffer has room again after `send` accepted less than asked."""

    __slots__ = ()


@dataclass(frozen=True, eq=False)
class ConnectionTerminated(Event):
    """The connection is gone. `error` is None after a clean close."""

    error: Exception | None = None


class AllDataAcknowledged(Event):
    """Everything written so far (and the FIN, once sent) is acknowledged."""

    __slots__ = ()
