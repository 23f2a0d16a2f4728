"""Every congestion controller over the simulator: verified transfers and the
comparisons docs/congestion.md reports (10 Mbit/s, 40 ms RTT, 1-BDP queue).

A failure names its seed and link so `run_transfer(seed, ...)` replays it.
"""

import types

import pytest

from gannet.config import Config
from gannet.core.sender import Sender
from gannet.core.timers import PACING, unarmed
from gannet.core.endpoint import Endpoint
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
    snd = types.SimpleNamespace(_cc=types.SimpleNamespace(pacing_rate=440980.23784540064), _deadlines=unarmed())
    now = 0.08614731737752417
    try:
        Sender._pace_wait(snd, now, 3e-12)
    except Exception:
        return True  # reshaped; let the simulator tests tell
    return snd._deadlines[PACING] > now


needs_pacer_fix = pytest.mark.xfail(
    not _pacer_survives_rounding(),
    raises=SimulationError,
    strict=False,
    reason="Sender._pace_wait can set a deadline equal to now (float rounding): timer livelock",
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


@pytest.mark.sim
def test_bbr_startup_exits_with_few_retransmissions():
    # One 40 ms, 10 Mbit/s path with a drop-tail queue of one BDP: Startup may
    # fill the queue once but must not blow it (measured: 6 retransmissions;
    # an overshoot that blows a 1-BDP queue costs a hundred or more).
    seed = 1
    r = run("bbr", seed, 2_000_000, *bottleneck(0.0, mtu=1500))
    assert r.client_stats["retransmits"] <= 20, f"seed={seed}: {r.client_stats}"
    assert r.client_stats["timeouts"] == 0, f"seed={seed}: {r.client_stats}"
    assert goodput_share(r) >= 0.85, f"seed={seed}: {goodput_share(r):.0%} of the link"


@pytest.mark.sim
def test_bbr_keeps_its_rate_on_a_long_lossy_path():
    # 100 ms RTT and 2 % random loss: recovery episodes follow each other
    # back to back, so the model must keep learning during them (rate samples
    # and ACKs in recovery), and a timeout must not reset it. Measured 73-82 %
    # over seeds 1-4 (40 % for seed 2 while a timeout's ACK burst counted as
    # rounds and flushed the bandwidth filter; 25-30 % when the model went
    # blind in recovery); NewReno gets about 10 %.
    fwd, back = bottleneck(0.02, delay=0.05, mtu=1500)
    for seed in (1, 2, 3, 4):
        r = run("bbr", seed, 4_000_000, fwd, back)
        assert goodput_share(r) >= 0.65, f"seed={seed}: {goodput_share(r):.0%} of 10 Mbit/s at 100 ms, 2% loss"


def two_flows(cc, seconds, seed=1, stagger=0.0, loss=0.0, warmup=2.0, cc2=None):
    """Two bulk connections from one endpoint to another through one
    bottleneck (10 Mbit/s, 40 ms, 1-BDP queue); the second (controller
    `cc2`, default `cc`) starts `stagger` seconds after the first. Returns
    each flow's goodput in bit/s over `seconds` after both have run for
    `warmup` seconds, first flow first."""
    from gannet.core.endpoint import Endpoint
    from gannet.core.events import ConnectionAvailable, ConnectionEstablished, DataReceived, SendSpaceAvailable
    from gannet.sim.network import Simulator

    a, b = ("10.0.0.1", 40000), ("10.0.0.2", 7000)
    fwd, back = bottleneck(loss, mtu=1500)
    sim = Simulator(seed=seed)
    sim.set_link(a, b, fwd)
    sim.set_link(b, a, back)
    config = Config(congestion_control=cc)
    client = Endpoint(config, rng=sim.make_rng("client"))
    server = Endpoint(config, rng=sim.make_rng("server"))
    received: dict[int, int] = {}
    blob = bytes(1 << 16)

    def on_client(ep):
        while (ev := ep.next_event()) is not None:
            if isinstance(ev, (ConnectionEstablished, SendSpaceAvailable)):
                while ev.conn.send(blob):
                    pass

    def on_server(ep):
        while (ev := ep.next_event()) is not None:
            if isinstance(ev, ConnectionAvailable):
                ep.accept()
            elif isinstance(ev, DataReceived):
                received[id(ev.conn)] = received.get(id(ev.conn), 0) + len(ev.conn.recv(1 << 22))

    def reacting(ep, handler):
        def drain(now):
            handler(ep)
            out = ep.datagrams_to_send(now)
            while ep.has_pending():
                handler(ep)
                out.extend(ep.datagrams_to_send(now))
            return out

        return drain

    sim.add_node(a, client, name="client", drain=reacting(client, on_client))
    sim.add_node(b, server, name="server", drain=reacting(server, on_server))
    server.listen()
    client.connect(b, sim.now)
    sim.run(until=stagger)
    client.connect(b, sim.now, Config(congestion_control=cc2 or cc))
    sim.run(until=stagger + warmup)
    before = dict(received)
    sim.run(until=stagger + warmup + seconds)
    assert len(received) == 2, f"seed={seed}: {len(received)} flows delivered data"
    return [(n - before.get(k, 0)) * 8 / seconds for k, n in received.items()]


def jain(xs):
    return sum(xs) ** 2 / (len(xs) * sum(x * x for x in xs))


@pytest.mark.sim
def test_two_bbr_flows_share_a_bottleneck_fairly():
    # The second flow starts 3 s after the first has the link to itself;
    # BBR's shares converge over ProbeBW cycles, slowly, so measure 20 s.
    # Measured: 5.4 / 4.2 Mbit/s (Jain 0.983); over 12 s the shares were
    # 5.4-6.0 / 3.7-4.3 depending on small changes elsewhere (Jain 0.946-0.99).
    seed = 1
    rates = two_flows("bbr", 20.0, seed=seed, stagger=3.0)
    assert jain(rates) >= 0.95, f"seed={seed}: {[f'{r / 1e6:.2f}' for r in rates]} Mbit/s"
    assert sum(rates) >= 0.85 * BW, f"seed={seed}: {sum(rates) / BW:.0%} of the link together"


@pytest.mark.sim
@pytest.mark.pure
def test_bbr_gets_rate_samples_during_loss_recovery(monkeypatch):
    # 2 % loss on a 40 ms path keeps the sender in recovery much of the time.
    # A retransmission used to wipe the connection's send log, so almost no
    # rate samples arrived then; then only ACKs that moved the cumulative
    # ACK gave one (255 samples, 42 in recovery); now SACK-only ACKs do too,
    # and none claims more than the link can carry.
    from gannet.core.cc.bbr import Bbr

    samples = []
    original = Bbr.on_delivery_rate

    def record(self, now, rate, interval, app_limited, *rest):
        samples.append((self._in_recovery, rate))
        original(self, now, rate, interval, app_limited, *rest)

    monkeypatch.setattr(Bbr, "on_delivery_rate", record)
    seed = 1
    run("bbr", seed, 2_000_000, *bottleneck(0.02, mtu=1500))
    # Measured: 1228 samples, 986 of them in recovery, max 0.97 of the link.
    during = [rate for rec, rate in samples if rec]
    assert len(samples) >= 800 and len(during) >= 500, f"seed={seed}: {len(during)} of {len(samples)} in recovery"
    assert max(rate for _, rate in samples) <= 1.1 * BW / 8, f"seed={seed}: a rate sample above the link"


def test_pacer_wakes_once_per_burst_not_per_segment(monkeypatch):
    """On a fast path the pacer lets out a millisecond's worth (a whole run)
    per wake-up: each wake-up costs tens of microseconds of Python, and one
    per segment once cost a bulk sender over a third of its CPU."""
    calls = [0]
    handle_timer = Endpoint.handle_timer

    def counting(self, now):
        calls[0] += 1
        return handle_timer(self, now)

    monkeypatch.setattr(Endpoint, "handle_timer", counting)
    fwd = LinkConfig(delay=0.0005, bandwidth=2e9, queue_bytes=2_000_000)
    r = run_transfer(1, 30_000_000, fwd, LinkConfig(delay=0.0005),
                     config=Config(congestion_control="bbr", pmtud=False, max_datagram_size=1472))
    assert r.ok
    assert r.goodput * 8 > 1.5e9  # pacing still lets the path fill
    assert calls[0] * 10 < r.client_stats["segments_sent"]


@pytest.mark.sim
def test_bbr_beside_cubic_takes_at_most_twice_its_share():
    # CUBIC (standing in for kernel TCP CUBIC) starts 1 s after BBR, as
    # close as bench/lossy.py starts its pairs. BBR's probes used to
    # overflow the 1-BDP queue every few rounds while its window stayed at
    # 2 BDP; CUBIC backed off on each loss and kept 1.54 of 10 Mbit/s (BBR
    # 8.11). With inflight_hi from losses with a queue, measured 6.05 / 3.67.
    # (CUBIC 3 s late, after BBR had the link alone: 6.98 / 2.71 over 15 s,
    # 6.69 / 2.99 after 10 s more - converging, but slowly.)
    # Gannet's CUBIC is only a proxy for the kernel's: its fast retransmit
    # (now sent at the first chance, RFC 6675) shifted this to 6.73 / 2.96,
    # and PMTU probes that a paced flow now really sends (each lost on this
    # 1500-byte path) to 7.04 / 2.66, while on netlab beside kernel CUBIC the
    # same BBR took less than its share (11.1 / 37.0 Mbit/s). With
    # inflight_hi growing 1, 2, 4 ... segments per probe and 15 % headroom
    # outside probes (and SACK rate samples): 6.26 / 3.46 here, 23.8 / 24.2
    # and 25.2 / 22.8 on netlab (bench/results/lossy.md). The bound keeps the old behaviour
    # (8.11 / 1.54, 5.3x) out, with room for the proxy's drift.
    seed = 1
    bbr, cubic = two_flows("bbr", 15.0, seed=seed, stagger=1.0, warmup=3.0, cc2="cubic")
    assert bbr <= 3 * cubic, f"seed={seed}: bbr {bbr / 1e6:.2f} vs cubic {cubic / 1e6:.2f} Mbit/s"
    assert bbr + cubic >= 0.9 * BW, f"seed={seed}: {(bbr + cubic) / BW:.0%} of the link together"


@pytest.mark.pure
def test_a_paced_flow_finishes_its_path_mtu_search_early(monkeypatch):
    """A PMTU probe needs tokens for its whole size at once. A paced flow
    spent them on smaller data as they came, so its probes left only in
    moments when the window, not the pacer, held it back: the search (three
    lost probes on this 1500-byte path) dragged on, and on netlab the last
    probe went out inside ProbeRTT's small window and stalled the flow."""
    failed = []
    pmtu_failed = Sender.pmtu_failed

    def record(self):
        failed.append(self.now)
        return pmtu_failed(self)

    monkeypatch.setattr(Sender, "pmtu_failed", record)
    fwd = LinkConfig(delay=0.02, bandwidth=50e6, queue_bytes=250_000, mtu=1500)
    r = run_transfer(1, 20_000_000, fwd, LinkConfig(delay=0.02, mtu=1500),
                     config=Config(congestion_control="bbr"))
    assert r.ok and r.client_stats["timeouts"] == 0
    assert len(failed) == 3  # MAX_PROBES at the first size, then the search stops
    # Measured 0.26 s (0.62 s before the pacer held tokens for a probe);
    # 0.355 s with rate samples from SACK-only ACKs (Startup's pacing differs).
    assert max(failed) < 0.4, failed
