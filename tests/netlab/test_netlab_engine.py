"""The impairment engine, units and config: pure code, no root needed."""

import pytest

from gannet.netlab.config import LinkConfig, expand_direction
from gannet.netlab.link import Link
from gannet.netlab.units import (parse_percent, parse_queue, parse_rate, parse_size,
                                 parse_time)


def ip_packet(size=100, seq=0):
    # minimal IPv4 header (IHL 5) + payload carrying a sequence number
    hdr = bytes([0x45, 0]) + size.to_bytes(2, "big") + bytes(16)
    body = seq.to_bytes(4, "big") + bytes(size - 24)
    return hdr + body


def test_units():
    assert parse_time("20ms") == pytest.approx(0.02)
    assert parse_time("1s") == 1.0
    assert parse_time("250us") == pytest.approx(250e-6)
    assert parse_time(0.5) == 0.5
    assert parse_rate("50mbit") == 50e6
    assert parse_rate("1gbit") == 1e9
    assert parse_rate("100kbit") == 100e3
    assert parse_percent("1%") == pytest.approx(0.01)
    assert parse_percent("0.25") == 0.25
    assert parse_size("64kb") == 65536
    assert parse_queue("64kb") == (65536, None)
    assert parse_queue("100") == (None, 100)
    assert parse_queue("50p") == (None, 50)
    for bad in ("20 parsecs", "x", "150%"):
        with pytest.raises(ValueError):
            (parse_time if "parsec" in bad else parse_percent)(bad)


def test_config_replace_and_validate():
    c = LinkConfig().replace(delay="20ms", loss="1%", rate="10mbit", queue="32kb")
    assert (c.delay, c.loss, c.rate, c.queue_bytes, c.queue_packets) == (
        pytest.approx(0.02), pytest.approx(0.01), 10e6, 32768, None)
    assert LinkConfig.from_dict(c.to_dict()) == c
    assert LinkConfig().transparent and not c.transparent
    with pytest.raises(ValueError):
        LinkConfig(loss=2)
    with pytest.raises(ValueError):
        LinkConfig().replace(warp_speed=9)
    assert expand_direction("both") == ("a->b", "b->a")
    with pytest.raises(ValueError):
        expand_direction("c->d")


def run(cfg, n=20000, seed=1, size=100, spacing=0.001):
    link = Link(cfg, seed)
    out = []
    for i in range(n):
        for t, p in link.submit(ip_packet(size, i), i * spacing):
            out.append((t, p))
    return link, out


def test_loss_is_seeded_and_statistical():
    cfg = LinkConfig(loss=0.1)
    link1, out1 = run(cfg, seed=7)
    link2, out2 = run(cfg, seed=7)
    _, out3 = run(cfg, seed=8)
    assert out1 == out2 and out1 != out3
    assert 0.09 < link1.dropped["loss"] / 20000 < 0.11
    # the loss pattern does not depend on other impairments being on
    _, out4 = run(cfg.replace(jitter=0.005, duplicate=0.0), seed=7)
    assert [p for _, p in out4] == [p for _, p in out1]


def test_gilbert_elliott_bursts():
    link, out = run(LinkConfig(burst_p=0.01, burst_r=0.25), n=50000)
    got = {int.from_bytes(p[20:24], "big") for _, p in out}
    bursts, run_len = [], 0
    for i in range(50000):
        if i in got:
            if run_len:
                bursts.append(run_len)
            run_len = 0
        else:
            run_len += 1
    mean_burst = sum(bursts) / len(bursts)
    assert 3 < mean_burst < 5  # 1 / r = 4
    # stationary loss p / (p + r) = 0.0385
    assert 0.03 < link.dropped["burst_loss"] / 50000 < 0.05


def test_duplicate_corrupt_reorder_mtu_down():
    link, out = run(LinkConfig(duplicate=0.1), n=5000)
    assert len(out) == 5000 + link.duplicated and 400 < link.duplicated < 600

    link, out = run(LinkConfig(corrupt=1.0, corrupt_bits=3), n=200)
    assert link.corrupted == 200
    for i, (_, p) in enumerate(out):
        orig = ip_packet(100, i)
        assert p[:20] == orig[:20]  # IP header untouched
        flipped = sum(bin(a ^ b).count("1") for a, b in zip(p, orig))
        assert 1 <= flipped <= 3 and flipped % 2 == 1  # 3 flips, 2 may cancel

    link, out = run(LinkConfig(delay=0.01, reorder=0.05), n=2000)
    seqs = [int.from_bytes(p[20:24], "big") for _, p in sorted(out, key=lambda x: x[0])]
    assert seqs != sorted(seqs) and link.reordered > 50

    link, out = run(LinkConfig(delay=0.01, jitter=0.005), n=2000)
    seqs = [int.from_bytes(p[20:24], "big") for _, p in sorted(out, key=lambda x: x[0])]
    assert seqs == sorted(seqs)  # jitter alone keeps order
    assert link.lat_min < 0.008 and link.lat_max > 0.012

    link, out = run(LinkConfig(mtu=99), n=10)
    assert out == [] and link.dropped["mtu"] == 10
    link, out = run(LinkConfig(down=True), n=10)
    assert out == [] and link.dropped["down"] == 10


def test_rate_serialises_and_drop_tail():
    # 1000-byte packets at 8 Mbit/s: one per ms on the wire; offered 10 per ms
    cfg = LinkConfig(rate=8e6, queue_packets=50)
    link, out = run(cfg, n=1000, size=1000, spacing=0.0001)
    times = [t for t, _ in out]
    assert all(b - a == pytest.approx(0.001) for a, b in zip(times, times[1:]))
    assert link.dropped["queue"] > 800 and link.q_max_packets == 50
    assert link.qdelay_max == pytest.approx(0.049, abs=0.002)

    link, out = run(LinkConfig(rate=8e6, queue_packets=None, queue_bytes=10_000),
                    n=100, size=1000, spacing=0.0001)
    assert link.q_max_bytes <= 10_000 and link.dropped["queue"] > 0


def test_live_config_change():
    link = Link(LinkConfig(), 1)
    assert link.submit(ip_packet(), 0.0) == [(0.0, ip_packet())]
    link.config = link.config.replace(delay="50ms")
    [(t, _)] = link.submit(ip_packet(), 1.0)
    assert t == pytest.approx(1.05)
    assert link.stats()["rx_packets"] == 2
