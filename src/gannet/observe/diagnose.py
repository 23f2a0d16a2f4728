"""What limited a transfer, with the numbers that show it.

The evidence is a connection's info (observe/info.py) at the end of the
transfer - above all the seconds its sender spent limited by each cause
(observe/limits.py) - plus, when known, the CPU time the process used. The
same function judges a live connection (`gannet bench`, `gannet send`) and
a qlog trace (`gannet diagnose`, which reads the trace's
gannet:connection_summary, or rebuilds the times from its
gannet:limits_updated events when the process died before writing one).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import qlog

CPU_BOUND = 0.85  # a process busy this share of the wall-clock time is CPU-bound
SMALL_MTU = 1500  # datagrams this size or smaller: a path without jumbo frames
WINDOW_BOUND = 0.8  # delivery rate x min RTT within this share of the peer's window: window-bound


@dataclass
class Verdict:
    cause: str
    """"receiver window (slow reader)", "receiver window (too small)",
    "congestion window after loss", "congestion window", "pacing",
    "application", "CPU", "path MTU" or "unknown"."""
    text: str
    numbers: dict = field(default_factory=dict)

    def line(self) -> str:
        return f"limited by {self.cause}: {self.text}"


def _pct(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.0f}%" if whole > 0 else "0%"


def _rate(bps: float | None) -> str:
    if not bps:
        return "?"
    bits = bps * 8
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bits >= scale:
            return f"{bits / scale:.1f} {unit}"
    return f"{bits:.0f} bit/s"


def _kb(n: float | None) -> str:
    return "?" if n is None else f"{n / 1024:.0f} KiB"


def judge(info: dict, *, seconds: float | None = None, cpu_seconds: float | None = None) -> Verdict:
    """The verdict for a sender's info dict (ConnectionInfo.as_dict(), maybe
    with "cpu_time"). `seconds`/`cpu_seconds`: the transfer's wall-clock and
    the process's CPU time, when known (for the CPU verdict)."""
    times = {
        "receiver window": info.get("rwnd_limited_time") or 0.0,
        "congestion window": info.get("cwnd_limited_time") or 0.0,
        "pacing": info.get("pacing_limited_time") or 0.0,
        "application": info.get("app_limited_time") or 0.0,
    }
    limited = sum(times.values())
    busy = info.get("busy_time") or 0.0
    whole = max(limited, busy)
    seconds = seconds if seconds is not None else info.get("age")
    cpu = cpu_seconds if cpu_seconds is not None else info.get("cpu_time")
    retrans = info.get("retransmitted_bytes") or 0
    sent = info.get("bytes_sent") or 0
    losses = (info.get("fast_recoveries") or 0) + (info.get("timeouts") or 0)
    numbers = {k.replace(" ", "_") + "_s": round(v, 4) for k, v in times.items()}
    numbers.update(busy_s=round(busy, 4), retransmitted_bytes=retrans, bytes_sent=sent,
                   path_mtu=info.get("path_mtu"), srtt=info.get("srtt"), min_rtt=info.get("min_rtt"))
    mtu = info.get("path_mtu") or 0
    if cpu is not None and seconds:
        numbers["cpu_share"] = round(cpu / seconds, 3)
    if info.get("rwnd_limited_time") is None and info.get("busy_time") is None:
        return Verdict("unknown", "limits were not tracked (track_limits off)", numbers)
    if whole <= 0:
        return Verdict("unknown", "the sender never had data to send", numbers)
    cause = max(times, key=lambda name: times[name])
    share = times[cause] / whole
    if cpu is not None and seconds and cpu / seconds >= CPU_BOUND and cause != "receiver window" \
            and not (cause == "congestion window" and losses) and cause != "pacing":
        if mtu and mtu <= SMALL_MTU:
            return Verdict("path MTU", f"CPU busy {cpu / seconds:.0%} of the time sending "
                           f"{mtu}-byte datagrams (the path carries no larger ones)", numbers)
        return Verdict("CPU", f"the process was busy {cpu / seconds:.0%} of the time "
                       f"({cpu:.2f} s CPU in {seconds:.2f} s)", numbers)
    if share < 0.2:
        return Verdict("unknown", f"no cause held the sender back more than {share:.0%} of "
                       f"{whole:.2f} s busy", numbers)
    peer = info.get("max_snd_wnd") or 0
    rate = info.get("delivery_rate") or 0.0
    min_rtt = info.get("min_rtt") or 0.0
    if cause in ("pacing", "congestion window") and not losses and peer and rate * min_rtt >= WINDOW_BOUND * peer:
        # A model-based sender paces at the rate it measures; when that rate
        # is one peer window per round trip, the window set it.
        return Verdict("receiver window (too small)", (
            f"the measured rate {_rate(rate)} is the peer's window of {_kb(peer)} per "
            f"{min_rtt * 1000:.1f} ms round trip: its receive window is too small for the path"),
            {**numbers, "max_peer_window": peer, "delivery_rate": rate})
    if cause == "receiver window":
        zero = info.get("zero_window_events") or 0
        peer = info.get("max_snd_wnd")
        shrunk = info.get("rwnd_shrunk_time") or 0.0
        head = f"{_pct(times[cause], whole)} of {whole:.2f} s"
        if zero or shrunk >= 0.3 * times[cause]:
            text = (f"{head}; the peer's window shrank below half of its {_kb(peer)} "
                    f"{_pct(shrunk, times[cause])} of that time"
                    + (f" and closed {zero} times" if zero else "")
                    + ": the receiving application reads slowly")
            cause = "receiver window (slow reader)"
        else:
            text = (f"{head}; the peer offers at most {_kb(peer)}, always whole: "
                    "its receive window is too small for the path")
            cause = "receiver window (too small)"
        numbers.update(zero_window_events=zero, max_peer_window=peer)
        return Verdict(cause, text, numbers)
    if cause == "congestion window":
        if losses or retrans:
            text = (f"{_pct(times[cause], whole)} of {whole:.2f} s; {losses} loss episodes "
                    f"({info.get('fast_recoveries') or 0} recoveries, {info.get('timeouts') or 0} timeouts), "
                    f"{retrans} bytes resent ({_pct(retrans, sent)} of {sent}); cwnd {_kb(info.get('cwnd'))}")
            return Verdict("congestion window after loss", text, numbers)
        return Verdict(cause, f"{_pct(times[cause], whole)} of {whole:.2f} s, no loss: the window "
                       f"was still growing (cwnd {_kb(info.get('cwnd'))})", numbers)
    if cause == "pacing":
        rate = info.get("pacing_rate")
        est = info.get("delivery_rate")
        text = (f"{_pct(times[cause], whole)} of {whole:.2f} s paced at {_rate(rate)}"
                + (f"; the measured bottleneck is {_rate(est)}: the path's rate" if est else ""))
        numbers.update(pacing_rate=rate, delivery_rate=est)
        return Verdict(cause, text, numbers)
    return Verdict("application", f"nothing to send {_pct(times[cause], whole)} of {whole:.2f} s: "
                   "the sending application wrote too slowly", numbers)


