"""The interface every congestion controller implements."""

from __future__ import annotations

from typing import ClassVar


class CongestionControl:
    """Base class: holds cwnd and ssthresh in bytes.

    The connection calls:
    - `on_ack(now, acked, in_flight, rtt)` when new data is acknowledged
      (cumulatively or by SACK) outside loss recovery (and inside it too when
      `acks_in_recovery` is True);
    - `on_congestion_event(now, in_flight)` once per window of losses, when
      fast retransmit / SACK recovery starts;
    - `on_recovery_end(now)` when the recovery point is acknowledged;
    - `on_rto(now, in_flight)` when the retransmission timer expires;
    - `on_delivery_rate(now, rate, interval, app_limited, retransmitted)` for
      each rate sample (`retransmitted`: bytes resent so far, a running count).
    It may set `pacing_rate` (bytes/s); the connection then spreads segments
    out instead of sending a window at once.
    """

    __slots__ = ("mss", "cwnd", "ssthresh", "pacing_rate")

    name: ClassVar[str] = "base"

    def __init__(self, mss: int, initial_window: int) -> None:
        self.mss = mss
        self.cwnd = initial_window * mss
        self.ssthresh = 1 << 62  # "arbitrarily high" (RFC 5681 3.1)
        # Bytes per second the connection should pace at, or None for no pacing.
        self.pacing_rate: float | None = None

    def set_mss(self, mss: int) -> None:
        self.cwnd = self.cwnd // self.mss * mss
        self.mss = mss

    @property
    def in_slow_start(self) -> bool:
        return self.cwnd < self.ssthresh

    def on_ack(self, now: float, acked: int, in_flight: int, rtt: float | None) -> None:
        raise NotImplementedError

    def on_congestion_event(self, now: float, in_flight: int) -> None:
        raise NotImplementedError

    def on_recovery_end(self, now: float) -> None:
        pass

    def on_delivery_rate(
        self, now: float, rate: float, interval: float, app_limited: bool, retransmitted: int = 0
    ) -> None:
        """A delivery-rate sample in bytes/s over `interval` seconds (model-based
        controllers use it; loss-based ones ignore it). `app_limited` samples
        say more about the application than about the path; `retransmitted`
        is the connection's running count of resent bytes (so a controller
        can tell how much of what it sends is lost)."""

    acks_in_recovery: ClassVar[bool] = False
    """True: `on_ack` is called during loss recovery too (after
    `on_congestion_event`, and for the ACK that ends recovery after
    `on_recovery_end`), so a model-based controller keeps learning."""

    def on_rto(self, now: float, in_flight: int) -> None:
        raise NotImplementedError
