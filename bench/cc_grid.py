"""Congestion controllers compared on the simulator across a loss x RTT grid.

    .venv/bin/python bench/cc_grid.py [--size 4000000] [--seeds 3] [--bandwidth 10e6]

One direction is a bottleneck of `--bandwidth` bits/s with a drop-tail queue
of one bandwidth-delay product and independent random loss; the ACK path has
the same delay and no loss. Each cell is the mean over seeds 1..N of a
verified `run_transfer` (goodput as % of the link rate, retransmitted
segments, smoothed RTT at the end). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import types

from gannet.config import Config
from gannet.core.sender import Sender
from gannet.core.timers import PACING, unarmed
from gannet.sim import LinkConfig
from gannet.sim.scenario import run_transfer

CONTROLLERS = ("newreno", "cubic", "bbr")
LOSSES = (0.0, 0.01, 0.02, 0.05)
RTTS = (0.020, 0.100)


def pacer_fixed() -> bool:
    """Whether the connection's pacer already survives float rounding (see
    docs/congestion.md); if not, the run applies the one-line fix and says so."""
    snd = types.SimpleNamespace(_cc=types.SimpleNamespace(pacing_rate=440980.23784540064), _deadlines=unarmed())
    now = 0.08614731737752417
    Sender._pace_wait(snd, now, 3e-12)
    return snd._deadlines[PACING] > now


def patch_pacer() -> None:
    def _pace_wait(self, now: float, missing: float) -> None:
        rate = self._cc.pacing_rate or 1.0
        self._deadlines[PACING] = now + max(missing / rate, 1e-6)

    Sender._pace_wait = _pace_wait  # type: ignore[method-assign]


def cell(cc: str, loss: float, rtt: float, size: int, seeds: int, bw: float) -> tuple[float, float, float]:
    shares, retx, srtts = [], [], []
    for seed in range(1, seeds + 1):
        fwd = LinkConfig(delay=rtt / 2, bandwidth=bw, queue_bytes=int(bw / 8 * rtt), loss=loss)
        back = LinkConfig(delay=rtt / 2)
        r = run_transfer(seed, size, fwd, back, config=Config(congestion_control=cc), time_limit=900)
        if not r.ok:
            raise SystemExit(f"transfer failed: cc={cc} seed={seed} loss={loss} rtt={rtt}")
        shares.append(r.goodput * 8 / bw * 100)
        retx.append(r.client_stats["retransmits"])
        srtts.append((r.srtt or 0) * 1000)
    return statistics.mean(shares), statistics.mean(retx), statistics.mean(srtts)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=4_000_000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--bandwidth", type=float, default=10e6)
    args = ap.parse_args(argv)
    if not pacer_fixed():
        patch_pacer()
        print("note: Sender._pace_wait patched for this run (deadline at least 1 us ahead)", file=sys.stderr)
    print(f"{args.size} bytes, {args.bandwidth / 1e6:g} Mbit/s, 1-BDP queue, mean of seeds 1..{args.seeds}\n")
    print("| RTT | loss | " + " | ".join(f"{cc} goodput / retx / srtt" for cc in CONTROLLERS) + " |")
    print("|---|---|" + "---|" * len(CONTROLLERS))
    for rtt in RTTS:
        for loss in LOSSES:
            cells = []
            for cc in CONTROLLERS:
                share, retx, srtt = cell(cc, loss, rtt, args.size, args.seeds, args.bandwidth)
                cells.append(f"{share:.0f}% / {retx:.0f} / {srtt:.0f} ms")
            print(f"| {rtt * 1000:.0f} ms | {loss:.0%} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
