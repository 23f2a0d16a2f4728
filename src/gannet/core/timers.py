"""A connection's timers: one table of named deadlines.

Each timer is a slot in a list of absolute times (`NEVER` when it is not
armed), indexed by the constants below, so the earliest deadline is one
`min()` over the list and every timer is armed, cancelled and read the
same way. `Connection.handle_timer` walks `DISPATCH_ORDER` once and runs
the handler of each deadline that is due.

Two entries are not set by the connection directly: RACK's (RACK-TLP's
reorder or probe timeout, kept by `recovery.RackTlp`) and the idle timeout
(the last segment's arrival plus `idle_timeout`); both are copied into the
table when it is read (`Connection._sync_deadlines`).
"""

from __future__ import annotations

from typing import Final

NEVER: Final = float("inf")

RTX: Final = 0  # retransmission timeout (RFC 6298)
RACK: Final = 1  # RACK reorder timer or TLP probe timeout (RFC 8985)
PERSIST: Final = 2  # zero-window probe (RFC 9293 3.8.6.1)
DELACK: Final = 3  # delayed or held ACK (RFC 9293 3.8.6.3)
KEEPALIVE: Final = 4  # keep-alive probe (RFC 1122 4.2.3.6)
PACING: Final = 5  # the pacer has tokens again
TIMEWAIT: Final = 6  # 2 MSL in TIME-WAIT (RFC 9293 3.6)
CONNECT: Final = 7  # the connection attempt gives up
IDLE: Final = 8  # nothing from the peer for idle_timeout

NAMES = ("rtx", "rack", "persist", "delack", "keepalive", "pacing", "timewait", "connect", "idle")

# The order in which due timers run: the ones that end the connection first
# (nothing else matters then), RACK before the RTO (a probe due with it
# replaces it), output-producing timers before the delayed ACK (the ACK
# rides on what they send).
DISPATCH_ORDER = (TIMEWAIT, CONNECT, IDLE, RACK, RTX, PERSIST, PACING, DELACK, KEEPALIVE)


def unarmed() -> list[float]:
    """A fresh table with no timer armed."""
    return [NEVER] * len(NAMES)
