"""Smoke test of the side-by-side benchmark harness (bench/compare.py).

Quickest mode, kernel TCP and raw UDP only (no bench-only packages needed),
a few MiB: the harness must verify a clean stream, report a corrupted one,
and drive the Gannet runner through an asyncio-shaped API when one exists.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPARE = ROOT / "bench" / "compare.py"
QUICK = ["--quick", "--bytes", "4M", "--count", "50", "--timeout", "20"]


def run_compare(tmp_path: Path, *args: str, env: dict | None = None):
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(COMPARE), *QUICK, *args, "--json", str(out)],
        capture_output=True, text=True, timeout=60, env=env,
    )
    data = json.loads(out.read_text()) if out.exists() else None
    return proc, data


def by_name(data: dict) -> dict:
    return {r["name"]: r for r in data["results"]}


@pytest.mark.timeout(60)
def test_tcp_and_udp_verify(tmp_path):
    proc, data = run_compare(tmp_path, "--transports", "tcp,udp")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = by_name(data)
    tcp = res["tcp"]["bulk"]
    assert tcp["verified"] is True
    assert tcp["delivered_bytes"] == 4 << 20
    assert tcp["crc_sent"] == tcp["crc_received"]
    assert tcp["goodput_MBps"] > 0 and tcp["cpu_s_per_GB"] > 0
    udp = res["udp"]["bulk"]
    assert udp["verified"] is None  # a ceiling, not a reliable transport
    assert 0 < udp["delivered_bytes"] <= udp["sent_bytes"]
    for name in ("tcp", "udp"):
        pp = res[name]["pingpong"]
        assert pp["rtts"] == 50 and pp["bad_echoes"] == 0
        assert 0 < pp["p50_us"] <= pp["p90_us"] <= pp["p99_us"]
    assert "kernel TCP" in proc.stdout


@pytest.mark.timeout(60)
def test_corrupted_stream_is_reported(tmp_path):
    proc, data = run_compare(tmp_path, "--transports", "tcp", "--no-pingpong",
                             "--corrupt-at", "1000003")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    bulk = by_name(data)["tcp"]["bulk"]
    assert bulk["verified"] is False
    assert bulk["delivered_bytes"] == bulk["sent_bytes"]  # same count, different bytes
    assert bulk["crc_sent"] != bulk["crc_received"]
    assert "VERIFICATION FAILED" in proc.stdout
    assert "FAIL" in proc.stdout


@pytest.mark.timeout(120)
@pytest.mark.parametrize("api", ["streams", "socket"])
def test_gannet_runner(tmp_path, api):
    # Both APIs, with the datagram size pinned and the controller chosen.
    proc, data = run_compare(tmp_path, "--transports", "gannet", "--gannet-api", api,
                             "--gannet-mtu", "1200", "--gannet-cc", "cubic")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    g = by_name(data)["gannet"]
    assert g["bulk"]["verified"] is True
    assert g["bulk"]["delivered_bytes"] == 4 << 20
    assert g["pingpong"]["rtts"] == 50 and g["pingpong"]["bad_echoes"] == 0
    assert g["bulk"]["api"] == g["pingpong"]["api"] == api


@pytest.mark.timeout(60)
def test_asyncio_echo_row_has_a_ping_pong_and_no_bulk(tmp_path):
    proc, data = run_compare(tmp_path, "--transports", "udp,udpaio")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    aio = by_name(data)["udpaio"]
    assert "bulk" not in aio  # the event loop's floor is a latency figure only
    pp = aio["pingpong"]
    assert pp["rtts"] == 50 and pp["bad_echoes"] == 0
    assert 0 < pp["p50_us"] <= pp["p99_us"]
    assert "UDP asyncio echo" in proc.stdout


@pytest.mark.timeout(90)
def test_repeat_runs_rounds_and_summarises_them(tmp_path):
    proc, data = run_compare(tmp_path, "--transports", "tcp,udp", "--no-pingpong", "--repeat", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(data["rounds"]) == 2 and "results" not in data
    for res in data["rounds"]:
        assert {r["name"] for r in res} == {"tcp", "udp"}
        assert by_name({"results": res})["tcp"]["bulk"]["verified"] is True
    tcp = {r["name"]: r for r in data["summary"]}["tcp"]
    assert tcp["rounds"] == 2 and tcp["goodput_MBps"]["n"] == 2
    assert tcp["goodput_MBps"]["min"] <= tcp["goodput_MBps"]["median"] <= tcp["goodput_MBps"]["max"]
    assert "Median of 2 rounds" in proc.stdout and "round 2 of 2" in proc.stdout


def test_repeat_must_be_positive(tmp_path):
    proc, _ = run_compare(tmp_path, "--repeat", "0")
    assert proc.returncode == 2 and "--repeat must be at least 1" in proc.stderr


@pytest.mark.timeout(120)
def test_gannet_counters_in_the_json(tmp_path):
    """The Gannet runner reports each round's counters (bench/gannet_counters.py):
    both ends' connection and adapter counts, and with --gannet-sample-ms the
    sender's sampled timeline and its summary."""
    proc, data = run_compare(tmp_path, "--transports", "gannet-insecure", "--no-pingpong",
                             "--gannet-sample-ms", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bulk = by_name(data)["gannet-insecure"]["bulk"]
    assert bulk["verified"] is True
    snd, rcv = bulk["counters"]["sender"], bulk["counters"]["receiver"]
    assert snd["stats"]["bytes_sent"] >= 4 << 20
    assert rcv["stats"]["bytes_received"] == 4 << 20
    assert rcv["io"]["datagrams_received"] >= snd["stats"]["segments_sent"] - snd["stats"]["retransmits"]
    assert snd["io"]["datagrams_received"] == snd["stats"]["segments_received"] > 0  # the ACKs
    assert snd["handshake_s"] > 0 and bulk["cpu_s_client"] > 0 and bulk["cpu_s_server"] > 0
    # each process's user and system CPU, apart (the slow rounds' extra is system time)
    for end in (snd, rcv):
        ru = end["rusage"]
        assert ru["utime"] > 0 and ru["stime"] >= 0
    sampled = snd["sampled"]
    assert sampled["samples"] == len(sampled["timeline"]) or sampled["samples"] > 200
    assert sum(sampled["limits"].values()) == sampled["samples"]
    assert sampled["top_datagram"] == max(row[2] for row in sampled["timeline"])
