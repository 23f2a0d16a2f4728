"""A failing simulation names its seed: every exception out of Simulator.run
carries a note with the seed and the virtual time."""

import traceback

import pytest

from gannet.sim import LinkConfig, SimulationError, Simulator


class Exploding:
    """A node that fails on its first datagram."""

    def receive_datagram(self, data, addr, now):
        raise RuntimeError("node bug")

    def datagrams_to_send(self, now):
        return []

    def get_timer(self):
        return None

    def handle_timer(self, now):
        pass


class Talker(Exploding):
    def __init__(self, dst):
        self.dst, self.sent = dst, False

    def datagrams_to_send(self, now):
        if self.sent:
            return []
        self.sent = True
        return [(b"hi", self.dst)]


def test_node_error_carries_the_seed_and_time():
    sim = Simulator(seed=4242, default_link=LinkConfig(delay=0.25))
    sim.add_node("b", Exploding())
    sim.add_node("a", Talker("b"))
    with pytest.raises(RuntimeError, match="node bug") as info:
        sim.run(until=5)
    text = "".join(traceback.format_exception(info.value))
    assert "seed=4242" in text and "t=0.25" in text


def test_runaway_run_carries_the_seed():
    sim = Simulator(seed=77)
    sim.call_at(0.0, lambda: None)
    for i in range(10):
        sim.call_at(0.001 * i, lambda: None)
    with pytest.raises(SimulationError) as info:
        sim.run(max_events=3)
    assert any("seed=77" in note for note in info.value.__notes__)
