"""--pcap writes the datagrams as seen on the wire; the shipped Wireshark
dissector decodes every one of a real transfer, and its fields are the
ones the sender logged in its qlog trace. An encrypted transfer (the
default) shows its key exchange and sealed datagrams, and nothing of the
file."""

import os
import re
import subprocess
import sys
import time

import pytest

from gannet.cli.wireshark import dissector_path
from gannet.observe import pcap, qlog
from gannet.wire.datagram import WireError, decode
from programs import require

GANNET = [sys.executable, "-m", "gannet"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "GANNET_NO_STATS": "1"}
SIZE = 1_500_000

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def transfer(tmp_path_factory):
    """A real `gannet send` to `gannet receive` over loopback, both
    capturing; the sender also writes its qlog trace. In plaintext
    (--insecure): the dissector's field checks need the segments readable."""
    d = tmp_path_factory.mktemp("capture")
    src = d / "payload.bin"
    src.write_bytes(os.urandom(SIZE))
    err = (d / "recv.err").open("wb")
    recv = subprocess.Popen(GANNET + ["--pcap", str(d / "recv.pcap"), "receive", "--insecure", "--host",
                                      "127.0.0.1", "--port", "0", "--dir", str(d / "in"), "--once"],
                            stdout=subprocess.DEVNULL, stderr=err, env=ENV)
    try:
        deadline = time.monotonic() + 10
        port = None
        while port is None and time.monotonic() < deadline:
            m = re.search(r"listening on [\d.]+:(\d+)", (d / "recv.err").read_text())
            port = int(m.group(1)) if m else time.sleep(0.02)
        assert port, (d / "recv.err").read_text()
        sent = subprocess.run(GANNET + ["send", "--insecure", "--pcap", str(d / "send.pcap"),
                                        "--qlog", str(d / "q"), str(src), f"127.0.0.1:{port}"],
                              capture_output=True, text=True, timeout=60, env=ENV)
        assert sent.returncode == 0, sent.stderr
        recv.wait(20)
    finally:
        if recv.poll() is None:
            recv.terminate()
            recv.wait(5)
    return d


def _sender_trace(d):
    files = [os.path.join(d / "q", f) for f in os.listdir(d / "q")]
    traces = [qlog.read(f)[1] for f in files]
    # the data connection: the one that sent the file
    return max(traces, key=lambda ev: sum(e["data"]["raw"]["payload_length"] for e in ev
                                          if e["name"] == "transport:packet_sent"))


def test_pcap_records_are_the_datagrams_both_ways(transfer):
    records = list(pcap.read(str(transfer / "send.pcap")))
    assert records
    times = [t for t, *_ in records]
    assert times == sorted(times) and abs(times[0] - time.time()) < 600  # wall-clock stamps
    for _, srcaddr, dst, payload in records:
        assert srcaddr[0] == "127.0.0.1" and dst[0] == "127.0.0.1"
        decode(payload)  # every record is a whole, valid Gannet datagram (raises WireError if not)
    # the receiver's capture holds the same datagrams, seen from the other side
    # (but for the last ACKs the receiver sent after the sender had gone, and
    # any datagram a full socket buffer dropped on the way)
    other = {p for *_, p in pcap.read(str(transfer / "recv.pcap"))}
    assert sum(p in other for *_, p in records) >= 0.95 * len(records)
    # and the qlog trace of the data connection counts as many of its packets
    events = _sender_trace(transfer)
    sent = sum(1 for e in events if e["name"] == "transport:packet_sent")
    received = sum(1 for e in events if e["name"] == "transport:packet_received")
    dcids = {e["data"]["gannet"]["dcid"] for e in events if e["name"] == "transport:packet_sent"}
    mine = [p for *_, p in records if len(p) >= 8 and f"{int.from_bytes(p[4:8], 'big'):08x}" in dcids]
    assert len(mine) >= sent and sent > SIZE // 65000
    assert received > 0


def test_pcap_reader_rejects_other_files(tmp_path):
    bad = tmp_path / "x.pcap"
    bad.write_bytes(b"\0" * 24)
    with pytest.raises(ValueError):
        list(pcap.read(str(bad)))
    with pytest.raises(WireError):
        decode(b"\x03" + b"\0" * 40)


def test_pcap_reader_stops_at_a_record_still_being_written(tmp_path):
    """A live capture (a receiver still running) can end in a record whose
    header is on disk and whose packet is not yet: the reader gives the
    whole records and stops there."""
    path = tmp_path / "live.pcap"
    w = pcap.PcapWriter(str(path))
    w.write(1.0, ("127.0.0.1", 1000), ("127.0.0.1", 2000), b"first")
    w.write(2.0, ("127.0.0.1", 2000), ("127.0.0.1", 1000), b"second datagram")
    w.close()
    whole = path.read_bytes()
    for cut in (len(whole) - 1, len(whole) - len(b"second datagram") - 28):  # part of it, none of it
        path.write_bytes(whole[:cut])
        records = list(pcap.read(str(path)))
        assert [payload for _, _, _, payload in records] == [b"first"]
    path.write_bytes(whole)
    assert [p for _, _, _, p in pcap.read(str(path))] == [b"first", b"second datagram"]


