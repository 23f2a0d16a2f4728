"""Throughput snapshot: a performance regression fails here, deterministically.

A grid of loss rates and RTTs on a 10 Mbit/s simulated link; each cell's
goodput (as a share of the link, the mean of three seeds) is compared with
the checked-in snapshot.
The simulator is deterministic, so the numbers only move when the protocol
does. A cell falling more than TOLERANCE of its own snapshot value fails (a
relative bound: a fixed number of points would let the lossy cells, at
5-25 % of the link, lose a third of their goodput unnoticed). The test
never writes the snapshot; after an intended change, regenerate it with

    python tests/simtransfer/test_throughput_snapshot.py > tests/simtransfer/snapshots/throughput.json
"""

import json
import pathlib
import sys

import pytest

from gannet.config import Config
from gannet.sim import LinkConfig
from gannet.sim.scenario import run_transfer

SNAPSHOT = pathlib.Path(__file__).parent / "snapshots" / "throughput.json"
RATE = 10e6
SIZE = 2_000_000
GRID = [(rtt, loss, cc) for cc in ("bbr", "cubic", "newreno") for rtt in (0.02, 0.1) for loss in (0.0, 0.01, 0.05)]


SEEDS = (1, 2, 3)
TOLERANCE = 0.05  # the largest drop a cell may show, as a share of its snapshot value


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


def grid() -> dict[str, float]:
    return {key(*cell): measure(*cell) for cell in GRID}


def regressions(want: dict[str, float], got: dict[str, float]) -> dict[str, tuple[float, float]]:
    """The cells that fell by more than TOLERANCE of their snapshot value."""
    return {k: (want[k], got[k]) for k in got if got[k] < want[k] * (1 - TOLERANCE)}


def test_the_bound_is_relative():
    """A lossy cell at 5.6 % may not lose a point; a cell at 95 % may lose
    four points but not five."""
    want = {"lossy": 5.6, "clean": 95.0}
    assert regressions(want, {"lossy": 4.6, "clean": 95.0}) == {"lossy": (5.6, 4.6)}
    assert regressions(want, {"lossy": 5.4, "clean": 91.0}) == {}
    assert regressions(want, {"lossy": 5.6, "clean": 90.0}) == {"clean": (95.0, 90.0)}


@pytest.mark.sim
def test_throughput_matches_snapshot():
    assert SNAPSHOT.exists(), f"no snapshot: generate it with python {pathlib.Path(__file__).name} > {SNAPSHOT}"
    want = json.loads(SNAPSHOT.read_text())
    got = grid()
    assert set(want) == set(got), "grid changed: regenerate the snapshot"
    worse = regressions(want, got)
    assert not worse, f"goodput (% of link) fell below the snapshot by more than {TOLERANCE:.0%} (was, now): {worse}"


if __name__ == "__main__":
    sys.stdout.write(json.dumps(grid(), indent=1) + "\n")
