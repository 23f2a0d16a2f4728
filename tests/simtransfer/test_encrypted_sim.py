"""Encrypted transfers on the simulator: two SecureEndpoints (the handshake's
key exchange, every later datagram sealed) across the same hostile links as
the plaintext seeds. A failure names its seed and link, and a seed replays
the same run: the keys differ each time, but nothing the simulator decides
depends on them."""

import pytest
from test_many_seeds import SIZE, link_for

from gannet.sim import LinkConfig
from gannet.sim.scenario import encrypted_pair, run_transfer

ENCRYPTED_SEEDS = range(0, 200, 5)  # a fifth of the plaintext seeds' links


@pytest.mark.sim
@pytest.mark.parametrize("seed", ENCRYPTED_SEEDS)
def test_encrypted_transfer_survives_impairments(seed):
    fwd, back = link_for(seed)
    result = run_transfer(seed, SIZE, fwd, back, time_limit=900, security=encrypted_pair())
    where = f"seed={seed} forward={fwd} backward={back}"
    assert result.intact, f"data differs ({result.received}/{SIZE} bytes) {where}"
    assert result.client_closed_cleanly, f"client: {result.client_error!r} {where}"
    assert result.server_closed_cleanly, f"server: {result.server_error!r} {where}"
    assert result.data_time < 400, f"took {result.data_time:.1f} virtual s {where}"
    client, server = result.security_stats["client"], result.security_stats["server"]
    # Everything the client sent after its SYN left sealed: in clear went
    # only the SYN and its retransmissions (each after a timeout).
    in_clear = result.link_stats["('10.0.0.1', 40000)->('10.0.0.2', 7000)"]["sent"] - client["sealed"]
    assert 1 <= in_clear <= 1 + result.client_stats["timeouts"], where
    assert server["opened"] > 0 and client["opened"] > 0, where
    assert client["handshakes_failed"] == server["handshakes_failed"] == 0, where
    assert client["plaintext_dropped"] == server["plaintext_dropped"] == 0, where


@pytest.mark.sim
def test_corruption_duplication_and_truncation_are_caught_by_the_envelope():
    """The link corrupts, truncates and duplicates sealed datagrams: every
    corrupted or cut one fails authentication (or is malformed) and is
    resent, every duplicate is dropped by the replay window, and the data
    arrives whole."""
    link = LinkConfig(delay=0.01, corrupt=0.03, truncate=0.01, duplicate=0.05)
    result = run_transfer(11, 500_000, link, link, security=encrypted_pair(has_aes=True))
    assert result.ok
    stats = result.security_stats
    damaged = sum(int(st.get("corrupted", 0)) + int(st.get("truncated", 0))
                  for st in result.link_stats.values())
    refused = sum(st["unauthenticated_dropped"] for st in stats.values())
    assert damaged > 10 and refused > 0
    assert refused <= damaged  # nothing undamaged failed to open
    assert sum(st["replay_dropped"] for st in stats.values()) > 10


@pytest.mark.sim
def test_a_seed_replays_the_same_encrypted_run():
    fwd, back = link_for(7)
    runs = [run_transfer(7, 300_000, fwd, back, security=encrypted_pair()) for _ in range(2)]
    a, b = runs
    assert a.ok and b.ok
    assert (a.finish_time, a.data_time, a.client_stats, a.server_stats, a.link_stats) == \
           (b.finish_time, b.data_time, b.client_stats, b.server_stats, b.link_stats)
    assert a.security_stats == b.security_stats


@pytest.mark.sim
def test_encrypted_datagrams_are_as_large_as_plaintext_ones():
    """The envelope's bytes come out of the connection's datagram size, so
    a sealed datagram is exactly as large as a plaintext one would be: the
    link's busiest direction carries the same bytes per datagram."""
    link = LinkConfig(delay=0.005)
    plain = run_transfer(2, 400_000, link, link)
    sealed = run_transfer(2, 400_000, link, link, security=encrypted_pair())
    assert plain.ok and sealed.ok

    def largest(result):
        st = result.link_stats["('10.0.0.1', 40000)->('10.0.0.2', 7000)"]
        return st["bytes_sent"] / st["sent"]

    assert plain.encrypted is False and sealed.encrypted is True
    assert abs(largest(plain) - largest(sealed)) < 0.02 * largest(plain)