def from_qlog(path: str) -> tuple[Verdict, dict]:
    """(verdict, the info it judged) for one qlog file. ValueError if the
    file is not a Gannet qlog trace."""
    header, events = qlog.read(path)
    summary = None
    for ev in qlog.iter_events(events, "gannet:connection_summary"):
        summary = dict(ev.get("data", {}))
    if summary is None:
        summary = _rebuild(events)
    return judge(summary), summary


def _rebuild(events: list[dict]) -> dict:
    """The limited times from the gannet:limits_updated timeline, and the
    loss counts from the recovery events (a trace without a summary)."""
    key = {"app": "app_limited_time", "rwnd": "rwnd_limited_time", "cwnd": "cwnd_limited_time",
           "pacing": "pacing_limited_time"}
    info: dict = {v: 0.0 for v in key.values()}
    info["busy_time"] = 0.0
    last_t, last = None, None
    lost_bytes = 0
    for ev in events:
        t = ev.get("time", 0.0) / 1000.0
        name = ev.get("name")
        if name == "gannet:limits_updated":
            if last is not None and last in key:
                info[key[last]] += t - last_t
            if last not in (None, "idle", "app"):
                info["busy_time"] += t - last_t
            last_t, last = t, ev["data"].get("limit")
            info["cwnd"] = ev["data"].get("cwnd")
            info["max_snd_wnd"] = max(info.get("max_snd_wnd") or 0, ev["data"].get("peer_window") or 0)
            if ev["data"].get("pacing_rate"):
                info["pacing_rate"] = ev["data"]["pacing_rate"] / 8
        elif name == "recovery:packet_lost":
            lost_bytes += sum(f.get("length", 0) for f in ev.get("data", {}).get("frames", ()))
        elif name == "transport:packet_sent":
            info["bytes_sent"] = info.get("bytes_sent", 0) + ev["data"].get("raw", {}).get("payload_length", 0)
    info["retransmitted_bytes"] = lost_bytes
    info["fast_recoveries"] = 1 if lost_bytes else 0
    return info
