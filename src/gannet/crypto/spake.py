"""The SPAKE2 halves of a code exchange (Mode.CODE of
gannet.crypto.handshake), and exchanges started elsewhere ahead of need.

A client's half depends on the code and a fresh secret scalar, not on the
server, so it can be started before its handshake: `gannet send --code`
starts it in a child process of its own while the command loads
(gannet.io.spake_child: spake2's import and first message were about a
third of its way to the SYN, and one interpreter runs Python on one core at
a time) and `offer`s it here; the first `client_exchange` for that code
takes it (an exchange answers one handshake), any other makes spake2's
SPAKE2_A in this process. Either kind has spake2's `start()` and
`finish(message)`; the one started elsewhere may also raise ExchangeLost.
"""

from __future__ import annotations

TYPE_CHECKING = False  # (typing.TYPE_CHECKING without importing typing)
if TYPE_CHECKING:
    from typing import Any

SPAKE2_ID_CLIENT = b"gannet client"
SPAKE2_ID_SERVER = b"gannet server"
MESSAGE_SIZE = 33  # a SPAKE2 message: its side's byte, then an Ed25519 point
KEY_SIZE = 32  # the SPAKE2 key (SHA-256 of its transcript)


class ExchangeLost(Exception):
    """An exchange started elsewhere cannot be finished (the process that
    holds its secret scalar ended after its first message left)."""


_offered: dict[str, Any] = {}


def offer(code: str, exchange: Any) -> None:
    """Keep `exchange`, a client's half started for `code` (normalized), for
    the next `client_exchange(code)`."""
    _offered[code] = exchange


def offered(code: str) -> bool:
    return code in _offered


def client_exchange(code: str) -> Any:
    """The client's half of SPAKE2 for `code` (normalized): the one offered
    for it, taken once, or a new one in this process."""
    ahead = _offered.pop(code, None)
    if ahead is not None:
        return ahead
    return local_exchange(code)


def discard_offered() -> None:
    """Drop every exchange offered and not taken (`close()`d, where it has one)."""
    while _offered:
        exchange = _offered.popitem()[1]
        close = getattr(exchange, "close", None)
        if close is not None:
            close()


def local_exchange(code: str) -> Any:
    """spake2's SPAKE2_A for `code`, in this process."""
    from spake2 import SPAKE2_A

    return SPAKE2_A(code.encode(), idA=SPAKE2_ID_CLIENT, idB=SPAKE2_ID_SERVER)


def server_exchange(code: str) -> Any:
    """spake2's SPAKE2_B for `code` (the server's half, in this process)."""
    from spake2 import SPAKE2_B

    return SPAKE2_B(code.encode(), idA=SPAKE2_ID_CLIENT, idB=SPAKE2_ID_SERVER)
