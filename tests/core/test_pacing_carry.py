"""The pacer's token bucket: a sender woken late keeps what it earned."""
import pytest

from gannet.config import Config
from gannet.core.sender import PACING_CARRY, PACING_CARRY_RTT

from corepair import established_pair


def paced_sender(rate_segments: float):
    a, b = established_pair(Config(initial_window=1000, send_buffer_size=8 << 20))
    conn = a.conn
    mss = conn.mss
    conn.cc.pacing_rate = rate_segments * mss
    conn.cc.cwnd = 1000 * mss
    conn.snd._pacing_tokens = 0.0
    conn.snd._pacing_time = 1.0
    conn.send(bytes(600 * mss))
    return a, conn, mss


def sent_bytes(segs):
    return sum(len(s.payload) for s in segs)


def test_a_late_wake_up_keeps_the_tokens_earned_after_the_due_time():
    a, conn, mss = paced_sender(10_000)  # 10 segments a ms: the 2 ms bucket holds 20
    rate = conn.cc.pacing_rate
    assert a.out(1.0) == []
    due = conn.get_timer()
    late = 0.003
    conn.handle_timer(due + late)
    sent = sent_bytes(a.out(due + late))
    carry = min(late, PACING_CARRY, conn.rtt.srtt * PACING_CARRY_RTT)
    # Without the carry the bucket's 20 segments were all it could send.
    assert sent > conn.snd.pacing_burst()
    assert sent <= conn.snd.pacing_burst() + carry * rate + mss


def test_the_carry_is_bounded_and_an_idle_sender_keeps_only_the_burst():
    a, conn, mss = paced_sender(10_000)
    rate = conn.cc.pacing_rate
    assert a.out(1.0) == []
    due = conn.get_timer()
    conn.handle_timer(due + 1.0)  # a second late: at most the carry on top
    sent = sent_bytes(a.out(due + 1.0))
    carry = min(PACING_CARRY, conn.rtt.srtt * PACING_CARRY_RTT)
    assert sent <= conn.snd.pacing_burst() + carry * rate + mss
    # No wait pending (the sender is not held back by the pacer): a call
    # much later gets the burst only.
    conn.snd._pacing_due = None
    conn.snd._pacing_time = due + 1.0
    conn.snd._pacing_tokens = 0.0
    assert conn.snd.pacing_budget(due + 2.0) == pytest.approx(conn.snd.pacing_burst())
