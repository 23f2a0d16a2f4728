"""qlog and pcap of an encrypted connection: the qlog's packet records are
the plaintext segments the connections send and read (every one, each way,
GSO trains and GRO batches too), the pcap holds what is on the wire, which
is sealed."""

from __future__ import annotations

import collections
import random
import subprocess
import sys
from pathlib import Path

import pytest

from gannet.core.rangeset import RangeSet
from gannet.crypto.endpoint import Security
from gannet.observe import diagnose, pcap, plot, qlog
from gannet.observe.trace import EndpointObserver
from gannet.wire.datagram import SHORT_FORM
from gannet.wire.protected import OVERHEAD, PROTECTED

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "crypto"))
from securepair import Pair, transfer  # noqa: E402

SIZE = 300_000
SENT, RECEIVED = "transport:packet_sent", "transport:packet_received"


def _run(tmp_path: Path, *, batches: bool, drop: int | None = None, insecure: bool = False):
    """A seeded transfer client->server with an observer on each side (qlog
    both, pcap on the client); `drop`: the index of a c->s datagram lost."""
    seen = {"c->s": 0}

    def tap(d: bytes, direction: str) -> list[bytes]:
        if direction == "c->s":
            seen["c->s"] += 1
            if seen["c->s"] == drop:
                return []
        return [d]

    sec = Security(insecure=insecure)
    pair = Pair(sec, sec, batches=batches, tap=tap, observed=True)  # (the observers go on the instances)
    writer = pcap.PcapWriter(str(tmp_path / "client.pcap"))
    client = EndpointObserver(pair.client, local_addr=("127.0.0.1", 40001), qlog_dir=str(tmp_path),
                              pcap=writer, wall_offset=0.0)
    server = EndpointObserver(pair.server, local_addr=("127.0.0.1", 40002), qlog_dir=str(tmp_path),
                              wall_offset=0.0)
    data = random.Random(7).randbytes(SIZE)
    assert transfer(pair, data) == data
    for _ in range(2000):  # the closes finish (TIME_WAIT and all)
        if not pair.client._conns and not pair.server._conns:
            break
        pair.step(0.01)
    client.close(pair.now)
    server.close(pair.now)
    writer.close()
    files = {side: next(str(p) for p in tmp_path.glob(f"*-{side}.sqlog"))
             for side in ("client", "server")}
    summaries = {"client": client.finished[-1], "server": server.finished[-1]}
    return pair, files, summaries


def _packets(path: str):
    assert qlog.validate(path) == [], path
    _, events = qlog.read(path)
    return [e for e in events if e["name"] == SENT], [e for e in events if e["name"] == RECEIVED]


def _frames(records, kind):
    return [f for e in records for f in e["data"]["frames"] if f["frame_type"] == kind]


@pytest.mark.parametrize("batches", [False, True], ids=["datagrams", "gso-gro"])
@pytest.mark.parametrize("drop", [None, 40], ids=["clean", "one-lost"])
def test_every_plaintext_segment_is_a_record(tmp_path, batches, drop):
    pair, files, summaries = _run(tmp_path, batches=batches, drop=drop)
    assert pair.client.security_stats.sealed > 100 and pair.server.security_stats.opened > 100
    if batches:
        assert pair.batched > 0  # trains went as GSO and came as GRO batches
    for side in ("client", "server"):
        sent, received = _packets(files[side])
        s = summaries[side]
        assert (len(sent), len(received)) == (s["segments_sent"], s["segments_received"]), side
        # records number the segments one by one, each way
        assert [e["data"]["header"]["packet_number"] for e in sent] == list(range(1, len(sent) + 1))
    sent, received = _packets(files["client"])
    ssent, sreceived = _packets(files["server"])
    assert len(received) == len(ssent)  # nothing lost s->c
    assert len(sreceived) == len(sent) - (drop is not None)
    # Data: the client's stream frames cover every byte; the server read them all.
    covered = RangeSet()
    for f in _frames(sent, "stream"):
        if f["length"]:
            covered.add(f["offset"], f["offset"] + f["length"])
    assert list(covered) == [(0, SIZE)]
    got = RangeSet()
    for f in _frames(sreceived, "stream"):
        if f["length"]:
            got.add(f["offset"], f["offset"] + f["length"])
    assert list(got) == [(0, SIZE)]
    # ACK ranges as the client read them are what the server sent, and
    # acknowledge only data that was sent (the FIN is one past the end).
    acked = [f["acked_ranges"] for f in _frames(received, "ack")]
    assert acked == [f["acked_ranges"] for f in _frames(ssent, "ack")]
    highs = [r[0][1] + 1 for r in acked if r]
    assert highs == sorted(highs) and highs[-1] == SIZE + 1
    for ranges in acked:
        for left, right in ranges:
            assert 0 <= left <= right <= SIZE
    if drop is not None:  # the hole was reported with a SACK block above the cumulative ACK
        assert any(len(r) > 1 for r in acked)
        retransmitted = collections.Counter((f["offset"], f["length"])
                                            for f in _frames(sent, "stream"))
        assert any(n > 1 for n in retransmitted.values())


