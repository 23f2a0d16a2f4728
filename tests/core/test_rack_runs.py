"""RACK keeps one record per run of segments; its verdicts must be exactly those
of one record per segment. The same flights and the same ACK/SACK sequences
are fed to two RackTlp instances, one told of each run with on_transmit_run,
the other of each segment with on_transmit, and every observable must agree
after every ACK: what is lost, RACK's newest delivered segment and its time,
and the reorder and probe timers."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gannet.config import Config
from gannet.core.rangeset import RangeSet
from gannet.core.recovery import RackTlp
from gannet.core.timers import unarmed

MSS = 100
BASE = 1 << 33  # unwrapped stream positions


class FakeRtt:
    def __init__(self) -> None:
        self.min_rtt = 0.010
        self.srtt = 0.012

    def current_rto(self) -> float:
        return 0.2


class FakeConn:
    """The sender state RackTlp reads (and `lost`, which it writes)."""

    def __init__(self) -> None:
        self.config = Config()
        self.sack_ok = True
        self.snd_una = BASE
        self.snd_nxt = BASE
        self.sacked = RangeSet()
        self.lost = RangeSet()
        self.in_recovery = False
        self.rtt = FakeRtt()
        self.mss = MSS
        self._deadlines = unarmed()


def _observe(rack: RackTlp) -> tuple:
    conn = rack.conn
    return (conn.lost.ranges(), rack.rack_serial, rack.xmit_ts, rack.reo_deadline,
            rack.pto_deadline, rack.reordering_seen)


# A scenario: flights (segments per run, sent at increasing times), then
# ACK events: a cumulative ACK point and SACKed segments, at increasing times.
_runs = st.lists(st.integers(1, 12), min_size=1, max_size=6)
_events = st.lists(st.tuples(st.integers(0, 3), st.lists(st.integers(0, 60), max_size=6),
                             st.integers(1, 40)), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(_runs, _events, st.integers(0, 2))
def test_run_records_judge_exactly_like_segment_records(runs, events, last_short):
    conns = [FakeConn(), FakeConn()]
    racks = [RackTlp(c) for c in conns]
    now = 1.0
    pos = BASE
    for i, count in enumerate(runs):
        length = count * MSS - (last_short * 30 if i == len(runs) - 1 and count > 0 else 0)
        start, end = pos, pos + length
        for c in conns:
            c.snd_nxt = end
        racks[0].on_transmit_run(start, end, MSS, now)
        for s in range(start, end, MSS):
            racks[1].on_transmit(s, min(s + MSS, end), now, False)
        pos = end
        now += 0.002
    segments = -(-(pos - BASE) // MSS)
    assert _observe(racks[0]) == _observe(racks[1])
    una = BASE
    for advance, sacked, dt in events:
        now += dt / 1000
        una = min(una + advance * MSS, pos)
        for c in conns:
            c.snd_una = una
            c.sacked.discard_below(una)
            c.lost.discard_below(una)
            for k in sacked:
                if k < segments:
                    s = BASE + k * MSS
                    e = min(s + MSS, pos)
                    if s >= una and c.sacked.add(s, e):
                        c.lost.subtract(s, e)
                        (racks[0] if c is conns[0] else racks[1]).on_sacked(s, e)
        verdicts = [r.detect_losses(now) for r in racks]
        assert verdicts[0] == verdicts[1]
        assert _observe(racks[0]) == _observe(racks[1])
        if any(r.reo_deadline is not None and r.reo_deadline <= now + 0.05 for r in racks):
            # Let the reorder timer fire as the connection would.
            now = max(r.reo_deadline for r in racks if r.reo_deadline is not None)
            fired = [r.timer_fired(now) for r in racks]
            assert fired[0] == fired[1]
            if not fired[0]:
                assert racks[0].detect_losses(now) == racks[1].detect_losses(now)
                assert _observe(racks[0]) == _observe(racks[1])