def _tshark(capture, *fields, display=None):
    cmd = ["tshark", "-n", "-X", f"lua_script:{dissector_path()}", "-r", str(capture), "-T", "fields",
           "-E", "separator=|", "-E", "occurrence=f"]
    for f in fields:
        cmd += ["-e", f]
    if display:
        cmd += ["-Y", display]
    env = {**os.environ, "HOME": str(capture.parent)}  # no user profile of this machine
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert "Lua: Error" not in out.stderr and "lua_script" not in out.stderr, out.stderr
    return [line.split("|") for line in out.stdout.splitlines()]


def test_tshark_decodes_every_datagram_with_the_dissector(transfer):
    require("tshark")
    capture = transfer / "send.pcap"
    total = len(list(pcap.read(str(capture))))
    rows = _tshark(capture, "frame.number", "_ws.col.Protocol", "gannet.crc.good", "_ws.malformed",
                   "_ws.expert.severity")
    assert len(rows) == total
    for number, proto, crc_good, malformed, severity in rows:
        assert proto == "Gannet", number
        assert crc_good in ("1", "True"), number
        assert malformed == "", number
    # the display filter is `gannet`
    assert len(_tshark(capture, "frame.number", display="gannet")) == total
    assert _tshark(capture, "frame.number", display="gannet.crc.good == 0") == []


def test_dissector_fields_match_the_senders_log(transfer):
    require("tshark")
    events = _sender_trace(transfer)
    sent = [e["data"] for e in events if e["name"] == "transport:packet_sent"]
    dcid = sent[-1]["gannet"]["dcid"]
    rows = _tshark(transfer / "send.pcap", "gannet.dcid", "gannet.flags.str", "gannet.window",
                   "gannet.len", "gannet.seq", "gannet.ack", "gannet.analysis.retransmission",
                   display=f"gannet.dcid == 0x{dcid}")
    # The sender's packets to this connection, in capture order, are the
    # packet_sent events in log order (the SYN went to ID 0: it is left out).
    logged = [d for d in sent if d["gannet"]["dcid"] == dcid]
    assert len(rows) == len(logged) > 10
    for row, d in zip(rows, logged):
        cid, flags, wnd, length, seq, ack, retrans = row
        assert int(cid, 16) == int(d["gannet"]["dcid"], 16)
        assert set(flags.split(",")) == {
            {"S": "SYN", "F": "FIN", "R": "RST", "P": "PSH", "A": "ACK"}[c] for c in d["gannet"]["flags"]}
        assert int(wnd) == d["gannet"]["window"]
        assert int(length) == d["raw"]["payload_length"]
        stream = next((f for f in d["frames"] if f["frame_type"] == "stream"), None)
        if stream is not None:
            assert int(seq) - 1 == stream["offset"]  # relative to the ISN; data starts at 1
        ack_frame = next((f for f in d["frames"] if f["frame_type"] == "ack"), None)
        if ack_frame is not None and ack_frame["acked_ranges"]:
            assert int(ack) - 1 == ack_frame["acked_ranges"][0][1] + 1


ENCRYPTED_SIZE = 300_000
CHUNK = 12  # any run of 2 * CHUNK - 1 file bytes holds one aligned chunk


@pytest.fixture(scope="module")
def encrypted_transfer(tmp_path_factory):
    """A real encrypted `gannet send` to `gannet receive` (the default) over
    loopback, both capturing."""
    d = tmp_path_factory.mktemp("encrypted")
    src = d / "payload.bin"
    src.write_bytes(os.urandom(ENCRYPTED_SIZE))
    err = (d / "recv.err").open("wb")
    recv = subprocess.Popen(GANNET + ["--pcap", str(d / "recv.pcap"), "receive", "--host", "127.0.0.1",
                                      "--port", "0", "--dir", str(d / "in"), "--once"],
                            stdout=subprocess.DEVNULL, stderr=err, env=ENV)
    try:
        deadline = time.monotonic() + 10
        found = None
        while found is None and time.monotonic() < deadline:
            found = re.search(r"code: (\S+).*listening on [\d.]+:(\d+)", (d / "recv.err").read_text(),
                              re.DOTALL)
            if found is None:
                time.sleep(0.02)
        assert found, (d / "recv.err").read_text()
        code, port = found.group(1), int(found.group(2))
        sent = subprocess.run(GANNET + ["send", "--code", code, "--pcap", str(d / "send.pcap"), str(src),
                                        f"127.0.0.1:{port}"],
                              capture_output=True, text=True, timeout=60, env=ENV)
        assert sent.returncode == 0, sent.stderr
        assert recv.wait(20) == 0, (d / "recv.err").read_text()
    finally:
        if recv.poll() is None:
            recv.terminate()
            recv.wait(5)
    assert (d / "in" / "payload.bin").read_bytes() == src.read_bytes()
    return d


