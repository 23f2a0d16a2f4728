"""Repeated rounds of bench/compare.py (`--repeat N`).

The machine is shared and its speed drifts by tens of percent within
minutes, so one run proves little. Every round runs all the transports
again; a ratio (x TCP, p50 x UDP) is taken inside its round, where the peers
shared the conditions, and only then summarised: the median over the rounds,
with the range beside it.
"""

from __future__ import annotations

from statistics import median
from typing import Any

FIGURES = ("goodput_MBps", "x_tcp", "cpu_s_per_GB", "p50_us", "p50_x_udp")
COLUMNS = ["Transport", "Kind", "Rounds", "Goodput MB/s", "x TCP", "CPU s/GB",
           "RTT p50 us", "p50 x UDP"]


def _peer(results: list[dict[str, Any]], name: str, workload: str, key: str) -> float | None:
    return next(((r.get(workload) or {}).get(key) for r in results if r["name"] == name), None)


def _ratio(value: float | None, peer: float | None) -> float | None:
    return value / peer if value and peer else None


def summarize(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per transport, in the order they ran: for each figure its
    median, min, max and the number of rounds that gave it; `failed` counts
    rounds with a verification failure or an error."""
    rows: dict[str, dict[str, Any]] = {}
    for results in rounds:
        tcp = _peer(results, "tcp", "bulk", "goodput_MBps")
        udp = _peer(results, "udp", "pingpong", "p50_us")
        for r in results:
            row = rows.setdefault(r["name"], {
                "name": r["name"], "label": r["label"], "kind": r["kind"],
                "rounds": 0, "failed": 0, "samples": {k: [] for k in FIGURES}})
            row["rounds"] += 1
            if r.get("unavailable"):
                row["unavailable"] = r["unavailable"]
                continue
            b, pp = r.get("bulk") or {}, r.get("pingpong") or {}
            if b.get("error") or pp.get("error"):
                row["failed"] += 1
                continue
            values = {
                "goodput_MBps": b.get("goodput_MBps"),
                "x_tcp": _ratio(b.get("goodput_MBps"), tcp),
                "cpu_s_per_GB": b.get("cpu_s_per_GB"),
                "p50_us": pp.get("p50_us"),
                "p50_x_udp": _ratio(pp.get("p50_us"), udp),
            }
            for k, v in values.items():
                if v:
                    row["samples"][k].append(v)
    out = []
    for row in rows.values():
        samples = row.pop("samples")
        for k, vals in samples.items():
            if vals:
                row[k] = {"median": median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}
        out.append(row)
    return out


def _cell(row: dict[str, Any], key: str, fmt: str) -> str:
    v = row.get(key)
    if not v:
        return "-"
    text = format(v["median"], fmt)
    if v["n"] > 1:
        text += f" ({format(v['min'], fmt)}-{format(v['max'], fmt)})"
    return text


def summary_rows(summary: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in summary:
        if r.get("unavailable"):
            rows.append([r["label"], r["kind"], "not available", "-", "-", "-", "-", "-"])
            continue
        n = r["rounds"] - r["failed"]
        rounds = f"{n} of {r['rounds']}" if r["failed"] else str(n)
        rows.append([r["label"], r["kind"], rounds,
                     _cell(r, "goodput_MBps", ",.1f"), _cell(r, "x_tcp", ".3f"),
                     _cell(r, "cpu_s_per_GB", ".2f"), _cell(r, "p50_us", ".0f"),
                     _cell(r, "p50_x_udp", ".2f")])
    return rows


def summary_markdown(summary: list[dict[str, Any]]) -> str:
    out = ["Median over the rounds (range in brackets); ratios are taken inside each round.", "",
           "| " + " | ".join(COLUMNS) + " |",
           "|" + "|".join(["---"] * 3 + ["---:"] * 5) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in summary_rows(summary)]
    return "\n".join(out) + "\n"
