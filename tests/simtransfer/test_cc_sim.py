"""Every congestion controller over the simulator: verified transfers and the
comparisons docs/congestion.md reports (10 Mbit/s, 40 ms RTT, 1-BDP queue).

A failure names its seed and link so `run_transfer(seed, ...)` replays it.
"""

import types

import pytest

from gannet.config import Config
from gannet.core.connection import Connection
from gannet.sim import LinkConfig
from gannet.sim.config import SimulationError
from gannet.sim.scenario import run_transfer

BW = 10e6  # bits/s
DELAY = 0.02  # one way: 40 ms RTT
BDP = int(BW / 8 * 2 * DELAY)  # 50 kB


def _pacer_survives_rounding() -> bool:
    """Does the pacer wake up strictly later when a few bytes' worth of
    rounding error is missing? (With pacing_rate set and `now + missing/rate
    == now` in floating point, the timer fires forever at one instant.)"""
    conn = types.SimpleNamespace(cc=types.SimpleNamespace(pacing_rate=440980.23784540064))
    now = 0.08614731737752417
    try:
        Connection._pace_wait(conn, now, 3e-12)
    except Exception:
        return True  # reshaped; let the simulator tests tell
    return conn._pacing_deadline > now


needs_pacer_fix = pytest.mark.xfail(
    not _pacer_survives_rounding(),
    raises=SimulationError,
    strict=False,
    reason="Connection._pace_wait can set a deadline equal to now (float rounding): timer livelock",
)


def bottleneck(loss=0.0, delay=DELAY, **kw):
    fwd = LinkConfig(delay=delay, bandwidth=BW, queue_bytes=int(BW / 8 * 2 * delay), loss=loss, **kw)
    return fwd, LinkConfig(delay=delay)


def run(cc, seed, size, fwd, back):
    r = run_transfer(seed, size, fwd, back, config=Config(congestion_control=cc), time_limit=300)
    where = f"cc={cc} seed={seed} forward={fwd}"
    assert r.ok, f"transfer failed: intact={r.intact} client={r.client_error!r} server={r.server_error!r} {where}"
    return r


IMPAIRMENTS = {
    "lossy": dict(loss=0.03),
    "reorder": dict(loss=0.01, jitter=0.005, reorder=0.02, reorder_delay=0.01),
    "bursty": dict(p_good_to_bad=0.01, p_bad_to_good=0.3, loss_in_bad=0.7, duplicate=0.01),
}


@pytest.mark.sim
@pytest.mark.parametrize("cc", ["newreno", "cubic", pytest.param("bbr", marks=needs_pacer_fix)])
@pytest.mark.parametrize("kind", sorted(IMPAIRMENTS))
def test_controller_completes_verified_transfers(cc, kind):
    for seed in range(3):
        fwd, back = bottleneck(**IMPAIRMENTS[kind])
        back = LinkConfig(delay=DELAY, loss=0.01)
        r = run(cc, seed, 500_000, fwd, back)
        assert r.data_time < 120, f"took {r.data_time:.1f} s: cc={cc} seed={seed} {kind}"


def goodput_share(r):
    return r.goodput * 8 / BW


@pytest.mark.sim
@needs_pacer_fix
def test_bbr_beats_newreno_on_a_lossy_link():
    # Measured over seeds 1-3 (with RACK-TLP): BBR 91-92 % of the link,
    # NewReno 36-81 % (one seed's losses fall kindly), 1.6x in sum; asserted
    # with margin.
    seeds = (1, 2, 3)
    bbr = [goodput_share(run("bbr", s, 4_000_000, *bottleneck(0.01))) for s in seeds]
    reno = [goodput_share(run("newreno", s, 4_000_000, *bottleneck(0.01))) for s in seeds]
    for s, b, n in zip(seeds, bbr, reno):
        assert b > n, f"seed={s}: bbr {b:.0%} vs newreno {n:.0%} of 10 Mbit/s at 1% loss"
    assert sum(bbr) / sum(reno) > 1.4, f"seeds={seeds}: bbr {bbr} newreno {reno}"
    assert min(bbr) > 0.75, f"seeds={seeds}: bbr {bbr}"


@pytest.mark.sim
@pytest.mark.parametrize("cc", ["cubic", pytest.param("bbr", marks=needs_pacer_fix)])
def test_clean_link_is_filled(cc):
    # Measured: 93-94 % of the link for both on a 4 MB transfer.
    seed = 1
    r = run(cc, seed, 4_000_000, *bottleneck(0.0))
    assert goodput_share(r) >= 0.80, f"seed={seed} cc={cc}: {goodput_share(r):.0%} of the link"


@pytest.mark.sim
@needs_pacer_fix
def test_bbr_keeps_the_queue_shorter_than_cubic():
    # Both overflow the queue once while starting; afterwards CUBIC keeps it
    # full (srtt about 76 ms) and BBR near empty (about 42 ms, the 40 ms path).
    seed = 1
    cubic = run("cubic", seed, 4_000_000, *bottleneck(0.0))
    bbr = run("bbr", seed, 4_000_000, *bottleneck(0.0))
    assert bbr.srtt < 0.05, f"seed={seed}: bbr srtt {bbr.srtt * 1000:.0f} ms"
    assert bbr.srtt < 0.75 * cubic.srtt, (
        f"seed={seed}: bbr srtt {bbr.srtt * 1000:.0f} ms, cubic {cubic.srtt * 1000:.0f} ms"
    )
    assert bbr.client_stats["retransmits"] < cubic.client_stats["retransmits"], f"seed={seed}"
