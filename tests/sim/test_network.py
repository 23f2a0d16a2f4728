"""The simulator: clock, timers, scheduling, running, determinism."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from simtoys import A, B, Receiver, Sender, one_way

from gannet.sim import LinkConfig, SimulationError, Simulator, TraceRecord


class Echo(Receiver):
    """Sends every datagram back to where it came from."""

    def __init__(self):
        super().__init__()
        self.outbox = []

    def receive_datagram(self, data, addr, now):
        super().receive_datagram(data, addr, now)
        self.outbox.append((data, addr))

    def datagrams_to_send(self, now):
        out, self.outbox = self.outbox, []
        return out


class Stuck:
    """A broken node whose timer is always already due."""

    def receive_datagram(self, data, addr, now):
        pass

    def datagrams_to_send(self, now):
        return []

    def get_timer(self):
        return 0.5

    def handle_timer(self, now):
        pass


class Recorder(Stuck):
    """Records handle_timer calls; deadlines are set from outside."""

    def __init__(self, deadline):
        self.deadline = deadline
        self.calls = []

    def get_timer(self):
        return self.deadline

    def handle_timer(self, now):
        self.calls.append(now)
        self.deadline = None


def test_timer_runs_at_its_deadline():
    sim, tx, rx = one_way(LinkConfig(), 5, interval=0.25, start=1.0)
    assert [t for t, _, _ in tx.sent] == [1.0, 1.25, 1.5, 1.75, 2.0]
    assert sim.now == 2.0  # nothing left: the run ends at the last event


def test_past_deadline_fires_at_current_time():
    sim = Simulator()
    node = sim.add_node(A, Recorder(None))
    sim.run(until=3.0)
    node.deadline = 1.0  # already past
    sim.poke(node)
    sim.run()
    assert node.calls == [3.0]


def test_changed_deadline_replaces_the_old_one():
    sim = Simulator()
    node = sim.add_node(A, Recorder(5.0))
    sim.call_at(1.0, setattr, node, "deadline", 2.0)
    sim.run()
    assert node.calls == [2.0]  # the stale 5.0 entry never fires
    assert sim.now == 2.0


def test_livelock_is_detected_and_names_the_node():
    sim = Simulator(timer_livelock_limit=500)
    sim.add_node(A, Stuck(), name="stuck-node")
    with pytest.raises(SimulationError, match="stuck-node"):
        sim.run()
    assert sim.now == 0.5


def test_max_events():
    sim = Simulator()
    sim.add_node(A, Sender(B, 1000))
    sim.add_node(B, Receiver())
    with pytest.raises(SimulationError, match="100 events"):
        sim.run(max_events=100)


def test_ping_pong_at_zero_delay_hits_max_events():
    sim = Simulator()
    a = sim.add_node(A, Echo())
    sim.add_node(B, Echo())
    a.outbox.append((b"ping", B))
    with pytest.raises(SimulationError):
        sim.run(max_events=1000)


def test_stop_predicate():
    sim = Simulator(default_link=LinkConfig(delay=0.1))
    sim.add_node(A, Sender(B, 100, interval=0.01))
    rx = sim.add_node(B, Receiver())
    t = sim.run(stop=lambda: len(rx.received) >= 5)
    assert len(rx.received) == 5
    assert t == sim.now == rx.received[-1][0]
    sim.run()  # resumes where it stopped
    assert len(rx.received) == 100


def test_until_advances_the_clock_and_includes_events_at_until():
    sim = Simulator(default_link=LinkConfig(delay=0.5))
    tx = sim.add_node(A, Sender(B, 3, interval=1.0))
    rx = sim.add_node(B, Receiver())
    assert sim.run(until=1.5) == 1.5
    assert [t for t, _, _ in rx.received] == [0.5, 1.5]
    assert len(tx.sent) == 2
    assert sim.run(until=100.0) == 100.0  # idle time passes too
    assert len(rx.received) == 3
    with pytest.raises(ValueError):
        sim.run(until=50.0)


def test_call_at_runs_at_time_and_flushes():
    sim = Simulator(default_link=LinkConfig(delay=0.01))
    tx = sim.add_node(A, Sender(B, 0))
    rx = sim.add_node(B, Receiver())
    seen = []
    sim.call_at(1.5, lambda: seen.append(sim.now))
    sim.call_at(1.5, tx.emit, 1.5, 2)  # e.g. conn.send(...) from a script
    sim.call_at(0.5, lambda: seen.append(sim.now))
    sim.run()
    assert seen == [0.5, 1.5]
    assert [t for t, _, _ in rx.received] == [1.51, 1.51]
    with pytest.raises(ValueError):
        sim.call_at(1.0, print)


def test_poke_flushes_actions_done_between_runs():
    sim = Simulator()
    tx = sim.add_node(A, Sender(B, 0))
    rx = sim.add_node(B, Receiver())
    sim.run(until=2.0)
    tx.emit(sim.now)
    sim.poke(tx)
    assert sim.link(A, B).stats.sent == 1
    sim.run()
    assert [t for t, _, _ in rx.received] == [2.0]


def test_outage_via_link_config_change_mid_run():
    sim = Simulator(default_link=LinkConfig(delay=0.01))
    sim.add_node(A, Sender(B, 30, interval=0.125))
    rx = sim.add_node(B, Receiver())
    link = sim.link(A, B)
    sim.call_at(1.0, link.update, loss=1.0)
    sim.call_at(2.0, lambda: setattr(link, "config", replace(link.config, loss=0.0)))
    sim.run()
    # Ties at 1.0 and 2.0: the script was scheduled first, so it runs first.
    assert rx.seqs == [s for s in range(30) if not 8 <= s < 16]
    assert link.stats.dropped["loss"] == 8


def test_receiver_sees_sender_address_and_replies_route_back():
    sim = Simulator(default_link=LinkConfig(delay=0.01))
    tx = sim.add_node(A, Sender(B, 3))
    sim.add_node(B, Echo())
    sim.run()
    assert [addr for _, _, addr in tx.received] == [B, B, B]
    assert [t for t, _, _ in tx.received] == pytest.approx([0.02, 0.03, 0.04])
    assert set(sim.stats()) == {(A, B), (B, A)}


def test_unreachable_and_removed_nodes():
    sim = Simulator(default_link=LinkConfig(delay=0.05))
    tx = sim.add_node(A, Sender(B, 10, interval=0.1))
    rx = sim.add_node(B, Receiver())
    sim.call_at(0.42, sim.remove_node, rx)
    sim.run()
    assert rx.seqs == [0, 1, 2, 3]
    st = sim.stats()[(A, B)]
    assert st.dropped["unreachable"] == 6  # 0.4 was in flight at 0.42
    assert sim.node_at(B) is None and sim.address_of(tx) == A
    with pytest.raises(ValueError):
        sim.add_node(A, Receiver())


def test_trace_callback_and_records():
    records = []
    sim = Simulator(default_link=LinkConfig(delay=0.01), trace=records.append)
    sim.add_node(A, Sender(B, 2))
    sim.add_node(B, Receiver())
    sim.link(A, B).drop_nth(1)
    sim.run()
    assert records == [
        TraceRecord(0.0, A, A, 0, "timer"),
        TraceRecord(0.0, A, B, 100, "send"),
        # same time: the arrival was scheduled before the timer was re-armed
        TraceRecord(0.01, A, B, 100, "deliver"),
        TraceRecord(0.01, A, A, 0, "timer"),
        TraceRecord(0.01, A, B, 100, "send"),
        TraceRecord(0.01, A, B, 100, "drop:scripted"),
    ]
    assert sim.trace is None


MESSY = LinkConfig(delay=0.01, jitter=0.02, loss=0.05, duplicate=0.05, corrupt=0.05,
                   truncate=0.02, bandwidth=500_000, queue_bytes=4000,
                   p_good_to_bad=0.01, p_bad_to_good=0.3, reorder=0.05, reorder_delay=0.03)


def _messy_run(seed):
    sim = Simulator(seed=seed, trace=True, default_link=MESSY)
    tx = sim.add_node(A, Sender(B, 500, interval=0.001, sizes=[60, 700, 1200]))
    sim.add_node(B, Echo())
    sim.run()
    return sim.trace, tx.received


def test_same_seed_same_run_different_seed_different_run():
    trace1, got1 = _messy_run(11)
    trace2, got2 = _messy_run(11)
    assert trace1 == trace2
    assert got1 == got2  # bytes and times, exactly
    trace3, got3 = _messy_run(12)
    assert trace3 != trace1 and got3 != got1


def _digest_in_subprocess(hashseed):
    code = (
        "import hashlib, sys; sys.path.insert(0, sys.argv[1]);"
        "from test_network import _messy_run;"
        "t, g = _messy_run(11); print(hashlib.sha256(repr((t, g)).encode()).hexdigest())"
    )
    env = dict(os.environ, PYTHONHASHSEED=str(hashseed))
    out = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent)],
                         env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_determinism_across_processes():
    trace, got = _messy_run(11)
    here = hashlib.sha256(repr((trace, got)).encode()).hexdigest()
    assert _digest_in_subprocess(1) == _digest_in_subprocess(2) == here


def test_make_rng_depends_on_seed_and_label_only():
    s1, s2 = Simulator(seed=4), Simulator(seed=4)
    s1.link(A, B)  # using links does not shift node generators
    assert s1.make_rng("a").random() == s2.make_rng("a").random()
    assert s1.make_rng("a").random() != s1.make_rng("b").random()
    assert Simulator(seed=5).make_rng("a").random() != s2.make_rng("a").random()


def test_stats_are_snapshots():
    sim, _, _ = one_way(LinkConfig(), 3)
    snap = sim.stats()[(A, B)]
    snap.dropped["loss"] = 99
    assert sim.link(A, B).stats.dropped["loss"] == 0
