"""qlog: one JSON-SEQ file per connection, valid against the schema's
required fields, whose events are the transfer that happened."""

import json
import os
import threading
import time

import pytest

from gannet import Socket
from gannet.config import Config
from gannet.observe import qlog
from gannet.sim.config import LinkConfig
from gannet.sim.scenario import run_transfer

SIZE = 2_000_000


def _files(d):
    return sorted(os.path.join(d, f) for f in os.listdir(d))


@pytest.mark.sim
def test_simulated_lossy_transfer_trace(tmp_path):
    link = LinkConfig(delay=0.02, bandwidth=20e6, loss=0.02, queue_bytes=100_000)
    r = run_transfer(1, SIZE, link, LinkConfig(delay=0.02), config=Config(qlog_dir=str(tmp_path)))
    assert r.ok and r.client_stats["retransmits"] > 0
    files = _files(tmp_path)
    assert len(files) == 2
    assert [f.endswith("-client.sqlog") for f in files].count(True) == 1
    for path in files:
        assert qlog.validate(path) == [], path
        raw = open(path, encoding="utf-8").read()
        assert raw.startswith("\x1e{") and raw.endswith("}\n")  # RFC 7464 records
        header, events = qlog.read(path)
        assert header["qlog_format"] == "JSON-SEQ" and header["qlog_version"] == "0.3"
    client = next(f for f in files if f.endswith("-client.sqlog"))
    header, events = qlog.read(client)
    assert header["trace"]["vantage_point"]["type"] == "client"
    names = [e["name"] for e in events]
    sent = [e for e in events if e["name"] == "transport:packet_sent"]
    # one packet_sent per segment the connection sent
    assert len(sent) == r.client_stats["segments_sent"]
    # the stream frames cover the whole stream, and bytes sent again are the resends
    covered = 0
    resent = 0
    high = 0
    for e in sent:
        for f in e["data"]["frames"]:
            if f["frame_type"] == "stream" and f["length"]:
                if f["offset"] + f["length"] <= high:
                    resent += f["length"]
                high = max(high, f["offset"] + f["length"])
                covered += f["length"]
    assert high == SIZE
    assert covered == r.client_stats["bytes_sent"]
    assert resent == r.client_stats["retransmitted_bytes"]
    lost = sum(f["length"] for e in events if e["name"] == "recovery:packet_lost"
               for f in e["data"]["frames"])
    assert 0 < lost <= resent  # every loss declared was resent (TLP probes resend unlost data)
    assert "recovery:congestion_state_updated" in names and "connectivity:mtu_updated" in names
    metrics = [e["data"] for e in events if e["name"] == "recovery:metrics_updated"]
    assert any("congestion_window" in m for m in metrics) and any("smoothed_rtt" in m for m in metrics)
    summary = [e for e in events if e["name"] == "gannet:connection_summary"]
    assert len(summary) == 1 and summary[0]["data"]["retransmitted_bytes"] == resent
    # time never goes back
    times = [e["time"] for e in events]
    assert times == sorted(times)
    # the receiver's acks end at the stream's end (+1 for the FIN)
    server = next(f for f in files if f.endswith("-server.sqlog"))
    _, sevents = qlog.read(server)
    acks = [f["acked_ranges"][0][1] for e in sevents if e["name"] == "transport:packet_sent"
            for f in e["data"]["frames"] if f["frame_type"] == "ack" and f["acked_ranges"]]
    assert max(acks) in (SIZE - 1, SIZE)


def test_validate_finds_what_is_missing(tmp_path):
    path = tmp_path / "bad.sqlog"
    good = {"qlog_version": "0.3", "qlog_format": "JSON-SEQ", "trace": {"vantage_point": {"type": "client"}}}
    events = [{"time": 1.0, "name": "transport:packet_sent", "data": {"header": {"packet_type": "1RTT"}}},
              {"time": 0.5, "name": "recovery:congestion_state_updated", "data": {}},
              {"name": "x:y", "data": {}}]
    path.write_text("".join("\x1e" + json.dumps(r) + "\n" for r in [good, *events]))
    problems = qlog.validate(str(path))
    assert any("header.packet_number" in p for p in problems)
    assert any("data.new" in p for p in problems)
    assert any("time goes back" in p for p in problems)
    assert any("missing time" in p for p in problems)
    path.write_text(json.dumps(good))
    assert "not JSON-SEQ" in qlog.validate(str(path))[0]


@pytest.mark.timeout(60)
def test_loopback_sockets_write_one_valid_file_each(tmp_path):
    srv = Socket(qlog_dir=str(tmp_path))
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    got = {}

    def serve():
        c, _ = srv.accept()
        n = 0
        while b := c.recv(1 << 20):
            n += len(b)
        got["n"] = n
        c.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    cl = Socket(qlog_dir=str(tmp_path))
    cl.connect(srv.getsockname())
    cl.sendall(os.urandom(SIZE))
    cl.close()
    t.join(30)
    srv.close()
    assert got["n"] == SIZE
    deadline = time.monotonic() + 15  # TIME-WAIT ends each trace
    while time.monotonic() < deadline:
        files = _files(tmp_path)
        if len(files) == 2 and all("gannet:connection_summary" in open(f).read() for f in files):
            break
        time.sleep(0.05)
    files = _files(tmp_path)
    assert len(files) == 2
    for path in files:
        assert qlog.validate(path) == []
    received = {}
    for path in files:
        _, events = qlog.read(path)
        summary = next(e["data"] for e in events if e["name"] == "gannet:connection_summary")
        received[summary["role"]] = summary
    assert received["client"]["bytes_acked"] == SIZE and received["server"]["bytes_received"] == SIZE


def test_the_flag_letters_are_made_on_first_use():
    """qlog's "flags" field ("SA" for a SYN-ACK): each value made when first
    written, not all 256 at import (a command that traces nothing makes none)."""
    import subprocess
    import sys

    from gannet.observe.trace import _FLAGS
    from gannet.wire.segment import ACK, FIN, PSH, RST, SYN

    expected = {f: "".join(ch for bit, ch in ((SYN, "S"), (FIN, "F"), (RST, "R"), (PSH, "P"), (ACK, "A"))
                           if f & bit) for f in range(256)}
    assert {f: _FLAGS[f] for f in range(256)} == expected
    assert _FLAGS[SYN | ACK] == "SA" and _FLAGS[0] == ""
    out = subprocess.run([sys.executable, "-c", "from gannet.observe.trace import _FLAGS; print(len(_FLAGS))"],
                         capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "0"
