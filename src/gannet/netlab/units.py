"""Parsing of the human units used by netlab: times, rates, sizes, percentages.

    parse_time("20ms") -> 0.02        parse_time("1s") -> 1.0, "250us", "0.5"
    parse_rate("50mbit") -> 50e6      bits per second; "1gbit", "100kbit", "8bit"
    parse_percent("1%") -> 0.01       a bare number <= 1 is taken as a fraction
    parse_size("64kb") -> 65536       bytes; "1500", "1mb", "2kib"

Every parser also accepts an int or float already in base units.
"""

from __future__ import annotations

from functools import partial

from gannet.units import _split, parse_percent, parse_rate, parse_time
from gannet.units import parse_size as _parse_size

__all__ = ["format_rate", "format_time", "parse_percent", "parse_queue", "parse_rate",
           "parse_size", "parse_time"]

# tc's convention: a "kb" of queue is 1024 bytes.
parse_size = partial(_parse_size, kilo=1024)


def parse_queue(text: str | int) -> tuple[int | None, int | None]:
    """A queue limit: '100' or '100p' packets, or a size with a byte unit ('64kb', '9000b').

    Returns (queue_bytes, queue_packets), one of them None.
    """
    if isinstance(text, int):
        return None, text
    s = str(text).strip().lower()
    for suffix in ("packets", "pkts", "pkt", "p"):
        if s.endswith(suffix):
            return None, int(float(s[: -len(suffix)]))
    value, unit = _split(s, "queue", "try 100p or 64kb")
    if unit == "":
        return None, int(value)
    return parse_size(s), None


def format_rate(bps: float) -> str:
    if bps <= 0:
        return "unlimited"
    for unit, scale in (("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)):
        if bps >= scale:
            return f"{bps / scale:g}{unit}"
    return f"{bps:g}bit"


def format_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:g}s"
    if seconds >= 1e-3 or seconds == 0:
        return f"{seconds * 1e3:g}ms"
    return f"{seconds * 1e6:g}us"
