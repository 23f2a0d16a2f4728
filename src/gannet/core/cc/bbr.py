"""A BBR-style model-based controller (in the spirit of BBR v1).

It keeps a model of the path - the bottleneck bandwidth (windowed maximum
delivery rate) and the round-trip propagation time (windowed minimum RTT) -
and sends at gain * bandwidth, with cwnd = cwnd_gain * BDP as a cap. Loss is
not a congestion signal here: random loss does not change the model, so a
lossy path keeps its rate (a loss-based controller halves on every loss).

States: Startup (gain 2/ln 2 until the bandwidth stops growing by 25 % for
three rounds), Drain (inverse gain until the queue Startup built is gone),
ProbeBW (an eight-phase gain cycle 1.25, 0.75, then 1 x 6, each about one
min RTT long), ProbeRTT (cwnd of half a BDP for 200 ms when the min RTT
is ten seconds old and no sample came within 1/32 of it, so the queue
drains and the min RTT is measured again).

One BBRv2-style addition: a loss *with a queue* (the buffer overflowed)
sets inflight_hi = max(0.7 x in flight, 1.25 BDP) as a bound on cwnd,
raised by 1, 2, 4 ... (at most 16) segments in successive probes it
holds back, with cwnd at most 0.85 of it outside probes - so beside a
loss-based flow on a shallow queue BBR backs off as that flow does,
instead of keeping the queue full at 2 BDP, and grows back about as fast.

Random loss is compensated in the pacing rate: once the pipe is full it is
divided by (1 - the share of what was sent that had to be resent, over the
recent rounds without a queue, at most 2 %), since what is lost before the
bottleneck never reaches it.
"""

from __future__ import annotations

from typing import ClassVar, Final


INF: Final = float("inf")

from . import register
from .base import CongestionControl
from .hystart import RoundCounter

# (Final, one a line: the compiled core has them inline instead of a
# dictionary lookup per read, several per ACK.)
STARTUP: Final = "startup"
DRAIN: Final = "drain"
PROBE_BW: Final = "probe_bw"
PROBE_RTT: Final = "probe_rtt"