def _shows_content(content, capture):
    """Whether any run of 2 * CHUNK - 1 bytes of content appears in the capture."""
    chunks = {content[i:i + CHUNK] for i in range(0, len(content) - CHUNK + 1, CHUNK)}
    return any(capture[i:i + CHUNK] in chunks for i in range(len(capture) - CHUNK + 1))


def test_capture_of_an_encrypted_transfer_holds_nothing_of_the_file(encrypted_transfer, transfer):
    content = (encrypted_transfer / "payload.bin").read_bytes()
    for name in ("send.pcap", "recv.pcap"):
        assert not _shows_content(content, (encrypted_transfer / name).read_bytes()), name
    # the same check finds the file in a plaintext capture
    assert _shows_content((transfer / "payload.bin").read_bytes(), (transfer / "send.pcap").read_bytes())


def test_tshark_shows_the_key_exchange_and_sealed_datagrams(encrypted_transfer):
    require("tshark")
    capture = encrypted_transfer / "send.pcap"
    total = len(list(pcap.read(str(capture))))
    rows = _tshark(capture, "frame.number", "_ws.col.Protocol", "_ws.malformed", "_ws.expert",
                   "gannet.form", "gannet.flags.str", "gannet.option.key_exchange.len", "gannet.dcid",
                   "gannet.scid", "gannet.protected", "gannet.pn", "gannet.encrypted.len", "gannet.tag",
                   "gannet.crc", "_ws.col.Info")
    assert len(rows) == total > 20
    for number, proto, malformed, experts, *_ in rows:
        assert proto == "Gannet", number
        assert malformed == "" and experts == "", number
    # the handshake: a SYN and a SYN-ACK in clear, each with its key exchange
    syn = [r for r in rows if r[4] == "long" and r[5] == "SYN"]
    synack = [r for r in rows if r[4] == "long" and set(r[5].split(",")) == {"SYN", "ACK"}]
    assert syn and synack
    for r in syn + synack:
        assert int(r[6]) > 0, r  # option 64 and its length
        assert "KeyExchange=" + r[6] in r[14], r
    cids = {int(synack[0][7], 16), int(synack[0][8], 16)}
    after = rows.index(synack[0]) + 1
    # every later datagram of the connection is sealed, packet numbers rising per direction
    last_pn = {}
    sealed = 0
    for number, *_, form, flags, kex, dcid, scid, protected, pn, elen, tag, crc, info in rows[after:]:
        if int(dcid, 16) not in cids:
            continue
        if form == "long" and "SYN" in flags.split(","):
            assert kex, number  # a handshake datagram sent again is still one
            continue
        assert form == "protected" and int(protected, 16) == 0x43, number
        assert flags == "" and crc == "" and len(tag.replace(":", "")) == 32, number
        assert int(elen) >= 15, number  # at least the inner short header (less its first byte and ID)
        assert f"[Encrypted] PN={pn} " in info, number
        assert int(pn) > last_pn.get(dcid, -1), number
        last_pn[dcid] = int(pn)
        sealed += 1
    assert len(last_pn) == 2 and sealed > ENCRYPTED_SIZE // 65000
    # the display filters
    assert len(_tshark(capture, "frame.number", display="gannet.protected")) == sum(
        r[4] == "protected" for r in rows)
    assert _tshark(capture, "frame.number", display="gannet.crc.good == 0") == []


def test_tshark_shows_the_alert_refusing_an_insecure_peer(tmp_path):
    """A plaintext `gannet send --insecure` to an encrypted receiver is
    refused with an ALERT, and the dissector names its code."""
    require("tshark")
    (tmp_path / "f.bin").write_bytes(b"x" * 1000)
    err = (tmp_path / "recv.err").open("wb")
    recv = subprocess.Popen(GANNET + ["receive", "--host", "127.0.0.1", "--port", "0", "--dir",
                                      str(tmp_path / "in")], stdout=subprocess.DEVNULL, stderr=err, env=ENV)
    try:
        deadline = time.monotonic() + 10
        port = None
        while port is None and time.monotonic() < deadline:
            m = re.search(r"listening on [\d.]+:(\d+)", (tmp_path / "recv.err").read_text())
            port = int(m.group(1)) if m else time.sleep(0.02)
        assert port, (tmp_path / "recv.err").read_text()
        sent = subprocess.run(GANNET + ["send", "--insecure", "--pcap", str(tmp_path / "send.pcap"),
                                        str(tmp_path / "f.bin"), f"127.0.0.1:{port}"],
                              capture_output=True, text=True, timeout=60, env=ENV)
        assert sent.returncode != 0 and "requires encryption" in sent.stderr, sent.stderr
    finally:
        recv.terminate()
        recv.wait(5)
    rows = _tshark(tmp_path / "send.pcap", "_ws.col.Protocol", "_ws.malformed", "gannet.form",
                   "gannet.alert.code", "gannet.alert.detail", "_ws.col.Info")
    alerts = [r for r in rows if r[2] == "alert"]
    assert alerts and all(r[0] == "Gannet" and r[1] == "" for r in rows)
    for _, _, _, code, detail, info in alerts:
        assert int(code) == 1 and detail != ""
        assert "[Alert] encryption required" in info