def test_same_records_as_the_plaintext_run(tmp_path):
    """The same seeded transfer with and without encryption: each qlog has
    its run's own segment counts and ACKs ending at the FIN, and the
    encrypted one describes segments OVERHEAD smaller (what the connection
    sends), not the sealed datagrams."""
    (tmp_path / "plain").mkdir()
    (tmp_path / "sealed").mkdir()
    _, plain, ps = _run(tmp_path / "plain", batches=True, insecure=True)
    _, sealed, ss = _run(tmp_path / "sealed", batches=True)
    for files, summaries in ((plain, ps), (sealed, ss)):
        sent, received = _packets(files["client"])
        assert len(sent) == summaries["client"]["segments_sent"]
        assert len(received) == summaries["client"]["segments_received"]
        acked = [f["acked_ranges"] for f in _frames(received, "ack")]
        assert max(r[0][1] + 1 for r in acked if r) == SIZE + 1
    # the same data in both, in segments OVERHEAD smaller when sealed: as many or more
    for files in (plain, sealed):
        sent, _ = _packets(files["client"])
        assert sum(f["length"] for f in _frames(sent, "stream")) == SIZE
    assert len(_packets(sealed["client"])[0]) >= len(_packets(plain["client"])[0])
    sizes = {name: max(e["data"]["raw"]["length"] for e in _packets(files["client"])[0])
             for name, files in (("plain", plain), ("sealed", sealed))}
    assert sizes["plain"] - sizes["sealed"] == OVERHEAD


def test_pcap_holds_sealed_datagrams_only(tmp_path):
    pair, _, _ = _run(tmp_path, batches=True)
    records = list(pcap.read(str(tmp_path / "client.pcap")))
    firsts = collections.Counter(payload[0] for _, _, _, payload in records)
    assert firsts[SHORT_FORM] == 0  # no plaintext segment of the connection on the wire
    st = pair.client.security_stats
    assert firsts[PROTECTED] == st.sealed + st.opened
    assert len(records) - firsts[PROTECTED] == 2  # the SYN and SYN-ACK, in clear
    out = [p for _, src, _, p in records if src == ("127.0.0.1", 40001)]
    assert len(out) == st.sealed + 1  # and the clear one is the SYN


def test_plot_and_diagnose_read_the_encrypted_trace(tmp_path):
    _, files, _ = _run(tmp_path, batches=True)
    info = plot.render(files["client"], str(tmp_path / "c.png"))
    sent, _ = _packets(files["client"])
    assert info["top"] == SIZE
    assert info["points"] == sum(1 for f in _frames(sent, "stream") if f["length"])
    verdict, summary = diagnose.from_qlog(files["client"])
    assert summary["bytes_sent"] >= SIZE
    png = str(tmp_path / "cli.png")
    for cmd in (["plot", files["client"], "-o", png], ["diagnose", files["client"]]):
        done = subprocess.run([sys.executable, "-m", "gannet", *cmd], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip()
    assert (tmp_path / "cli.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
