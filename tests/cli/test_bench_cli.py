"""`gannet bench server` / `gannet bench client` as real subprocesses on loopback."""

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from gannet.core import cc as cc_registry
from gannet.wire.protected import OVERHEAD
from gannet_cli_helpers import stop

pytestmark = pytest.mark.timeout(120)

GANNET = [sys.executable, "-m", "gannet"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def start_server(tmp_path, *extra):
    err = tmp_path / f"server-{time.monotonic_ns()}.err"
    proc = subprocess.Popen(GANNET + ["bench", "server", "--port", "0", *extra],
                            stdout=subprocess.DEVNULL, stderr=err.open("wb"), env=ENV)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and proc.poll() is None:
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", err.read_text())
        if m:
            return proc, f"127.0.0.1:{m.group(1)}", err
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"bench server did not start: {err.read_text()}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc, address, err = start_server(tmp_path_factory.mktemp("bench"))

    class Handle:
        pass

    Handle.address, Handle.process, Handle.log = address, proc, err.read_text
    yield Handle
    stop(proc)


def client(address, *args, timeout=40):
    return subprocess.run(GANNET + ["bench", "client", address, *args], capture_output=True,
                          text=True, timeout=timeout, env=ENV)


def interval_lines(stderr):
    return re.findall(r"^\s*\d+\.\d\d-\d+\.\d\d s\s+\S+ \S*B\s+\S+ [MG]bit/s\s+\d+", stderr, re.M)


def test_bytes_verified(server):
    r = client(server.address, "--bytes", "20MB")
    assert r.returncode == 0, r.stderr
    assert "client -> server, 20.0 MB, 1 stream" in r.stderr
    assert "verified (count + CRC32C)" in r.stderr
    assert re.search(r"goodput\s+[\d.]+ [MG]bit/s: 20\.0 MB delivered", r.stderr)
    assert re.search(r"cpu\s+client [\d.]+ s \+ server [\d.]+ s = [\d.]+ s, [\d.]+ CPU s/GB",
                     r.stderr)
    assert re.search(r"rtt\s+srtt [\d.]+ ms, min [\d.]+ ms", r.stderr)
    assert "FAILED" not in r.stderr
    assert r.stdout == ""
    assert re.search(r"test \w+ done: received 20\.0 MB .* verified", server.log())


def test_time_with_intervals(server):
    t0 = time.monotonic()
    r = client(server.address, "--time", "2", "--interval", "0.5")
    assert r.returncode == 0, r.stderr
    assert 1.9 < time.monotonic() - t0 < 15
    lines = interval_lines(r.stderr)
    assert 4 <= len(lines) <= 6, r.stderr  # 4 intervals + the summary line
    assert re.search(r"^interval\s+bytes\s+goodput\s+retr\s+cwnd\s+srtt$", r.stderr, re.M)
    assert "verified" in r.stderr


def test_reverse(server):
    r = client(server.address, "--reverse", "--bytes", "10MB", "--json")
    assert r.returncode == 0, r.stderr
    assert "server -> client (reverse)" in r.stderr
    d = json.loads(r.stdout)
    assert d["reverse"] is True and d["verified"] is True
    assert d["bytes"] == d["bytes_sent"] == 10_000_000
    assert d["intervals"] and sum(i["bytes"] for i in d["intervals"]) == 10_000_000
    assert d["cpu_seconds_server"] > 0


def test_parallel(server):
    r = client(server.address, "--parallel", "3", "--bytes", "9000001", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["parallel"] == 3 and len(d["streams"]) == 3
    assert [s["bytes"] for s in d["streams"]] == [3000001, 3000000, 3000000]
    assert all(s["verified"] for s in d["streams"])
    assert d["bytes"] == 9000001


def test_json_fields(server):
    r = client(server.address, "--time", "1", "--interval", "0.25", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)  # exactly one JSON object on stdout
    for key in ("bytes", "seconds", "goodput_bps", "retransmits", "cpu_seconds", "verified",
                "intervals", "parallel", "reverse", "mtu", "cc", "interval", "target_seconds",
                "srtt", "min_rtt", "cpu_seconds_per_gb", "test_id"):
        assert key in d, key
    assert d["verified"] is True and d["bytes"] > 0
    assert 0.9 < d["seconds"] < 5
    assert d["goodput_bps"] == pytest.approx(d["bytes"] * 8 / d["seconds"])
    assert d["target_seconds"] == 1.0 and d["interval"] == 0.25
    assert d["cpu_seconds"] == pytest.approx(d["cpu_seconds_client"] + d["cpu_seconds_server"])
    assert 3 <= len(d["intervals"]) <= 5
    for rec in d["intervals"]:
        assert {"start", "end", "bytes", "goodput_bps", "retransmits", "cwnd", "srtt"} <= set(rec)
        assert rec["end"] > rec["start"]
    assert sum(rec["bytes"] for rec in d["intervals"]) == d["bytes"]
    assert d["retransmits"] == sum(rec["retransmits"] for rec in d["intervals"])


def test_mtu_reflected(server):
    r = client(server.address, "--mtu", "1200", "--bytes", "5MB", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["mtu"] == 1200
    assert d["datagram_size"] == 1200  # pinned: stays there for the whole test
    # the short header and the checksum, inside the encryption envelope (docs/security.md)
    assert d["mss"] == 1200 - 24 - OVERHEAD
    assert "datagram 1200 B" in r.stderr and "pinned by --mtu" in r.stderr
    assert "mtu 1200" in server.log()


def test_unknown_cc_is_one_line(server):
    r = client(server.address, "--cc", "nosuchcc", "--bytes", "1MB")
    assert r.returncode in (1, 2)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "nosuchcc" in lines[0] and "Traceback" not in r.stderr
    for name in cc_registry.available():
        assert name in lines[0]


def test_connect_to_nothing_is_one_line():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = client(f"127.0.0.1:{port}", "--bytes", "1MB", "--connect-timeout", "3")
    assert r.returncode == 1
    errors = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("gannet:")]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"127.0.0.1:{port}" in errors[0]


def test_busy_server_rejects_second_test_and_once_exits(tmp_path):
    proc, address, err = start_server(tmp_path, "--once")
    try:
        # The first test must outlast the second client's start-up (a second
        # or more of Python imports on a loaded machine), or --once has
        # already ended the server and the second client is refused.
        first = subprocess.Popen(GANNET + ["bench", "client", address, "--time", "6"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=ENV)
        deadline = time.monotonic() + 10
        while "receive 6 s" not in err.read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        second = client(address, "--bytes", "1MB")
        assert second.returncode == 1
        assert re.search(r"^gannet: server busy: test \w+ .*is running", second.stderr, re.M)
        out, errtext = first.communicate(timeout=30)
        assert first.returncode == 0, errtext
        assert proc.wait(15) == 0  # --once: done after the one test
        assert "rejected" in err.read_text()
    finally:
        stop(proc)


def test_receiver_check_catches_corruption_and_short_streams():
    """The receiver's verdict (no subprocess): CRC32C of what arrived against the
    pattern, the count against the sender's and the stream's share."""
    import crc32c

    from gannet.apps.bench import PATTERN_LEN, Params, ReceiverResult, pattern

    params = Params(test_id="t", parallel=2, bytes=2 * PATTERN_LEN + 10)
    share = params.share(0)
    assert share == params.share(1) == PATTERN_LEN + 5
    streams = [(pattern("t", i) * 2)[:share] for i in range(2)]

    def result(datas):
        return ReceiverResult(received=[len(d) for d in datas],
                              crcs=[crc32c.crc32c(d) for d in datas], seconds=1.0)

    assert result(streams).verify(params, [share, share]) == [True, True]
    flipped = bytearray(streams[1])
    flipped[PATTERN_LEN + 2] ^= 1
    assert result([streams[0], bytes(flipped)]).verify(params, [share, share]) == [True, False]
    assert result([streams[1], streams[0]]).verify(params, [share, share]) == [False, False]
    short = streams[0][:-1]
    assert result([short, streams[1]]).verify(params, [share - 1, share]) == [False, True]
    assert result(streams).verify(params, [share + 1, share]) == [False, True]


def test_insecure_bench_for_plaintext_measurements(tmp_path):
    """`--insecure` on both ends measures the plaintext path, says so, and
    reports the plaintext MSS; one end insecure is refused with a reason."""
    proc, address, err = start_server(tmp_path, "--insecure")
    try:
        assert "WARNING: --insecure" in err.read_text()
        r = client(address, "--insecure", "--mtu", "1200", "--bytes", "2MB", "--json")
        assert r.returncode == 0, r.stderr
        assert "WARNING: --insecure" in r.stderr
        d = json.loads(r.stdout)
        assert d["verified"] is True and d["datagram_size"] == 1200 and d["mss"] == 1200 - 24
        r = client(address, "--bytes", "1MB", "--connect-timeout", "5s")
        assert r.returncode == 1 and "without encryption" in r.stderr, r.stderr
    finally:
        stop(proc)
