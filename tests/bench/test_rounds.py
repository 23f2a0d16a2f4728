"""bench/rounds.py: repeated rounds summarised as medians of same-round ratios."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import rounds  # noqa: E402


def row(name, goodput=None, p50=None, **extra):
    r = {"name": name, "label": name.upper(), "kind": "reliable"}
    if goodput is not None:
        r["bulk"] = {"goodput_MBps": goodput, "cpu_s_per_GB": 1.0}
    if p50 is not None:
        r["pingpong"] = {"p50_us": p50}
    r.update(extra)
    return r


def test_ratios_are_taken_inside_each_round_before_the_median():
    data = [
        [row("tcp", 100.0), row("udp", p50=10.0), row("gannet", 50.0, p50=30.0)],
        [row("tcp", 200.0), row("udp", p50=40.0), row("gannet", 60.0, p50=60.0)],
        [row("tcp", 150.0), row("udp", p50=20.0), row("gannet", 90.0, p50=50.0)],
    ]
    g = {r["name"]: r for r in rounds.summarize(data)}["gannet"]
    # per round: 0.5, 0.3, 0.6 -> 0.5 (the ratio of the medians would be 60 / 150 = 0.4)
    assert g["x_tcp"] == {"median": 0.5, "min": 0.3, "max": 0.6, "n": 3}
    # per round: 3.0, 1.5, 2.5 -> 2.5
    assert g["p50_x_udp"]["median"] == 2.5
    assert g["goodput_MBps"]["median"] == 60.0 and g["rounds"] == 3 and g["failed"] == 0


def test_a_failed_round_is_counted_and_left_out():
    bad = row("gannet", 10.0)
    bad["bulk"]["error"] = "VERIFICATION FAILED"
    data = [[row("tcp", 100.0), row("gannet", 50.0)], [row("tcp", 100.0), bad]]
    g = {r["name"]: r for r in rounds.summarize(data)}["gannet"]
    assert g["failed"] == 1
    assert g["goodput_MBps"]["n"] == 1 and g["goodput_MBps"]["median"] == 50.0
    cells = {r[0]: r for r in rounds.summary_rows(rounds.summarize(data))}
    assert cells["GANNET"][2] == "1 of 2"


def test_unavailable_transport_and_one_round_cells():
    data = [[row("tcp", 100.0), row("kcp", unavailable="kcp not installed")]]
    out = {r[0]: r for r in rounds.summary_rows(rounds.summarize(data))}
    assert out["KCP"][2] == "not available"
    assert out["TCP"][3] == "100.0"  # one sample: no range
    assert "| TCP | reliable | 1 |" in rounds.summary_markdown(rounds.summarize(data))
