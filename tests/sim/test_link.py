"""Link impairments: each one in isolation, with a fixed seed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from simtoys import A, B, Receiver, Sender, one_way

from gannet.sim import LinkConfig, Simulator


def test_delay_is_exact():
    sim, tx, rx = one_way(LinkConfig(delay=0.05), 50, interval=0.1)
    assert len(rx.received) == 50
    for (t_sent, seq, data), (t_recv, got, addr) in zip(tx.sent, rx.received):
        assert t_recv == t_sent + 0.05
        assert got == data
        assert addr == A  # the receiver sees the sender's address
    st = sim.stats()[(A, B)]
    assert st.sent == st.delivered == 50
    assert st.bytes_sent == st.bytes_delivered == 50 * 100


def test_bandwidth_serializes_back_to_back_datagrams():
    # 1000 bytes at 80 kbit/s = 0.1 s each; 5 sent at once arrive 0.1 s apart.
    cfg = LinkConfig(delay=0.01, bandwidth=80_000)
    sim = Simulator(seed=1)
    sim.set_link(A, B, cfg)
    tx = sim.add_node(A, Sender(B, 0, size=1000))
    rx = sim.add_node(B, Receiver())
    tx.emit(0.0, 5)
    sim.run()
    times = [t for t, _, _ in rx.received]
    assert times == pytest.approx([0.11, 0.21, 0.31, 0.41, 0.51], abs=1e-12)
    assert sim.stats()[(A, B)].max_queue_delay == pytest.approx(0.4)


def test_bandwidth_queue_drops_tail():
    cfg = LinkConfig(bandwidth=80_000, queue_bytes=3000)
    sim = Simulator(seed=1)
    link = sim.set_link(A, B, cfg)
    tx = sim.add_node(A, Sender(B, 0, size=1000))
    rx = sim.add_node(B, Receiver())
    tx.emit(0.0, 10)
    sim.poke(tx)
    assert link.queued_bytes == 3000
    sim.run()
    assert rx.seqs == [0, 1, 2]
    st = link.stats
    assert st.dropped["queue"] == 7
    assert st.delivered == 3
    # Once the queue has drained, the link accepts again.
    tx.emit(sim.now, 2)
    sim.run()
    assert rx.seqs == [0, 1, 2, 10, 11]


def test_slow_sender_never_queues():
    # 100 bytes every 10 ms = 80 kbit/s offered to a 1 Mbit/s link.
    sim, _, rx = one_way(LinkConfig(bandwidth=1_000_000, queue_bytes=100), 200)
    assert len(rx.received) == 200
    assert sim.stats()[(A, B)].max_queue_delay == 0.0


def test_random_loss_rate_near_p():
    n = 20_000
    sim, _, rx = one_way(LinkConfig(loss=0.1), n, interval=0.001, size=8)
    st = sim.stats()[(A, B)]
    lost = n - len(rx.received)
    assert st.dropped["loss"] == lost
    assert 0.09 < lost / n < 0.11


def _loss_bursts(seqs, n):
    got = set(seqs)
    bursts, run = [], 0
    for s in range(n):
        if s in got:
            if run:
                bursts.append(run)
            run = 0
        else:
            run += 1
    if run:
        bursts.append(run)
    return bursts


def test_gilbert_elliott_losses_come_in_bursts():
    n = 20_000
    cfg = LinkConfig(p_good_to_bad=0.01, p_bad_to_good=0.25, loss_in_bad=1.0)
    sim, _, rx = one_way(cfg, n, interval=0.001, size=8)
    bursts = _loss_bursts(rx.seqs, n)
    assert sum(bursts) == sim.stats()[(A, B)].dropped["burst"]
    mean = sum(bursts) / len(bursts)
    assert mean > 2.5  # geometric with p=0.25: expected 4
    # Independent loss at the same average rate has mean bursts near 1.
    rate = sum(bursts) / n
    _, _, rx2 = one_way(LinkConfig(loss=rate), n, interval=0.001, size=8)
    bursts2 = _loss_bursts(rx2.seqs, n)
    assert sum(bursts2) / len(bursts2) < 1.2


def test_duplication():
    sim, tx, rx = one_way(LinkConfig(duplicate=0.2, delay=0.01), 2000, interval=0.001)
    st = sim.stats()[(A, B)]
    assert 300 < st.duplicated < 500
    assert len(rx.received) == 2000 + st.duplicated == st.delivered
    assert sorted(set(rx.seqs)) == list(range(2000))
    sent = {seq: data for _, seq, data in tx.sent}
    assert all(data == sent[int.from_bytes(data[:4], "big")] for _, data, _ in rx.received)


def test_corruption_flips_1_to_k_bits():
    sim, tx, rx = one_way(LinkConfig(corrupt=1.0, corrupt_bits=3), 300, size=64)
    assert sim.stats()[(A, B)].corrupted == 300
    flips = set()
    for (_, _, orig), (_, got, _) in zip(tx.sent, rx.received):
        assert len(got) == len(orig)
        diff = int.from_bytes(orig, "big") ^ int.from_bytes(got, "big")
        flips.add(diff.bit_count())
    assert flips == {1, 2, 3}


def test_corruption_probability_applies_to_a_fraction():
    sim, tx, rx = one_way(LinkConfig(corrupt=0.25), 2000, interval=0.001)
    changed = sum(orig != got for (_, _, orig), (_, got, _) in zip(tx.sent, rx.received))
    assert changed == sim.stats()[(A, B)].corrupted
    assert 400 < changed < 600


def test_truncation_shortens():
    sim, tx, rx = one_way(LinkConfig(truncate=1.0), 300, size=50)
    assert sim.stats()[(A, B)].truncated == 300
    lengths = set()
    for (_, _, orig), (_, got, _) in zip(tx.sent, rx.received):
        assert len(got) < len(orig)
        assert orig.startswith(got)
        lengths.add(len(got))
    assert len(lengths) > 20  # a random length, not one fixed cut


def test_jitter_reorders_and_preserve_order_prevents_it():
    cfg = LinkConfig(delay=0.01, jitter=0.02)
    sim, _, rx = one_way(cfg, 500, interval=0.002)
    assert rx.seqs != sorted(rx.seqs)
    assert sorted(rx.seqs) == list(range(500))
    st = sim.stats()[(A, B)]
    assert st.reordered > 0
    times = [t for t, _, _ in rx.received]
    assert min(times) >= 0.01 and max(times) < 0.998 + 0.03

    sim, _, rx = one_way(LinkConfig(delay=0.01, jitter=0.02, preserve_order=True), 500,
                         interval=0.002)
    assert rx.seqs == list(range(500))
    assert sim.stats()[(A, B)].reordered == 0


def test_explicit_reordering():
    cfg = LinkConfig(delay=0.01, reorder=0.1, reorder_delay=0.05, preserve_order=True)
    sim, _, rx = one_way(cfg, 1000, interval=0.01)
    st = sim.stats()[(A, B)]
    # Each held-back datagram is overtaken by the next few (0.05 s / 0.01 s).
    assert 60 < st.reordered < 140
    late, highest = 0, -1
    for seq in rx.seqs:
        late += seq < highest
        highest = max(highest, seq)
    assert late == st.reordered


def test_mtu_drops_oversized():
    sim, _, rx = one_way(LinkConfig(mtu=1200), 100, sizes=[500, 1500, 1200])
    st = sim.stats()[(A, B)]
    assert st.dropped["mtu"] == 33
    assert all(len(d) <= 1200 for _, d, _ in rx.received)
    assert len(rx.received) == 67


def test_drop_nth_and_drop_if_drop_exactly_the_chosen_datagrams():
    sim = Simulator(seed=3)
    link = sim.link(A, B)
    link.drop_nth(3)
    link.drop_if(lambda data, index: data[:4] == (7).to_bytes(4, "big"))
    sim.add_node(A, Sender(B, 10))
    rx = sim.add_node(B, Receiver())
    sim.run()
    assert rx.seqs == [0, 1, 2, 4, 5, 6, 8, 9]
    assert link.stats.dropped["scripted"] == 2
    assert link.offered == 10


def test_drop_rules_do_not_perturb_randomness_of_other_datagrams():
    cfg = LinkConfig(loss=0.2, jitter=0.01)
    _, _, rx1 = one_way(cfg, 200, seed=5)
    sim = Simulator(seed=5)
    sim.set_link(A, B, cfg).drop_nth(0)
    sim.add_node(A, Sender(B, 200))
    rx2 = sim.add_node(B, Receiver())
    sim.run()
    assert [r for r in rx1.received if r[1][:4] != bytes(4)] == rx2.received


def test_conservation_of_datagrams():
    cfg = LinkConfig(delay=0.01, jitter=0.01, loss=0.05, duplicate=0.1, corrupt=0.1,
                     truncate=0.05, bandwidth=200_000, queue_bytes=1500, mtu=1400,
                     p_good_to_bad=0.01, p_bad_to_good=0.3)
    sim, _, rx = one_way(cfg, 2000, interval=0.002, sizes=[100, 1000, 1450])
    st = sim.stats()[(A, B)]
    assert st.sent == 2000
    assert st.sent + st.duplicated == st.delivered + st.dropped_total
    assert st.delivered == len(rx.received)
    assert all(st.dropped[r] > 0 for r in ("loss", "burst", "queue", "mtu"))
    assert st.as_dict()["dropped_total"] == st.dropped_total


@pytest.mark.parametrize(
    "bad",
    [dict(loss=1.5), dict(delay=-1), dict(corrupt_bits=0), dict(reorder=0.1),
     dict(bandwidth=-5), dict(queue_bytes=-1), dict(jitter=float("nan"))],
)
def test_link_config_validation(bad):
    with pytest.raises(ValueError):
        LinkConfig(**bad)


_prob = st.sampled_from([0.0, 0.0, 0.01, 0.1, 0.5, 1.0])


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    loss=_prob, dup=_prob, corrupt=_prob, truncate=_prob, g2b=_prob, reorder=_prob,
    jitter=st.sampled_from([0.0, 0.005, 0.05]),
    bandwidth=st.sampled_from([None, 100_000, 2_000_000]),
    queue=st.sampled_from([None, 0, 2000]),
    seed=st.integers(0, 2**32),
)
def test_conservation_holds_for_any_config(loss, dup, corrupt, truncate, g2b, reorder,
                                           jitter, bandwidth, queue, seed):
    cfg = LinkConfig(loss=loss, duplicate=dup, corrupt=corrupt, truncate=truncate,
                     p_good_to_bad=g2b, reorder=reorder, reorder_delay=0.02, jitter=jitter,
                     bandwidth=bandwidth, queue_bytes=queue, mtu=1300, delay=0.001)
    sim, _, rx = one_way(cfg, 150, seed=seed, interval=0.001, sizes=[40, 900, 1400])
    s = sim.stats()[(A, B)]
    assert s.sent == 150
    assert s.sent + s.duplicated == s.delivered + s.dropped_total
    assert s.delivered == len(rx.received)
    assert s.dropped["mtu"] == 50
    times = [t for t, _, _ in rx.received]
    assert times == sorted(times)
