"""CUBIC (RFC 9438) with HyStart++ (RFC 9406) slow start.

The window grows as a cubic function of the time since the last congestion
event, W_cubic(t) = C*(t-K)^3 + W_max, so it approaches the window at which
loss happened carefully and probes beyond it faster the longer nothing is
lost. The formula works in segments (C = 0.4 segments/s^3); `cwnd` stays in
bytes as the interface requires, and the arithmetic converts at the edges.
"""

from __future__ import annotations

from typing import ClassVar, Final

from . import register
from .base import CongestionControl
from .hystart import HyStartPlusPlus

C: Final = 0.4
BETA: Final = 0.7
ALPHA: Final = 3 * (1 - BETA) / (1 + BETA)  # Reno-friendly additive increase (RFC 9438 4.3)


class Cubic(CongestionControl):
    __slots__ = (
        "w_max", "cwnd_prior", "k", "epoch_start", "w_est", "srtt", "hystart", "_after_rto",
        "_in_rto_loss", "_last_ack",
    )

    name: ClassVar[str] = "cubic"

    def __init__(self, mss: int, initial_window: int) -> None:
        super().__init__(mss, initial_window)
        self.w_max = 0.0  # segments; window before the last reduction
        self.cwnd_prior = 0.0  # segments; cwnd when ssthresh was last set
        self.k = 0.0  # seconds until W_cubic reaches w_max again
        self.epoch_start: float | None = None
        self.w_est = 0.0  # segments; the Reno-friendly estimate
        self.srtt: float | None = None
        self.hystart = HyStartPlusPlus(mss)
        self._after_rto = False
        self._in_rto_loss = False
        self._last_ack: float | None = None

    # ------------------------------------------------------------ helpers
    def w_cubic(self, t: float) -> float:
        """RFC 9438 eq. 1, in segments, `t` seconds into the epoch."""
        return C * (t - self.k) ** 3 + self.w_max

    def _start_epoch(self, now: float) -> None:
        cwnd = self.cwnd / self.mss
        self.epoch_start = now
        if self._after_rto:
            # RFC 9438 4.8: the first avoidance stage after a timeout starts
            # from where it is, K = 0 and W_max = cwnd.
            self._after_rto = False
            self.w_max = cwnd
            self.k = 0.0
        elif cwnd < self.w_max:
            self.k = ((self.w_max - cwnd) / C) ** (1 / 3)  # RFC 9438 eq. 2
        else:
            self.k = 0.0
            self.w_max = cwnd
        self.w_est = cwnd

    # ---------------------------------------------------------- interface
    def set_mss(self, mss: int) -> None:
        super().set_mss(mss)
        self.hystart.mss = mss

    def on_ack(self, now: float, acked: int, in_flight: int, rtt: float | None) -> None:
        if rtt is not None and rtt > 0:
            self.srtt = rtt if self.srtt is None else 0.875 * self.srtt + 0.125 * rtt
        if acked > 0:
            self._in_rto_loss = False
        last, self._last_ack = self._last_ack, now
        if 2 * (in_flight + acked) < self.cwnd:
            # Application-limited: do not grow a window that is not used, and
            # do not let the idle time count as cubic growth time either.
            if self.epoch_start is not None and last is not None:
                self.epoch_start += now - last
            return
        if self.cwnd < self.ssthresh:
            if self.hystart.enabled:
                cwnd, leave = self.hystart.on_ack(now, self.cwnd, acked, in_flight, rtt)
                self.cwnd = cwnd
                if leave:
                    self.ssthresh = self.cwnd
            else:
                self.cwnd = min(self.cwnd + acked, max(self.ssthresh, self.cwnd + self.mss))
            return
        self._avoidance(now, acked)

    def _avoidance(self, now: float, acked: int) -> None:
        mss = self.mss
        epoch_start = self.epoch_start
        if epoch_start is None:
            self._start_epoch(now)
            epoch_start = now
        cwnd = self.cwnd / mss
        segs = acked / mss
        t = now - epoch_start
        rtt = self.srtt or 0.0
        # Reno-friendly region (RFC 9438 4.3): what Reno with ALPHA would have.
        alpha = 1.0 if self.w_est >= self.cwnd_prior else ALPHA
        self.w_est += alpha * segs / cwnd
        target = self.w_cubic(t + rtt)
        if target < self.w_est:
            new = self.w_est
        else:
            # Concave and convex regions (RFC 9438 4.4, 4.5): target clamped
            # to [cwnd, 1.5*cwnd], approached over one RTT.
            target = min(max(target, cwnd), 1.5 * cwnd)
            new = cwnd + (target - cwnd) / cwnd * segs
        self.cwnd = max(self.cwnd, int(new * mss))

    def on_congestion_event(self, now: float, in_flight: int) -> None:
        cwnd = self.cwnd / self.mss
        self.hystart.reset()
        # Fast convergence (RFC 9438 4.7): a flow whose window keeps shrinking
        # releases bandwidth to newcomers.
        if cwnd < self.w_max:
            self.w_max = cwnd * (1 + BETA) / 2
        else:
            self.w_max = cwnd
        self.cwnd_prior = cwnd
        self.ssthresh = max(int(self.cwnd * BETA), 2 * self.mss)  # RFC 9438 4.6
        self.cwnd = self.ssthresh
        self.epoch_start = None

    def on_rto(self, now: float, in_flight: int) -> None:
        # RFC 9438 4.8: cwnd to the loss window as Reno does, ssthresh with
        # beta_cubic; a second timeout before any progress keeps ssthresh
        # (RFC 5681 5: a resent segment does not halve it again).
        self.hystart.reset()
        if not self._in_rto_loss:
            self.cwnd_prior = self.cwnd / self.mss
            self.ssthresh = max(int(self.cwnd * BETA), 2 * self.mss)
        self._in_rto_loss = True
        self.cwnd = self.mss
        self.epoch_start = None
        self._after_rto = True


register(Cubic)  # (a call, not a decorator: the compiled build keeps decorated classes dynamic)
