"""NewReno (RFC 5681, RFC 6582), with byte counting (RFC 3465)."""

from __future__ import annotations

from typing import ClassVar

from . import register
from .base import CongestionControl


class NewReno(CongestionControl):
    __slots__ = ()

    name: ClassVar[str] = "newreno"

    def on_ack(self, now: float, acked: int, in_flight: int, rtt: float | None) -> None:
        # Do not grow a window the sender is not using (RFC 7661's idea): an
        # application-limited flow has not shown the path can take more.
        if 2 * (in_flight + acked) < self.cwnd:
            return
        if self.cwnd < self.ssthresh:
            # Slow start: one byte per byte acknowledged, but not past ssthresh
            # in one step (RFC 5681 3.1, RFC 3465).
            self.cwnd = min(self.cwnd + acked, max(self.ssthresh, self.cwnd + self.mss))
        else:
            # Congestion avoidance: about one MSS per round trip.
            self.cwnd += max(1, self.mss * acked // self.cwnd)

    def on_congestion_event(self, now: float, in_flight: int) -> None:
        # RFC 5681 (4): ssthresh = max(FlightSize / 2, 2*SMSS).
        self.ssthresh = max(in_flight // 2, 2 * self.mss)
        self.cwnd = self.ssthresh

    def on_rto(self, now: float, in_flight: int) -> None:
        self.ssthresh = max(in_flight // 2, 2 * self.mss)
        self.cwnd = self.mss  # loss window, RFC 5681 (5)


register(NewReno)  # (a call, not a decorator: the compiled build keeps decorated classes dynamic)
