"""qlog traces: one file per connection, JSON-SEQ (RFC 7464).

The serialization and the events are those of the IETF qlog drafts
(draft-ietf-quic-qlog-main-schema, version 0.3 of the format that qvis
loads, with the QUIC and recovery event definitions of
draft-ietf-quic-qlog-quic-events), mapped to Gannet:

- a file is a header record (`qlog_version`, `qlog_format` "JSON-SEQ",
  `trace` with `vantage_point` and `common_fields`), then one record per
  event (`time` in milliseconds since `reference_time`, `name`, `data`),
  each record preceded by the record separator 0x1E and ended by a newline;
- `transport:packet_sent` / `transport:packet_received`: one per datagram;
  `header.packet_number` counts datagrams per direction (Gannet has no
  packet numbers), `header.packet_type` is "initial" for SYNs and "1RTT"
  otherwise; frames: "stream" (stream 0, `offset` and `length` in bytes
  from the start of the stream, `fin`), "ack" (`acked_ranges`: byte ranges
  of the stream, the cumulative ACK first, then SACK blocks: Gannet
  acknowledges bytes, not packets), "connection_close" for RST;
  `gannet` carries the wire fields (flags, window, connection IDs, form);
- `recovery:metrics_updated` (cwnd, bytes in flight, RTTs, ssthresh,
  pacing rate) whenever one of them changed;
- `recovery:packet_lost` per byte range declared lost (stream frame
  `offset`/`length`, a `trigger`);
- `recovery:congestion_state_updated` on each change of the controller's
  phase (`new`, `old`);
- `connectivity:mtu_updated` when PMTUD changes the datagram size;
- `connectivity:connection_started`, `connectivity:connection_state_updated`;
- `gannet:limits_updated` when the sender's limit changes (observe/limits.py)
  and `gannet:connection_summary` at the end: the ConnectionInfo, what
  `gannet diagnose` reads.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

RS = "\x1e"
QLOG_VERSION = "0.3"
QLOG_FORMAT = "JSON-SEQ"
SUFFIX = ".sqlog"
FLUSH_BYTES = 256 * 1024

# Required members per record kind, from the schema (the header record's,
# every event's, and per event name the data members the event definitions
# mark as not optional). `validate` checks a file against these.
REQUIRED_HEADER = ("qlog_version", "qlog_format", "trace")
REQUIRED_TRACE = ("vantage_point",)
REQUIRED_EVENT = ("time", "name", "data")
REQUIRED_DATA = {
    "transport:packet_sent": ("header",),
    "transport:packet_received": ("header",),
    "recovery:congestion_state_updated": ("new",),
    "connectivity:mtu_updated": ("new",),
    "connectivity:connection_state_updated": ("new",),
    "recovery:packet_lost": (),
    "recovery:metrics_updated": (),
    "connectivity:connection_started": ("src_ip", "dst_ip", "src_port", "dst_port"),
}
REQUIRED_HEADER_FIELDS = ("packet_type", "packet_number")
VANTAGE_TYPES = ("client", "server", "network", "unknown")


class QlogWriter:
    """One connection's trace file. `event` formats a record; records are
    buffered and written in blocks (and at `close`)."""

    __slots__ = ("path", "_file", "_buf", "_size", "reference", "closed")

    def __init__(self, directory: str, *, name: str, vantage: str, title: str,
                 reference: float, wall_reference: float, fields: dict | None = None) -> None:
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, name + SUFFIX)
        self._file = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self._buf: list[str] = []
        self._size = 0
        self.reference = reference
        self.closed = False
        header = {
            "qlog_version": QLOG_VERSION,
            "qlog_format": QLOG_FORMAT,
            "title": title,
            "description": "Gannet connection trace",
            "trace": {
                "title": title,
                "vantage_point": {"name": "gannet", "type": vantage},
                "common_fields": {
                    "protocol_type": ["GANNET"],
                    "time_format": "relative",
                    "reference_time": round(wall_reference * 1000.0, 3),
                    **(fields or {}),
                },
            },
        }
        self._file.write(RS + json.dumps(header, separators=(",", ":")) + "\n")
        self._file.flush()

    def event(self, now: float, name: str, data: dict) -> None:
        if self.closed:
            return
        body = json.dumps(data, separators=(",", ":"))
        rec = f'{RS}{{"time":{(now - self.reference) * 1000.0:.3f},"name":"{name}","data":{body}}}\n'
        self._buf.append(rec)
        self._size += len(rec)
        if self._size >= FLUSH_BYTES:
            self.flush()

    def raw(self, rec: str) -> None:
        """A record already formatted by the caller (the per-packet fast path)."""
        self._buf.append(rec)
        self._size += len(rec)
        if self._size >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._buf and not self.closed:
            self._file.write("".join(self._buf))
            self._buf.clear()
            self._size = 0

    def close(self) -> None:
        if not self.closed:
            self.flush()
            self.closed = True
            self._file.close()


def file_name(now_wall: float, local_cid: int, vantage: str) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now_wall))
    return f"{stamp}-{local_cid:08x}-{vantage}"


def read(path: str) -> tuple[dict, list[dict]]:
    """(header record, events) of a JSON-SEQ qlog file. ValueError if a
    record is not JSON or the file does not start with a record separator."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if not text.startswith(RS):
        raise ValueError(f"{path}: not JSON-SEQ (no record separator at the start)")
    records = []
    for i, chunk in enumerate(text.split(RS)[1:]):
        try:
            records.append(json.loads(chunk))
        except json.JSONDecodeError as exc:
            # RFC 7464 2.4: a truncated last record (a process killed while
            # writing) is skipped, anything else is an error.
            if i == text.count(RS) - 1:
                continue
            raise ValueError(f"{path}: record {i} is not JSON: {exc}") from None
    if not records:
        raise ValueError(f"{path}: empty")
    return records[0], records[1:]


