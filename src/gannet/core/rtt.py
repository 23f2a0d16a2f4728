"""Round-trip time estimation and the retransmission timeout (RFC 6298)."""

from __future__ import annotations

from typing import Final

# RFC 6298 section 2: alpha = 1/8, beta = 1/4, K = 4.
ALPHA: Final = 0.125
BETA: Final = 0.25
K: Final = 4
CLOCK_GRANULARITY: Final = 0.001  # G: the adapters' timers are good to about a millisecond


class RttEstimator:
    __slots__ = ("srtt", "rttvar", "min_rtt", "latest_rtt", "rto", "min_rto", "max_rto", "backoff", "samples")

    def __init__(self, initial_rto: float, min_rto: float, max_rto: float) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.min_rtt: float | None = None
        self.latest_rtt: float | None = None
        self.min_rto = min_rto
        self.max_rto = max_rto
        self.rto = min(max(initial_rto, min_rto), max_rto)  # RFC 6298 (2.1)
        self.backoff = 0
        self.samples = 0

    def on_sample(self, rtt: float) -> None:
        """Take one RTT measurement R (seconds)."""
        if rtt < 0:
            return
        self.latest_rtt = rtt
        self.samples += 1
        if self.min_rtt is None or rtt < self.min_rtt:
            self.min_rtt = rtt
        if self.srtt is None:  # (2.2) first measurement
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:  # (2.3)
            self.rttvar = (1 - BETA) * self.rttvar + BETA * abs(self.srtt - rtt)
            self.srtt = (1 - ALPHA) * self.srtt + ALPHA * rtt
        self.backoff = 0  # a fresh sample ends any backoff (5.7 note, Karn)
        self._update()

    def _update(self) -> None:
        # SRTT plus a variance term of at least min_rto, as Linux computes it
        # (its RTTVAR never falls below rto_min), rather than RFC 6298's
        # max(SRTT + 4 RTTVAR, min_rto): with an RTT sample per ACK, RTTVAR
        # shrinks to the per-ACK jitter, and on a 100 ms path the RTO came
        # down to 200 ms - about when RACK detects a lost retransmission
        # (an RTT plus its reordering window after the resend). The two
        # raced: a timeout (window collapse, everything in flight resent)
        # where RACK would have repaired one segment. The tail is TLP's job
        # (at two SRTTs), so a later RTO costs little; (2.5) the maximum.
        var = K * self.rttvar
        if var < CLOCK_GRANULARITY:
            var = CLOCK_GRANULARITY
        if var < self.min_rto:
            var = self.min_rto
        base = (self.srtt or 0.0) + var
        self.rto = base if base <= self.max_rto else self.max_rto

    def current_rto(self) -> float:
        """The RTO with exponential backoff applied (5.5)."""
        rto = self.rto * (1 << self.backoff) if self.backoff else self.rto
        return rto if rto <= self.max_rto else self.max_rto

    def on_timeout(self) -> None:
        self.backoff = min(self.backoff + 1, 16)
