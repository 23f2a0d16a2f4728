"""Per-round counters of one Gannet connection, for bench/run_gannet.py.

`counters(writer)` reads what the connection and its endpoint counted
(the core's ConnectionStats, RACK-TLP's, the adapter's IoStats, BBR's
model at the end) and the process's context switches, cycle collections
and user and system CPU; `Sampler` reads the connection's state every
`interval` seconds of the event loop while the transfer runs (off by default: it
wakes the loop), and summarises the timeline: when the largest datagram
size was in use, when the rate first reached most of its best, what was
acknowledged by 50, 100 and 200 ms, and what each sample found the
sender waiting for.
"""

from __future__ import annotations

import asyncio
import gc
import resource
import time
from typing import Any

LIMITS = ("cwnd", "rwnd", "app", "pacing", "busy")


def counters(writer) -> dict[str, Any]:
    conn = writer.get_extra_info("connection")
    aep = writer.get_extra_info("endpoint")
    out: dict[str, Any] = {"stats": conn.stats.as_dict()}
    io = getattr(aep, "io_stats", None)
    if io is not None:
        out["io"] = {k: getattr(io, k) for k in dir(io)
                     if not k.startswith("_") and isinstance(getattr(io, k), int)}
    rack = conn.loss.rack
    out["rack"] = {k: getattr(rack, k, 0) for k in ("probes", "reorder_timeouts", "spurious", "tlp_losses")}
    out["rack"]["reordering_seen"] = bool(getattr(rack, "reordering_seen", False))
    cc = conn.cc
    out["cc"] = {"name": getattr(cc, "name", ""), "cwnd": cc.cwnd, "pacing_rate": cc.pacing_rate,
                 "btl_bw": getattr(cc, "btl_bw", None), "state": getattr(cc, "state", None)}
    out["max_datagram_size"] = conn.max_datagram_size
    out["min_rtt"] = conn.rtt.min_rtt
    out["srtt"] = conn.rtt.srtt
    # (user and system CPU apart, since process start: a slow round's
    # extra CPU is the sender's system time, docs/benchmarks-history.md)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out["rusage"] = {"nvcsw": ru.ru_nvcsw, "nivcsw": ru.ru_nivcsw, "minflt": ru.ru_minflt,
                     "utime": ru.ru_utime, "stime": ru.ru_stime}
    # The cycle collector's passes by generation since the process started
    # (its share of a bulk transfer's CPU was about 3 %).
    out["gc_collections"] = [g["collections"] for g in gc.get_stats()]
    return out


class Sampler:
    """The sender's state every `interval` seconds: (t since the connection
    opened, acked bytes, datagram size, cwnd, pipe, what it waits for, the
    congestion controller's state)."""

    def __init__(self, writer, interval: float) -> None:
        self.conn = writer.get_extra_info("connection")
        self.interval = interval
        self.t0 = time.monotonic()
        self.rows: list[tuple] = []
        self.late = 0.0  # the loop's lateness summed (how late each sample woke)
        self.task = asyncio.get_running_loop().create_task(self._run())

    def _limit(self) -> str:
        conn = self.conn
        snd = conn.snd
        mss = conn.mss
        queue = snd.sndbuf.end - max(snd.snd_una, snd.sndbuf.start) - (snd.snd_nxt - snd.snd_una)
        if queue <= 0:
            return "app"
        if snd.snd_una + snd.snd_wnd - snd.snd_nxt < mss:
            return "rwnd"
        if snd.pipe() + mss > snd.cwnd():
            return "cwnd"
        if snd._pacing_due is not None:
            return "pacing"
        return "busy"

    async def _run(self) -> None:
        conn, snd = self.conn, self.conn.snd
        nxt = time.monotonic() + self.interval
        while True:
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
            now = time.monotonic()
            self.late += max(0.0, now - nxt)
            nxt = now + self.interval
            self.rows.append((round(now - self.t0, 5), snd.snd_una - snd.iss, conn.max_datagram_size,
                              snd.cwnd(), snd.pipe(), self._limit(), str(getattr(conn.cc, "state", ""))))

    def stop(self) -> dict[str, Any]:
        self.task.cancel()
        rows = self.rows
        out: dict[str, Any] = {"samples": len(rows), "late_s": round(self.late, 4)}
        if not rows:
            return out
        top = max(r[2] for r in rows)
        out["top_datagram"] = top
        out["t_top_datagram"] = next(r[0] for r in rows if r[2] == top)
        out["limits"] = {k: sum(1 for r in rows if r[5] == k) for k in LIMITS}
        out["cwnd_max"] = max(r[3] for r in rows)
        out["pipe_max"] = max(r[4] for r in rows)
        # Rate over each 10 ms: when it first reached 80 % of the best.
        rates = []
        j = 0
        for i, r in enumerate(rows):
            while rows[j][0] < r[0] - 0.010:
                j += 1
            if r[0] - rows[j][0] >= 0.005:
                rates.append((r[0], (r[1] - rows[j][1]) / (r[0] - rows[j][0])))
        if rates:
            best = max(x for _, x in rates)
            out["best_rate_MBps"] = round(best / 1e6, 1)
            out["t_80pct_rate"] = next(t for t, x in rates if x >= 0.8 * best)
        for ms in (50, 100, 200):  # what was acknowledged by then: the start's cost
            past = [r[1] for r in rows if r[0] <= ms / 1e3]
            out[f"acked_at_{ms}ms"] = past[-1] if past else 0
        out["timeline"] = rows[:: max(1, len(rows) // 200)]
        return out
