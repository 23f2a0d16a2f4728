"""The RFC 9293 connection states."""

from __future__ import annotations

from enum import Enum
from typing import Final


class State(Enum):
    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSE_WAIT = "CLOSE-WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"

    def __str__(self) -> str:
        return self.value

    # Members are singletons compared by identity, so identity hashing is
    # right, and it runs in C: Enum's own __hash__ is Python code, and the
    # core tests `state in SYNCHRONIZED` several times per segment.
    __hash__ = object.__hash__


# States in which the connection is synchronized (RFC 9293 3.5.2).
SYNCHRONIZED: Final = frozenset(
    {
        State.ESTABLISHED, State.FIN_WAIT_1, State.FIN_WAIT_2, State.CLOSE_WAIT,
        State.CLOSING, State.LAST_ACK, State.TIME_WAIT,
    }
)
# States in which we may still send new data.
CAN_SEND: Final = frozenset({State.ESTABLISHED, State.CLOSE_WAIT})
# States in which the peer may still send us data.
CAN_RECEIVE: Final = frozenset({State.ESTABLISHED, State.FIN_WAIT_1, State.FIN_WAIT_2})

# The transitions, as data: (state, event) -> next state. The connection
# checks every transition it makes against this table, and docs/protocol.md's
# state diagram is generated from it (tools/statediagram.py).
TRANSITIONS: dict[tuple[State, str], State] = {
    (State.CLOSED, "connect"): State.SYN_SENT,
    (State.CLOSED, "listen"): State.LISTEN,
    (State.LISTEN, "rcv SYN"): State.SYN_RECEIVED,
    (State.SYN_SENT, "rcv SYN,ACK"): State.ESTABLISHED,
    (State.SYN_SENT, "rcv SYN (simultaneous open)"): State.SYN_RECEIVED,
    (State.SYN_SENT, "close"): State.CLOSED,
    (State.SYN_RECEIVED, "rcv ACK of SYN"): State.ESTABLISHED,
    (State.SYN_RECEIVED, "close"): State.FIN_WAIT_1,
    (State.SYN_RECEIVED, "rcv FIN"): State.CLOSE_WAIT,
    (State.ESTABLISHED, "close"): State.FIN_WAIT_1,
    (State.ESTABLISHED, "rcv FIN"): State.CLOSE_WAIT,
    (State.FIN_WAIT_1, "rcv ACK of FIN"): State.FIN_WAIT_2,
    (State.FIN_WAIT_1, "rcv FIN"): State.CLOSING,
    (State.FIN_WAIT_1, "rcv FIN,ACK of FIN"): State.TIME_WAIT,
    (State.FIN_WAIT_2, "rcv FIN"): State.TIME_WAIT,
    (State.CLOSE_WAIT, "close"): State.LAST_ACK,
    (State.CLOSING, "rcv ACK of FIN"): State.TIME_WAIT,
    (State.LAST_ACK, "rcv ACK of FIN"): State.CLOSED,
    (State.TIME_WAIT, "timeout 2MSL"): State.CLOSED,
}
