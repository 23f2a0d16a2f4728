"""Window and buffer autotuning: a long fat path gets the window it needs
without the user sizing anything; a fixed window is the bottleneck there."""

from gannet.config import Config
from gannet.sim import LinkConfig
from gannet.sim.scenario import run_transfer

# 200 Mbit/s with a 200 ms round trip: a 5 MB bandwidth-delay product, five
# times the window autotuning starts from.
FAT = LinkConfig(delay=0.1, bandwidth=200e6, queue_bytes=6_000_000, mtu=1500)
BACK = LinkConfig(delay=0.1)
SIZE = 30_000_000


def transfer(config):
    return run_transfer(seed=4, size=SIZE, forward=FAT, backward=BACK, config=config.with_(pmtud=False),
                        time_limit=120)


def test_autotuned_window_fills_a_long_fat_path():
    fixed = transfer(Config(autotune=False, window_size=1 << 20, send_buffer_size=1 << 20))
    tuned = transfer(Config())
    assert fixed.ok and tuned.ok
    # A fixed 1 MiB window moves at most 1 MiB per 200 ms round trip.
    assert fixed.goodput < 5.3e6, fixed.goodput
    assert tuned.goodput > 2 * fixed.goodput, (tuned.goodput, fixed.goodput)