def iter_events(events: list[dict], *names: str) -> Iterator[dict]:
    wanted = set(names)
    return (e for e in events if e.get("name") in wanted)


def validate(path: str) -> list[str]:
    """What in the file breaks the schema's required fields (empty: valid)."""
    problems: list[str] = []
    try:
        header, events = read(path)
    except (OSError, ValueError) as exc:
        return [str(exc)]
    for key in REQUIRED_HEADER:
        if key not in header:
            problems.append(f"header: missing {key}")
    if header.get("qlog_format") != QLOG_FORMAT:
        problems.append(f"header: qlog_format is {header.get('qlog_format')!r}")
    trace = header.get("trace", {})
    for key in REQUIRED_TRACE:
        if key not in trace:
            problems.append(f"trace: missing {key}")
    vp = trace.get("vantage_point", {})
    if vp.get("type") not in VANTAGE_TYPES:
        problems.append(f"trace: vantage_point.type {vp.get('type')!r}")
    last = float("-inf")
    for i, ev in enumerate(events):
        for key in REQUIRED_EVENT:
            if key not in ev:
                problems.append(f"event {i}: missing {key}")
        name = ev.get("name", "")
        if ":" not in name:
            problems.append(f"event {i}: name {name!r} has no category")
        t = ev.get("time")
        if not isinstance(t, (int, float)):
            problems.append(f"event {i}: time {t!r} is not a number")
        elif t < last - 1e-6:
            problems.append(f"event {i}: time goes back ({t} after {last})")
        else:
            last = t
        data = ev.get("data", {})
        for key in REQUIRED_DATA.get(name, ()):
            if key not in data:
                problems.append(f"event {i} ({name}): missing data.{key}")
        if name in ("transport:packet_sent", "transport:packet_received"):
            hdr = data.get("header", {})
            for key in REQUIRED_HEADER_FIELDS:
                if key not in hdr:
                    problems.append(f"event {i} ({name}): missing header.{key}")
            for frame in data.get("frames", ()):
                if "frame_type" not in frame:
                    problems.append(f"event {i} ({name}): frame without frame_type")
    return problems
