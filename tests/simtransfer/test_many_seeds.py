"""1 MB transfers over the simulator across hundreds of seeds and every impairment.

Each case asserts byte-exact delivery (SHA-256), a clean close on both sides,
and a completion time bound. A failure names its seed and link so that
`run_transfer(seed, ...)` replays it exactly.
"""

import random

import pytest

from gannet.config import Config
from gannet.sim import LinkConfig
from gannet.sim.scenario import run_transfer

SEEDS = range(200)
SIZE = 1_000_000


def link_for(seed: int) -> tuple[LinkConfig, LinkConfig]:
    """A different mix of impairments for every seed, up to 20% loss."""
    r = random.Random(seed * 7919)
    delay = r.choice([0.0005, 0.005, 0.02, 0.05])
    bursty = r.random() < 0.25
    kwargs = dict(
        delay=delay,
        jitter=r.choice([0, 0, delay / 4, delay]),
        duplicate=r.choice([0, 0, 0.01, 0.05]),
        reorder=r.choice([0, 0, 0.02, 0.1]),
        reorder_delay=delay / 2 + 0.001,
        corrupt=r.choice([0, 0, 0.005, 0.02]),
        truncate=r.choice([0, 0, 0.005]),
        bandwidth=r.choice([None, None, 10e6, 100e6]),
        # Most paths have a 1500-byte MTU (PMTUD probes fail there); some let
        # PMTUD grow datagrams to 64 KB.
        mtu=r.choice([1500, 1500, 1500, None]),
    )
    if kwargs["bandwidth"]:
        kwargs["queue_bytes"] = r.choice([32_000, 256_000])
    if bursty:
        fwd = LinkConfig(p_good_to_bad=0.01, p_bad_to_good=0.3, loss_in_bad=0.7, **kwargs)
    else:
        fwd = LinkConfig(loss=r.choice([0, 0.001, 0.01, 0.05, 0.1, 0.2]), **kwargs)
    back = LinkConfig(**{**kwargs, "bandwidth": None, "queue_bytes": None}, loss=r.choice([0, 0.01, 0.05]))
    return fwd, back


@pytest.mark.sim
@pytest.mark.parametrize("seed", SEEDS)
def test_transfer_survives_impairments(seed):
    fwd, back = link_for(seed)
    result = run_transfer(seed, SIZE, fwd, back, time_limit=900)
    where = f"seed={seed} forward={fwd} backward={back}"
    assert result.intact, f"data differs ({result.received}/{SIZE} bytes) {where}"
    assert result.client_closed_cleanly, f"client: {result.client_error!r} {where}"
    assert result.server_closed_cleanly, f"server: {result.server_error!r} {where}"
    # Bounded completion: a 1 MB transfer at up to 20% loss finishes in minutes of
    # virtual time even at the worst seed (the worst seen is about 110 s).
    assert result.data_time < 400, f"took {result.data_time:.1f} virtual s {where}"


@pytest.mark.sim
@pytest.mark.parametrize("seed", range(10))
def test_sequence_numbers_wrap_mid_transfer(seed):
    near_wrap = (2**32 - 200_000 - seed * 1000, 2**32 - 50 - seed)
    fwd = LinkConfig(delay=0.01, loss=0.02, reorder=0.05, reorder_delay=0.005)
    result = run_transfer(seed, SIZE, fwd, fwd, isn=near_wrap)
    assert result.ok, f"seed={seed}: {result.client_error!r} {result.server_error!r}"


@pytest.mark.sim
@pytest.mark.parametrize("mode", ["step-by-step", "burst"])
def test_operation_modes(mode):
    cfg = Config(mode=mode)
    result = run_transfer(1, 200_000, LinkConfig(delay=0.01, loss=0.02), config=cfg)
    assert result.ok
    if mode == "step-by-step":
        # One segment per round trip: at 20 ms RTT, ~145 segments take seconds.
        assert result.data_time > 2.5
    else:
        assert result.data_time < 2.5