HIGH_GAIN: Final = 2.89  # 2/ln(2): doubles the delivery rate each round
STARTUP_CWND_GAIN: Final = 2.0
CWND_GAIN: Final = 2.0
GAIN_CYCLE = (1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
BW_WINDOW_ROUNDS: Final = 10
MIN_RTT_WINDOW: Final = 10.0
PROBE_RTT_TIME: Final = 0.2
FULL_BW_GROWTH: Final = 1.25
FULL_BW_ROUNDS: Final = 3
MIN_CWND_SEGMENTS: Final = 4
QUANTUM_SEGMENTS: Final = 3  # cwnd headroom for delayed and aggregated ACKs
# ACK aggregation (the idea of Linux BBR's extra_acked): data ACKed beyond what
# the bandwidth explains, the max over two windows of this many rounds, is
# added to cwnd, capped at this many seconds of bandwidth.
ACK_AGG_WINDOW_ROUNDS: Final = 5
ACK_AGG_MAX_TIME: Final = 0.1
QUEUE_RTT_FACTOR: Final = 1.25
PROBE_RTT_CWND_GAIN: Final = 0.5  # ProbeRTT keeps half a BDP in flight, not four segments
MIN_RTT_CONFIRM: Final = 1 / 32  # a sample this close to the min RTT confirms it (no ProbeRTT needed)
LOSS_BETA: Final = 0.7  # inflight_hi after a loss with a queue: this share of what was in flight
INFLIGHT_HI_FLOOR: Final = 1.25  # ... but not below this many BDPs (delay jitter needs headroom)
HEADROOM: Final = 0.85  # outside probes, cwnd stays below this share of inflight_hi
# ... unless random loss is evident (loss_comp above this: 0.25 % of what is
# sent lost in rounds without a queue); then not below INFLIGHT_HI_FLOOR BDPs.
RANDOM_LOSS_COMP: Final = 1 / (1 - 0.0025)
HI_STEP_MAX: Final = 16  # segments: inflight_hi's growth per round at most
# Random loss upstream of the bottleneck: what is lost never reaches the
# link, so pacing at the delivery rate leaves the link that much idle. The
# pacing rate is divided by (1 - loss rate) of the recent rounds without a
# queue, the rate counted at most this high (BBRv2 reads more than 2 % loss
# in a round as congestion).
LOSS_COMP_MAX: Final = 0.02
LOSS_DECAY: Final = 7 / 8  # per round: the loss-rate estimate covers about 8 rounds
ROUND_RTT_SAMPLES: Final = 4  # RTT samples a round needs before its minimum counts


class Bbr(CongestionControl):
    __slots__ = (
        "state", "pacing_gain", "cwnd_gain", "_initial_cwnd", "btl_bw", "_bw_samples",
        "_extra_acked", "_extra_idx", "_extra_round", "_epoch_start", "_epoch_acked",
        "min_rtt", "latest_rtt", "min_rtt_stamp", "rounds", "filled_pipe", "_full_bw",
        "_full_bw_count", "_sample_app_limited", "_cycle_index", "_cycle_stamp",
        "_probe_rtt_done", "_probe_rtt_round", "_prior_cwnd", "_probe_rtt_cwnd", "_inflight",
        "_in_recovery", "_recovery_capped", "_rto_restore_at", "_loss_in_phase", "inflight_hi",
        "_hi_limited", "_hi_step", "_round_start", "_round_rtt_min", "_round_rtt_count",
        "_last_round_rtt_min", "_retx_seen", "_round_lost", "_round_delivered_at",
        "_round_queue", "_lost_avg", "_delivered_avg", "loss_comp",
    )

    name: ClassVar[str] = "bbr"
    acks_in_recovery: ClassVar[bool] = True  # the model keeps learning while holes are repaired

    def __init__(self, mss: int, initial_window: int) -> None:
        super().__init__(mss, initial_window)
        self.state = STARTUP
        self.pacing_gain = HIGH_GAIN
        self.cwnd_gain = STARTUP_CWND_GAIN
        self.pacing_rate: float | None = None
        self._initial_cwnd = initial_window * mss
        self.btl_bw = 0.0  # bytes/s
        # (round, max rate that round), oldest first. Tuples, replaced when
        # they change (at most once per ACK, and ten entries long), not a
        # deque and a list: a tuple of numbers is no object for the cycle
        # collector to walk, and an empty deque costs 760 bytes.
        self._bw_samples: tuple[tuple[int, float], ...] = ()
        self._extra_acked = (0, 0)  # two windows of the ACK aggregation max filter
        self._extra_idx = 0
        self._extra_round = 0  # round the current window started
        self._epoch_start: float | None = None  # the ACK aggregation epoch
        self._epoch_acked = 0
        self.min_rtt: float | None = None
        self.latest_rtt: float | None = None
        self.min_rtt_stamp = 0.0
        self.rounds = RoundCounter()
        self.filled_pipe = False
        self._full_bw = 0.0
        self._full_bw_count = 0
        self._sample_app_limited = True  # the latest delivery-rate sample was app-limited
        self._cycle_index = 0
        self._cycle_stamp = 0.0
        self._probe_rtt_done: float | None = None
        self._probe_rtt_round = 0
        self._prior_cwnd = 0  # window before a loss episode or timeout
        # Window before ProbeRTT, kept apart: a loss episode that ends inside
        # ProbeRTT must not make it forget.
        self._probe_rtt_cwnd = 0
        self._inflight = 0  # bytes outstanding after the latest ACK we saw
        self._in_recovery = False
        self._recovery_capped = False  # this episode's loss came with a queue
        self._rto_restore_at = 0  # delivered count that ends timeout recovery (0: none)
        self._loss_in_phase = False
        # Upper bound on what is in flight, learned from losses with a queue
        # (the buffer overflowed at about what was in flight then); INF until
        # the first such loss. It grows back additively, as a loss-based
        # flow's window does, so beside one BBR yields about as much as it
        # takes instead of keeping the queue full at 2 BDP.
        self.inflight_hi = INF
        self._hi_limited = False  # this round, cwnd (at inflight_hi) held the flow back
        self._hi_step = 1  # segments inflight_hi grows by in the next limited round
        self._round_start = False
        # RTT samples of this round and the last: a queue shows in all of a
        # round's samples, a delay spike in one.
        self._round_rtt_min = INF
        self._round_rtt_count = 0
        self._last_round_rtt_min = INF
        # Random-loss compensation of the pacing rate (LOSS_COMP_MAX).
        self._retx_seen = 0  # the connection's retransmitted bytes at the last sample
        self._round_lost = 0  # bytes retransmitted this round
        self._round_delivered_at = 0  # rounds.delivered when this round began
        self._round_queue = False  # this round had a loss with a queue
        self._lost_avg = 0.0  # decaying sums over the rounds without a queue
        self._delivered_avg = 0.0
        self.loss_comp = 1.0  # pacing multiplier: 1 / (1 - loss rate)

    # -------------------------------------------------------------- model
    @property
    def bdp(self) -> float:
        """Estimated bandwidth-delay product in bytes (0 until both are known)."""
        if self.min_rtt is None or not self.btl_bw:
            return 0.0
        return self.btl_bw * self.min_rtt

    def target_cwnd(self, gain: float | None = None) -> int:
        gain = self.cwnd_gain if gain is None else gain
        bdp = self.bdp
        if not bdp:
            return self.cwnd
        return max(int(gain * bdp) + QUANTUM_SEGMENTS * self.mss, MIN_CWND_SEGMENTS * self.mss)

    def _update_bw(self, rate: float) -> None:
        rnd = self.rounds.round
        samples = self._bw_samples
        if samples and samples[-1][0] == rnd:
            if rate > samples[-1][1]:
                samples = self._bw_samples = samples[:-1] + ((rnd, rate),)
        else:
            samples = self._bw_samples = samples + ((rnd, rate),)
        oldest = rnd - BW_WINDOW_ROUNDS
        if samples[0][0] <= oldest:
            i = 1  # the last sample is this round's: the scan stops there
            while samples[i][0] <= oldest:
                i += 1
            samples = self._bw_samples = samples[i:]
            # (A loop rather than max() over a generator: compiled, that is
            # a generator object and a call through Python's builtins.)
            best = samples[0][1]
            for _, r in samples:
                if r > best:
                    best = r
            self.btl_bw = best
        elif rate > self.btl_bw:
            # Nothing aged out and samples only grow: the max is the old one or this.
            self.btl_bw = rate

    def _update_min_rtt(self, now: float, rtt: float) -> bool:
        """Returns True when the min RTT estimate had expired."""
        expired = self.min_rtt is not None and now > self.min_rtt_stamp + MIN_RTT_WINDOW
        if self.min_rtt is None or rtt <= self.min_rtt or expired:
            self.min_rtt = rtt
            self.min_rtt_stamp = now
        elif rtt <= self.min_rtt * (1 + MIN_RTT_CONFIRM):
            # The queue is (nearly) empty right now: the estimate still holds,
            # and draining the pipe in ProbeRTT to measure it again would only
            # cost throughput.
            self.min_rtt_stamp = now
        return expired

    # ------------------------------------------------------------- events
    def _cruising(self, now: float) -> bool:
        """ProbeBW in a gain-1 phase that is not over yet, outside capped
        recovery: then `_update_state` and `_update_pacing` change nothing
        and can be skipped (the common case, per ACK)."""
        return (
            self.state == PROBE_BW
            and self.pacing_gain == 1.0
            and not self._recovery_capped
            and now - self._cycle_stamp <= (self.min_rtt or 0.0)
            and self.pacing_rate == self.btl_bw * self.loss_comp
        )

    def on_delivery_rate(
        self, now: float, rate: float, interval: float, app_limited: bool, retransmitted: int = 0
    ) -> None:
        if retransmitted > self._retx_seen:
            self._round_lost += retransmitted - self._retx_seen
            self._retx_seen = retransmitted
        if self.rounds.tick(now, self._inflight):
            self._on_round_start()
        self._sample_app_limited = app_limited
        if not app_limited or rate >= self.btl_bw:
            self._update_bw(rate)
        state = self.state
        if state == STARTUP:
            if self.filled_pipe:
                self._update_state(now)
            # (else _update_state changes nothing: Startup until the pipe is full)
        elif state == PROBE_BW and self._cruising(now):
            return
        else:
            self._update_state(now)
        self._update_pacing()

    def on_ack(self, now: float, acked: int, in_flight: int, rtt: float | None) -> None:
        left = in_flight - acked
        self._inflight = left if left > 0 else 0
        rounds = self.rounds
        if rounds.on_ack(now, acked, in_flight, rtt):
            self._on_round_start()
        # (after the round start: this ACK belongs to the new round)
        mss = self.mss
        if self.pacing_gain > 1 and in_flight + mss >= self.cwnd and self.cwnd + mss >= self.inflight_hi:
            self._hi_limited = True
        expired = False
        if rtt is not None and rtt > 0:
            if rtt != self.latest_rtt:
                # A new sample (the connection passes its latest one with
                # every cumulative ACK, also when this ACK was not timed).
                self._round_rtt_count += 1
                if rtt < self._round_rtt_min:
                    self._round_rtt_min = rtt
            self.latest_rtt = rtt
            expired = self._update_min_rtt(now, rtt)
            rounds.min_round_time = 0.5 * (self.min_rtt if self.min_rtt is not None else rtt)
        state = self.state
        if expired and state != PROBE_RTT:
            self._enter_probe_rtt(now)
            state = PROBE_RTT
        if state == STARTUP:
            # _update_state changes nothing in Startup until the pipe is full
            if self.filled_pipe:
                self._update_state(now)
            self._update_pacing()
        elif state != PROBE_BW or not self._cruising(now):
            self._update_state(now)
            self._update_pacing()
        if acked > 0 and self.btl_bw:
            self._update_ack_aggregation(now, acked)  # (it does nothing otherwise)
        self._update_cwnd(acked)
        if self._rto_restore_at and self.rounds.delivered >= self._rto_restore_at:
            # Everything outstanding at the timeout is accounted for: back to
            # the window from before it (as Linux BBR does on leaving Loss).
            self._rto_restore_at = 0
            if self.state != PROBE_RTT:
                self.cwnd = max(self.cwnd, min(self._prior_cwnd, self.target_cwnd()))
            self._prior_cwnd = 0

    def _on_round_start(self) -> None:
        if self._hi_limited and not self._recovery_capped and self.state == PROBE_BW:
            # The bound held the flow back this round: raise it, by twice as
            # much as last time (1, 2, 4... segments a round, BBRv2's probe
            # up), until a loss with a queue says the buffer is full again.
            self.inflight_hi += self._hi_step * self.mss
            self._hi_step = min(2 * self._hi_step, HI_STEP_MAX)
        self._hi_limited = False
        # Only the round just ended counts as evidence, and only if it had
        # enough samples (in long recovery episodes Karn leaves few).
        self._last_round_rtt_min = self._round_rtt_min if self._round_rtt_count >= ROUND_RTT_SAMPLES else INF
        self._round_rtt_min = INF
        self._round_rtt_count = 0
        self._update_loss_rate()
        if self.filled_pipe or not self._bw_samples or self._sample_app_limited:
            # An application that sends little (a request-response flow)
            # shows no growth because it has none to show: that is no sign
            # of a full pipe, and would pin the pacing rate to its trickle.
            return
        # Startup is over once the bandwidth stopped growing by 25 % for
        # three rounds in a row.
        if self.btl_bw >= self._full_bw * FULL_BW_GROWTH:
            self._full_bw = self.btl_bw
            self._full_bw_count = 0
        else:
            self._full_bw_count += 1
            if self._full_bw_count >= FULL_BW_ROUNDS:
                self.filled_pipe = True

    def _update_loss_rate(self) -> None:
        """At a round's end: the share of what was sent that was lost, over
        the recent rounds. A round with a queue counts as one without loss:
        a loss with a queue is the buffer overflowing, which sending more
        would only make worse, and a queue that stands ends the
        compensation."""
        delivered = self.rounds.delivered - self._round_delivered_at
        self._round_delivered_at = self.rounds.delivered
        lost, self._round_lost = self._round_lost, 0
        last = self._last_round_rtt_min  # INF: too few samples to tell
        queue = self._round_queue or self._recovery_capped or (
            last != INF and self.min_rtt is not None and last >= QUEUE_RTT_FACTOR * self.min_rtt
        )
        self._round_queue = False
        if delivered <= 0:
            return
        if queue:
            lost = 0  # counts as a round without random loss, so a standing queue ends the compensation
        self._lost_avg = self._lost_avg * LOSS_DECAY + lost
        self._delivered_avg = self._delivered_avg * LOSS_DECAY + delivered
        rate = self._lost_avg / (self._lost_avg + self._delivered_avg)
        self.loss_comp = 1 / (1 - (rate if rate <= LOSS_COMP_MAX else LOSS_COMP_MAX))

    def _update_state(self, now: float) -> None:
        if self.state == STARTUP and self.filled_pipe:
            self.state = DRAIN
            self.pacing_gain = 1 / HIGH_GAIN
            self.cwnd_gain = STARTUP_CWND_GAIN
        if self.state == DRAIN and self.bdp and self._inflight <= self.bdp:
            self._enter_probe_bw(now)
        elif self.state == PROBE_BW:
            self._advance_cycle(now)
        elif self.state == PROBE_RTT:
            self._probe_rtt(now)

    def _enter_probe_bw(self, now: float) -> None:
        self.state = PROBE_BW
        self.cwnd_gain = CWND_GAIN
        # Start somewhere in the cycle other than the draining phase; the
        # choice is derived from the clock, so runs stay deterministic while
        # flows started at different times do not probe in lockstep.
        self._cycle_index = (2 + int(now * 1000)) % len(GAIN_CYCLE)
        if self._cycle_index == 1:
            self._cycle_index = 2
        self._cycle_stamp = now
        self._loss_in_phase = False
        self.pacing_gain = GAIN_CYCLE[self._cycle_index]

    def _advance_cycle(self, now: float) -> None:
        min_rtt = self.min_rtt or 0.0
        elapsed = now - self._cycle_stamp
        gain = self.pacing_gain
        full_length = elapsed > min_rtt
        if gain > 1:
            # Probing up: stay until the extra data is actually in flight
            # (or a loss says there is no room), but at most two min RTTs.
            done = (full_length and (self._loss_in_phase or self._inflight >= self.target_cwnd(gain) - QUANTUM_SEGMENTS * self.mss)) or elapsed > 2 * min_rtt
        elif gain < 1:
            done = full_length or self._inflight <= self.bdp
        else:
            done = full_length
        if done:
            self._cycle_index = (self._cycle_index + 1) % len(GAIN_CYCLE)
            self._cycle_stamp = now
            self._loss_in_phase = False
            self.pacing_gain = GAIN_CYCLE[self._cycle_index]

    def _enter_probe_rtt(self, now: float) -> None:
        self.state = PROBE_RTT
        self.pacing_gain = 1.0
        self.cwnd_gain = 1.0
        self._probe_rtt_cwnd = max(self._probe_rtt_cwnd, self.cwnd, self._prior_cwnd)
        self._probe_rtt_done = None

    def probe_rtt_cwnd(self) -> int:
        """ProbeRTT's window: half a BDP (as BBRv2 does) - the queue drains
        all the same, the link stays half used, and a datagram larger than
        four segments (a PMTU probe) cannot hold the window shut."""
        return max(MIN_CWND_SEGMENTS * self.mss, int(PROBE_RTT_CWND_GAIN * self.bdp))

    def _probe_rtt(self, now: float) -> None:
        floor = self.probe_rtt_cwnd()
        self.cwnd = min(self.cwnd, floor)
        if self._probe_rtt_done is None:
            if self._inflight <= floor:
                # The queue we caused is gone: hold for 200 ms and a round.
                self._probe_rtt_done = now + PROBE_RTT_TIME
                self._probe_rtt_round = self.rounds.round + 1
        elif now >= self._probe_rtt_done and self.rounds.round >= self._probe_rtt_round:
            self.min_rtt_stamp = now
            self.cwnd = max(self.cwnd, self._probe_rtt_cwnd)
            self._probe_rtt_cwnd = 0
            if self.filled_pipe:
                self._enter_probe_bw(now)
            else:
                self.state = STARTUP
                self.pacing_gain = HIGH_GAIN
                self.cwnd_gain = STARTUP_CWND_GAIN

    def _update_pacing(self) -> None:
        gain = self.pacing_gain
        if self._recovery_capped:
            # The buffer overflowed: send no faster than the bottleneck
            # drains until the holes are repaired.
            gain = min(gain, 1.0)
        srtt = self.rounds.srtt
        bw = self.btl_bw
        if bw:
            rate = gain * bw
            if self.filled_pipe:
                if not self._recovery_capped:
                    # Random loss before the bottleneck takes its share of what
                    # is sent before the link sees it: send that much more.
                    rate *= self.loss_comp
            elif srtt:
                # Until the pipe is known full, never below the initial window
                # per RTT: an application that sends little measures only
                # itself, and must not be paced slower than a new connection.
                floor = gain * self._initial_cwnd / srtt
                if floor > rate:
                    rate = floor
        elif srtt:
            # No delivery-rate sample yet: the initial window over the RTT.
            rate = gain * self.cwnd / srtt
        else:
            return
        # In Startup the rate only goes up: a slower sample early on is noise.
        if self.filled_pipe or self._recovery_capped or self.pacing_rate is None or rate > self.pacing_rate:
            self.pacing_rate = rate

    def _update_ack_aggregation(self, now: float, acked: int) -> None:
        """How much more the ACKs deliver at once than the bandwidth explains.

        When ACKs come in bursts (a receiver that handles a batch of datagrams
        and acknowledges them together; on loopback, host scheduling does the
        same), a cwnd of two BDPs runs dry between the bursts: the flow is
        then cwnd-limited below the bottleneck, and the bandwidth samples it
        takes shrink the model further. An epoch starts whenever the ACKs fall
        behind the bandwidth; what they deliver beyond it is the excess."""
        bw = self.btl_bw
        if not bw or acked <= 0:
            return
        rnd = self.rounds.round
        if rnd - self._extra_round >= ACK_AGG_WINDOW_ROUNDS:
            self._extra_round = rnd
            self._extra_idx ^= 1
            self._extra_acked = (0, self._extra_acked[1]) if self._extra_idx == 0 else (self._extra_acked[0], 0)
        start = self._epoch_start
        expected = 0.0 if start is None else bw * (now - start)
        if start is None or self._epoch_acked <= expected:
            self._epoch_start = now
            self._epoch_acked = 0
            expected = 0.0
        self._epoch_acked += acked
        extra = self._epoch_acked - expected
        if extra > self.cwnd:
            extra = float(self.cwnd)
        if extra > self._extra_acked[self._extra_idx]:
            ea = self._extra_acked
            self._extra_acked = (int(extra), ea[1]) if self._extra_idx == 0 else (ea[0], int(extra))

    def aggregation_cwnd(self) -> int:
        """The cwnd headroom for ACK aggregation (none before the pipe is full)."""
        if not self.filled_pipe:
            return 0
        return int(min(max(self._extra_acked), self.btl_bw * ACK_AGG_MAX_TIME))

    def _update_cwnd(self, acked: int) -> None:
        if self.state == PROBE_RTT:
            self.cwnd = min(self.cwnd, self.probe_rtt_cwnd())
            return
        if self._recovery_capped:
            self.cwnd = min(self.cwnd + acked, max(self.cwnd, self.target_cwnd(1.0)))
            return
        mss = self.mss
        floor = MIN_CWND_SEGMENTS * mss
        target = self.target_cwnd()
        filled = self.filled_pipe
        if filled:
            target += self.aggregation_cwnd()
        hi = self.inflight_hi
        bound = hi if hi == INF or self.pacing_gain > 1 else self.inflight_bound()
        if target > bound:
            target = max(int(bound), floor)
        cwnd = self.cwnd
        if filled:
            cwnd = min(cwnd + acked, target)
            if cwnd > target:
                cwnd = target  # inflight_hi came down
        elif cwnd < target or not self.bdp:
            cwnd += acked
        self.cwnd = cwnd if cwnd >= floor else floor

    def inflight_bound(self) -> float:
        """inflight_hi while probing up; below it, headroom for other flows.
        On a path with random loss (losses in rounds without a queue, see
        `_update_loss_rate`) the headroom stops at INFLIGHT_HI_FLOOR BDPs:
        there every loss in the round after a probe (whose queue reads as
        "a queue") set inflight_hi, which then sat at its floor, the
        headroom left 1.06 BDP, and the flow ran window-limited below the
        link rate whenever ACKs came a little late. Without random loss
        the headroom stays as it is (a floor there let BBR take 3x a CUBIC
        neighbour's rate: its own BDP estimate grows with its share)."""
        hi = self.inflight_hi
        if self.pacing_gain > 1 or hi == INF:
            return hi
        bound = HEADROOM * hi
        if self.loss_comp > RANDOM_LOSS_COMP:
            floor = INFLIGHT_HI_FLOOR * self.bdp
            if bound < floor:
                bound = floor if floor < hi else hi
        return bound

    def queue_evident(self) -> bool:
        """RTT says a queue has built: the minimum RTT of this round (of the
        last one while this one has few samples) is a quarter above the
        path's. A single late sample (a delay spike, a delayed ACK) is not
        a queue."""
        if self.min_rtt is None:
            return False
        if self._round_rtt_count >= ROUND_RTT_SAMPLES:
            rtt = self._round_rtt_min
        else:
            rtt = min(self._last_round_rtt_min, self._round_rtt_min)
        return rtt != INF and rtt >= QUEUE_RTT_FACTOR * self.min_rtt

    def on_congestion_event(self, now: float, in_flight: int) -> None:
        # Loss on its own is not a model input: no multiplicative decrease,
        # so random loss costs nothing (the model keeps learning from the
        # ACKs of the recovery episode). Loss *with* a standing queue means
        # the path's buffer overflowed: Startup is then over, and for the
        # recovery episode cwnd is bounded to one BDP and the pacing gain to
        # 1, so the queue drains while the holes are repaired.
        self._loss_in_phase = True
        self._in_recovery = True
        self._recovery_capped = self.queue_evident() and bool(self.bdp)
        if self._recovery_capped:
            self._round_queue = True
            if self.state == STARTUP:
                self.filled_pipe = True
                self._update_state(now)
            self._prior_cwnd = max(self._prior_cwnd, self.cwnd)
            # The buffer overflowed at about what was in flight: from now on
            # stay below it (multiplicative decrease, as a loss-based flow
            # sharing the queue does).
            # Not below 1.25 BDP: a loss near what the pipe alone holds is
            # no overflow of ours (the RTT evidence can be thin in a recovery
            # episode, or delay jitter), and a jittery path needs in flight
            # above one BDP to stay full; beside another flow the BDP
            # estimate is this flow's own rate, which falls as the other
            # takes its share.
            self._hi_step = 1
            self.inflight_hi = max(MIN_CWND_SEGMENTS * self.mss, LOSS_BETA * max(self._inflight, in_flight), INFLIGHT_HI_FLOOR * self.bdp)
            cwnd = min(self.cwnd, in_flight + self.mss, self.target_cwnd(1.0))
            self.cwnd = max(MIN_CWND_SEGMENTS * self.mss, cwnd)
        self._update_pacing()

    def on_recovery_end(self, now: float) -> None:
        self._in_recovery = False
        self._recovery_capped = False
        if self.state != PROBE_RTT:
            self.cwnd = max(self.cwnd, int(min(self._prior_cwnd, self.target_cwnd(), self.inflight_hi)))
        self._prior_cwnd = 0
        self._update_pacing()

    def on_rto(self, now: float, in_flight: int) -> None:
        # Everything in flight is presumed lost: one segment, then cwnd grows
        # back by what is acknowledged; once all that was outstanding at the
        # timeout has been delivered, the window from before returns.
        self._loss_in_phase = True
        self._prior_cwnd = max(self._prior_cwnd, self.cwnd)
        self._rto_restore_at = self.rounds.delivered + max(in_flight, 1)
        self.cwnd = self.mss
        self._in_recovery = False
        self._recovery_capped = False


register(Bbr)  # (a call, not a decorator: the compiled build keeps decorated classes dynamic)
