"""`gannet plot`: a qlog trace as a picture (matplotlib, the `plot` extra).

Four panels over one time axis, as tcptrace/xplot and qvis draw them:
- a time-sequence graph in Stevens' style: each data segment sent as a
  vertical stroke from its first to its last byte (new data in black,
  retransmissions in red, declared losses as red crosses), the cumulative
  ACK as a green step line, SACK blocks as purple strokes;
- the congestion window and bytes in flight;
- RTTs: smoothed, latest, minimum;
- goodput: bytes newly acknowledged per interval.
A receiver's trace is drawn from its side: data received, ACKs sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import qlog

DATA = "black"
RETRANS = "red"
ACKS = "green"
SACKS = "purple"


@dataclass
class Series:
    """What the picture is drawn from (and what the tests check it against)."""

    role: str = "?"
    sender_view: bool = True
    data: list[tuple[float, int, int]] = field(default_factory=list)  # (t, offset, end) new data
    resent: list[tuple[float, int, int]] = field(default_factory=list)
    lost: list[tuple[float, int]] = field(default_factory=list)
    acks: list[tuple[float, int]] = field(default_factory=list)  # (t, cumulative ack)
    sacks: list[tuple[float, int, int]] = field(default_factory=list)
    cwnd: list[tuple[float, int]] = field(default_factory=list)
    inflight: list[tuple[float, int]] = field(default_factory=list)
    srtt: list[tuple[float, float]] = field(default_factory=list)
    latest: list[tuple[float, float]] = field(default_factory=list)
    min_rtt: list[tuple[float, float]] = field(default_factory=list)
    t_end: float = 0.0

    @property
    def top(self) -> int:
        # the stream's end (an ACK of the FIN reaches one past it)
        return max((e for _, _, e in self.data), default=max((a for _, a in self.acks), default=0))


def load(path: str) -> Series:
    header, events = qlog.read(path)
    s = Series(role=header.get("trace", {}).get("vantage_point", {}).get("type", "?"))
    sent_bytes = sum(f.get("length", 0) for e in events if e.get("name") == "transport:packet_sent"
                     for f in e["data"].get("frames", ()) if f.get("frame_type") == "stream")
    recv_bytes = sum(f.get("length", 0) for e in events if e.get("name") == "transport:packet_received"
                     for f in e["data"].get("frames", ()) if f.get("frame_type") == "stream")
    s.sender_view = sent_bytes >= recv_bytes
    data_event = "transport:packet_sent" if s.sender_view else "transport:packet_received"
    ack_event = "transport:packet_received" if s.sender_view else "transport:packet_sent"
    high = 0
    for e in events:
        t = e.get("time", 0.0) / 1000.0
        name = e.get("name")
        d = e.get("data", {})
        if name in (data_event, ack_event):
            s.t_end = max(s.t_end, t)  # the picture ends with the traffic, not with TIME-WAIT
        if name == data_event:
            for f in d.get("frames", ()):
                if f.get("frame_type") == "stream" and f.get("length"):
                    start, end = f["offset"], f["offset"] + f["length"]
                    if end <= high:
                        s.resent.append((t, start, end))
                    else:
                        s.data.append((t, start, end))
                        high = end
        if name == ack_event:
            for f in d.get("frames", ()):
                if f.get("frame_type") == "ack" and f.get("acked_ranges"):
                    ranges = f["acked_ranges"]
                    s.acks.append((t, ranges[0][1] + 1 if ranges[0][0] == 0 else 0))
                    for left, right in ranges[1:]:
                        s.sacks.append((t, left, right + 1))
        elif name == "recovery:packet_lost":
            for f in d.get("frames", ()):
                if f.get("frame_type") == "stream":
                    s.lost.append((t, f["offset"]))
        elif name == "recovery:metrics_updated":
            if "congestion_window" in d:
                s.cwnd.append((t, d["congestion_window"]))
            if "bytes_in_flight" in d:
                s.inflight.append((t, d["bytes_in_flight"]))
            if "smoothed_rtt" in d:
                s.srtt.append((t, d["smoothed_rtt"]))
            if "latest_rtt" in d:
                s.latest.append((t, d["latest_rtt"]))
            if "min_rtt" in d:
                s.min_rtt.append((t, d["min_rtt"]))
    return s


def goodput(acks: list[tuple[float, int]], t_end: float, bins: int = 25) -> list[tuple[float, float]]:
    """(bin middle, bits per second newly acknowledged in the bin)."""
    if not acks or t_end <= 0:
        return []
    width = t_end / bins
    out = []
    prev = 0
    i = 0
    for b in range(bins):
        hi = (b + 1) * width
        top = prev
        while i < len(acks) and acks[i][0] <= hi:
            top = max(top, acks[i][1])
            i += 1
        out.append(((b + 0.5) * width, (top - prev) * 8 / width))
        prev = top
    return out


def _mb(n: float) -> float:
    return n / 1e6


def render(path: str, out: str, *, title: str | None = None, dpi: int = 100) -> dict:
    """Draw the trace at `path` into the PNG `out`; returns the panels'
    axis ranges (what a test compares with the trace)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise RuntimeError("gannet plot needs matplotlib: pip install 'gannet[plot]'") from exc
    s = load(path)
    fig = Figure(figsize=(11, 12), dpi=dpi)
    FigureCanvasAgg(fig)
    ts, cw, rt, gp = fig.subplots(4, 1, sharex=True, height_ratios=(3, 1.2, 1.2, 1.2))
    fig.suptitle(title or f"{path.rsplit('/', 1)[-1]} ({s.role}, "
                 f"{'sender' if s.sender_view else 'receiver'} side)")
    # 1. time-sequence graph
    if s.data:
        ts.vlines([t for t, _, _ in s.data], [_mb(a) for _, a, _ in s.data], [_mb(b) for _, _, b in s.data],
                  colors=DATA, linewidth=1.2, label="data sent" if s.sender_view else "data received")
    if s.resent:
        ts.vlines([t for t, _, _ in s.resent], [_mb(a) for _, a, _ in s.resent],
                  [_mb(b) for _, _, b in s.resent], colors=RETRANS, linewidth=2.5, label="retransmission",
                  zorder=5)
    if s.lost:
        ts.plot([t for t, _ in s.lost], [_mb(o) for _, o in s.lost], "x", color=RETRANS, markersize=5,
                label="declared lost")
    if s.acks:
        ts.step([t for t, _ in s.acks], [_mb(a) for _, a in s.acks], where="post", color=ACKS,
                linewidth=1.0, label="cumulative ACK")
    if s.sacks:
        ts.vlines([t for t, _, _ in s.sacks], [_mb(a) for _, a, _ in s.sacks], [_mb(b) for _, _, b in s.sacks],
                  colors=SACKS, linewidth=0.5, alpha=0.5, label="SACK block")
    ts.set_ylabel("stream offset (MB)")
    ts.set_ylim(0, _mb(s.top) * 1.02 or 1)
    ts.set_title("time-sequence graph")
    ts.legend(loc="upper left", fontsize="small")
    ts.grid(alpha=0.3)
    for series in (s.cwnd, s.inflight, s.srtt, s.latest, s.min_rtt):
        if series and series[-1][0] < s.t_end:
            series.append((s.t_end, series[-1][1]))  # type: ignore[arg-type]  # a value holds until it changes
    # 2. windows
    if s.cwnd:
        cw.step([t for t, _ in s.cwnd], [c / 1024 for _, c in s.cwnd], where="post", label="cwnd")
    if s.inflight:
        cw.step([t for t, _ in s.inflight], [c / 1024 for _, c in s.inflight], where="post",
                label="bytes in flight", alpha=0.7)
    cw.set_ylabel("KiB")
    cw.legend(loc="upper left", fontsize="small")
    cw.grid(alpha=0.3)
    # 3. RTT
    for series, label in ((s.latest, "latest RTT"), (s.srtt, "smoothed RTT"), (s.min_rtt, "min RTT")):
        if series:
            rt.step([t for t, _ in series], [v for _, v in series], where="post", label=label)
    rt.set_ylabel("ms")
    rt.legend(loc="upper left", fontsize="small")
    rt.grid(alpha=0.3)
    # 4. goodput
    g = goodput(s.acks, s.t_end)
    if g:
        gp.bar([t for t, _ in g], [v / 1e6 for _, v in g], width=s.t_end / len(g) * 0.9, color="tab:blue")
    gp.set_ylabel("goodput (Mbit/s)")
    gp.set_xlabel("time (s)")
    gp.grid(alpha=0.3)
    ts.set_xlim(0, s.t_end * 1.01 or 1)
    fig.tight_layout()
    fig.savefig(out, format="png")
    return {"xlim": ts.get_xlim(), "ylim": ts.get_ylim(), "points": len(s.data) + len(s.resent),
            "resent": len(s.resent), "acks": len(s.acks), "t_end": s.t_end, "top": s.top}
