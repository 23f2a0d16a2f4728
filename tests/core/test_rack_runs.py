"""RACK keeps one record per run of segments; its verdicts must be exactly those
of one record per segment. The same flights and the same ACK/SACK sequences
are fed to two RackTlp instances, one told of each run with on_transmit_run,
the other of each segment with on_transmit, and every observable must agree
after every ACK: what is lost, RACK's newest delivered segment and its time,
and the reorder and probe timers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gannet.config import Config
from gannet.core.rangeset import RangeSet
from gannet.core.recovery import LossRecovery, RackTlp
from gannet.core.timers import NEVER

MSS = 100
BASE = 1 << 33  # unwrapped stream positions


class FakeRtt:
    def __init__(self) -> None:
        self.min_rtt = 0.010
        self.srtt = 0.012

    def current_rto(self) -> float:
        return 0.2


def board() -> LossRecovery:
    """A SACK connection's loss recovery, on its own."""
    b = LossRecovery(Config(), FakeRtt(), MSS)  # type: ignore[arg-type]
    b.sack_ok = True
    return b


def _observe(rack: RackTlp) -> tuple:
    return (rack.board.lost.ranges(), rack.rack_serial, rack.xmit_ts, rack.reo_deadline,
            rack.pto_deadline, rack.reordering_seen)


# A scenario: flights (segments per run, sent at increasing times), then
# ACK events: a cumulative ACK point and SACKed segments, at increasing times.
_runs = st.lists(st.integers(1, 12), min_size=1, max_size=6)
_events = st.lists(st.tuples(st.integers(0, 3), st.lists(st.integers(0, 60), max_size=6),
                             st.integers(1, 40)), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(_runs, _events, st.integers(0, 2))
@pytest.mark.pure
def test_run_records_judge_exactly_like_segment_records(runs, events, last_short):
    boards = [board(), board()]
    racks = [b.start_rack() for b in boards]
    now = 1.0
    pos = BASE
    for i, count in enumerate(runs):
        length = count * MSS - (last_short * 30 if i == len(runs) - 1 and count > 0 else 0)
        start, end = pos, pos + length
        racks[0].on_transmit_run(start, end, MSS, now, BASE, NEVER)
        for s in range(start, end, MSS):
            racks[1].on_transmit(s, min(s + MSS, end), now, False, BASE, NEVER)
        pos = end
        now += 0.002
    segments = -(-(pos - BASE) // MSS)
    assert _observe(racks[0]) == _observe(racks[1])
    una = BASE
    for advance, sacked, dt in events:
        now += dt / 1000
        una = min(una + advance * MSS, pos)
        for b in boards:
            b.on_cumulative_ack(una)
            for k in sacked:
                if k < segments:
                    s = BASE + k * MSS
                    e = min(s + MSS, pos)
                    if s >= una:
                        b.on_sack_block(s, e)
        verdicts = [r.detect_losses(now, una, pos, NEVER) for r in racks]
        assert verdicts[0] == verdicts[1]
        assert _observe(racks[0]) == _observe(racks[1])
        if any(r.reo_deadline is not None and r.reo_deadline <= now + 0.05 for r in racks):
            # Let the reorder timer fire as the connection would.
            now = max(r.reo_deadline for r in racks if r.reo_deadline is not None)
            fired = [r.timer_fired(now) for r in racks]
            assert fired[0] == fired[1]
            if not fired[0]:
                assert racks[0].detect_losses(now, una, pos, NEVER) == racks[1].detect_losses(now, una, pos, NEVER)
                assert _observe(racks[0]) == _observe(racks[1])
