"""HyStart++ (RFC 9406): leave slow start when the RTT starts to climb.

Two pieces that controllers share:

- `RoundCounter` delimits round trips from the `on_ack` calls alone. The
  RFC ends a round when the ACK passes `windowEnd` (SND.NXT when the round
  began); a controller does not see sequence numbers, so the counter keeps
  the same meaning in bytes: when a round begins it notes the bytes delivered
  so far plus the bytes still outstanding after that ACK, and the round ends
  once that many bytes have been delivered - i.e. once everything that was in
  flight when the round began has been acknowledged. The connection does not
  call `on_ack` during loss recovery, so `tick` also ends a round after two
  smoothed RTTs without one ending by bytes.
- `HyStartPlusPlus` watches the minimum RTT of each round and decides
  between slow start, Conservative Slow Start (CSS) and congestion avoidance.
"""

from __future__ import annotations

from typing import Final

INF: Final = float("inf")

# RFC 9406 section 4.3 constants.
MIN_RTT_THRESH: Final = 0.004
MAX_RTT_THRESH: Final = 0.016
MIN_RTT_DIVISOR: Final = 8
N_RTT_SAMPLE: Final = 8
CSS_GROWTH_DIVISOR: Final = 4
CSS_ROUNDS: Final = 5
L_UNPACED: Final = 8  # segments of growth per ACK at most when not paced


class RoundCounter:
    """Round trips measured in delivered bytes (see the module docstring)."""
    __slots__ = ("delivered", "round", "_round_end", "_round_start_time", "srtt", "min_round_time")

    def __init__(self) -> None:
        self.delivered = 0
        self.round = 0
        self._round_end = 0  # delivered count that ends the current round
        self._round_start_time: float | None = None
        self.srtt: float | None = None
        # A round lasts at least this long (0: no floor). When everything in
        # flight is marked lost (after a timeout) the outstanding bytes are
        # near zero and each ACK would otherwise end a "round".
        self.min_round_time = 0.0

    def on_ack(self, now: float, acked: int, in_flight: int, rtt: float | None) -> bool:
        """Count `acked` bytes; True when this ACK ends a round (a new one begins)."""
        if rtt is not None and rtt > 0:
            self.srtt = rtt if self.srtt is None else 0.875 * self.srtt + 0.125 * rtt
        if acked > 0:
            self.delivered += acked
        start = self._round_start_time
        if start is None or (self.delivered >= self._round_end and now - start >= self.min_round_time):
            left = in_flight - acked
            self._start_round(now, left if left > 0 else 0)
            return True
        return False

    def tick(self, now: float, in_flight: int = 0) -> bool:
        """Time fallback for stretches without `on_ack` calls (loss recovery)."""
        if self._round_start_time is None or self.srtt is None:
            return False
        if now - self._round_start_time >= 2 * self.srtt:
            self._start_round(now, in_flight)
            return True
        return False

    def _start_round(self, now: float, outstanding: int) -> None:
        self.round += 1
        self._round_start_time = now
        # At least one byte more, so an ACK with nothing outstanding does not
        # start a round on every call.
        self._round_end = self.delivered + max(1, outstanding)


class HyStartPlusPlus:
    """The RFC 9406 slow-start algorithm, for any controller with cwnd/ssthresh.

    Call `on_ack` for each ACK while the controller is in slow start; it
    returns the new cwnd and whether to leave slow start for congestion
    avoidance (the caller then sets ssthresh = cwnd). Call `reset` on a
    congestion event or timeout; this implementation (as the RFC recommends)
    only runs during the initial slow start: afterwards ssthresh bounds slow
    start anyway.
    """

    __slots__ = (
        "mss", "paced", "rounds", "last_round_min_rtt", "current_round_min_rtt",
        "rtt_sample_count", "css_baseline_min_rtt", "css_rounds", "enabled",
    )

    def __init__(self, mss: int, paced: bool = False) -> None:
        self.mss = mss
        self.paced = paced
        self.rounds = RoundCounter()
        self.last_round_min_rtt = INF
        self.current_round_min_rtt = INF
        self.rtt_sample_count = 0
        self.css_baseline_min_rtt = INF  # INF: not in CSS
        self.css_rounds = 0
        self.enabled = True

    @property
    def in_css(self) -> bool:
        return self.css_baseline_min_rtt != INF

    def reset(self) -> None:
        """A loss or timeout ends HyStart++'s part (RFC 9406 4.2, last steps)."""
        self.enabled = False
        self.css_baseline_min_rtt = INF

    def on_ack(
        self, now: float, cwnd: int, acked: int, in_flight: int, rtt: float | None
    ) -> tuple[int, bool]:
        """One slow-start ACK: returns (new cwnd, leave slow start now)."""
        if self.rounds.on_ack(now, acked, in_flight, rtt):
            self.last_round_min_rtt = self.current_round_min_rtt
            self.current_round_min_rtt = INF
            self.rtt_sample_count = 0
            if self.in_css:
                self.css_rounds += 1
        if rtt is not None and rtt > 0:
            self.current_round_min_rtt = min(self.current_round_min_rtt, rtt)
            self.rtt_sample_count += 1

        if not self.enabled:
            return cwnd + acked, False
        if self.in_css:
            if self.css_rounds >= CSS_ROUNDS:
                # RFC 9406 4.2: after CSS_ROUNDS rounds, congestion avoidance.
                self.enabled = False
                return cwnd + self._increase(acked) // CSS_GROWTH_DIVISOR, True
            if (
                self.rtt_sample_count >= N_RTT_SAMPLE
                and self.current_round_min_rtt < self.css_baseline_min_rtt
            ):
                # The RTT came back down: the increase was spurious, resume
                # slow start.
                self.css_baseline_min_rtt = INF
                return cwnd + self._increase(acked), False
            return cwnd + self._increase(acked) // CSS_GROWTH_DIVISOR, False
        new_cwnd = cwnd + self._increase(acked)
        if (
            self.rtt_sample_count >= N_RTT_SAMPLE
            and self.current_round_min_rtt != INF
            and self.last_round_min_rtt != INF
        ):
            thresh = max(MIN_RTT_THRESH, min(self.last_round_min_rtt / MIN_RTT_DIVISOR, MAX_RTT_THRESH))
            if self.current_round_min_rtt >= self.last_round_min_rtt + thresh:
                self.css_baseline_min_rtt = self.current_round_min_rtt
                self.css_rounds = 0
        return new_cwnd, False

    def _increase(self, acked: int) -> int:
        if self.paced:
            return acked
        return min(acked, L_UNPACED * self.mss)
