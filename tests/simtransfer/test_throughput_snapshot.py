"""Throughput snapshot: a performance regression fails here, deterministically.

A grid of loss rates and RTTs on a 10 Mbit/s simulated link; each cell's
goodput (as a share of the link, the mean of three seeds) is compared with
the checked-in snapshot.
The simulator is deterministic, so the numbers only move when the protocol
does. Falling more than 2 points below the snapshot fails; after an
intended change, regenerate with

    GANNET_UPDATE_SNAPSHOT=1 python -m pytest tests/simtransfer/test_throughput_snapshot.py
"""

import json
import os
import pathlib

import pytest

from gannet.config import Config
from gannet.sim import LinkConfig
from gannet.sim.scenario import run_transfer

SNAPSHOT = pathlib.Path(__file__).parent / "snapshots" / "throughput.json"
RATE = 10e6
SIZE = 2_000_000
GRID = [(rtt, loss, cc) for cc in ("bbr", "cubic", "newreno") for rtt in (0.02, 0.1) for loss in (0.0, 0.01, 0.05)]


SEEDS = (1, 2, 3)


def measure(rtt: float, loss: float, cc: str) -> float:
    """Mean goodput over a few seeds: one lossy run can move by several
    points when an unrelated change shifts which segments are dropped."""
    bdp = int(RATE / 8 * rtt)
    fwd = LinkConfig(delay=rtt / 2, loss=loss, bandwidth=RATE, queue_bytes=max(bdp, 30_000), mtu=1500)
    back = LinkConfig(delay=rtt / 2, loss=loss, mtu=1500)
    shares = []
    for seed in SEEDS:
        result = run_transfer(seed, SIZE, fwd, back, config=Config(congestion_control=cc))
        assert result.ok, (rtt, loss, cc, seed)
        shares.append(100 * result.goodput * 8 / RATE)
    return round(sum(shares) / len(shares), 1)


def key(rtt, loss, cc):
    return f"{cc} rtt={rtt * 1000:g}ms loss={loss * 100:g}%"


@pytest.mark.sim
def test_throughput_matches_snapshot():
    got = {key(*cell): measure(*cell) for cell in GRID}
    if os.environ.get("GANNET_UPDATE_SNAPSHOT") or not SNAPSHOT.exists():
        SNAPSHOT.write_text(json.dumps(got, indent=1) + "\n")
        if not os.environ.get("GANNET_UPDATE_SNAPSHOT"):
            pytest.fail(f"no snapshot yet; wrote {SNAPSHOT}, commit it")
        return
    want = json.loads(SNAPSHOT.read_text())
    assert set(want) == set(got), "grid changed: regenerate the snapshot"
    worse = {k: (want[k], got[k]) for k in got if got[k] < want[k] - 2.0}
    assert not worse, f"goodput (% of link) fell below the snapshot (was, now): {worse}"
