"""How the security layer says a connection was refused: the error a
connection ends with, and the event a listener gets.

(Apart from crypto/endpoint.py, which is compiled: these are Python classes
- an exception, and an event like the core's - which the compiled module
makes and re-exports.)
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.events import Event


class HandshakeFailed(ConnectionError):
    """The connection was refused by the security layer; the message says
    why in one line (a wrong code, a changed key, an insecure peer)."""


@dataclass(frozen=True, eq=False)
class HandshakeRefused(Event):
    """An incoming connection failed its key exchange (a wrong code or PSK,
    a client that refused our key): the application never saw it, but a
    listener may want to say so (`gannet receive` does, and gives up the
    code). `error` is the HandshakeFailed; `addr` the peer's address."""

    addr: object = None
    error: BaseException | None = None
