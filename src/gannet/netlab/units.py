"""Parsing of the human units used by netlab: times, rates, sizes, percentages.

    parse_time("20ms") -> 0.02        parse_time("1s") -> 1.0, "250us", "0.5"
    parse_rate("50mbit") -> 50e6      bits per second; "1gbit", "100kbit", "8bit"
    parse_percent("1%") -> 0.01       a bare number <= 1 is taken as a fraction
    parse_size("64kb") -> 65536       bytes; "1500", "1mb", "2kib"

Every parser also accepts an int or float already in base units.
"""

from __future__ import annotations

import re

_NUM = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"

_TIME = {"": 1.0, "s": 1.0, "sec": 1.0, "ms": 1e-3, "msec": 1e-3, "us": 1e-6, "usec": 1e-6,
         "ns": 1e-9, "m": 60.0, "min": 60.0}
_RATE = {"": 1.0, "bit": 1.0, "bps": 1.0, "kbit": 1e3, "kbps": 1e3, "mbit": 1e6, "mbps": 1e6,
         "gbit": 1e9, "gbps": 1e9, "k": 1e3, "m": 1e6, "g": 1e9}
_SIZE = {"": 1, "b": 1, "kb": 1024, "k": 1024, "kib": 1024, "mb": 1024**2, "m": 1024**2,
         "mib": 1024**2, "gb": 1024**3, "gib": 1024**3}


def _split(text: str | float | int, what: str) -> tuple[float, str]:
    if isinstance(text, bool):
        raise ValueError(f"bad {what}: {text!r}")
    if isinstance(text, (int, float)):
        return float(text), ""
    m = re.fullmatch(_NUM + r"\s*([a-zA-Z%]*)", str(text).strip())
    if not m:
        raise ValueError(f"bad {what}: {text!r}")
    return float(m.group(1)), m.group(2).lower()


def parse_time(text: str | float | int) -> float:
    """Seconds from '20ms', '1s', '250us' or a number of seconds."""
    value, unit = _split(text, "time")
    if unit not in _TIME:
        raise ValueError(f"bad time unit in {text!r} (use s, ms, us)")
    return value * _TIME[unit]


def parse_rate(text: str | float | int) -> float:
    """Bits per second from '50mbit', '1gbit', '100kbit' or a number of bit/s (0 = unlimited)."""
    value, unit = _split(text, "rate")
    if unit not in _RATE:
        raise ValueError(f"bad rate unit in {text!r} (use bit, kbit, mbit, gbit)")
    return value * _RATE[unit]


def parse_percent(text: str | float | int) -> float:
    """Probability in [0, 1] from '1%', '0.5%' or a fraction such as 0.01."""
    value, unit = _split(text, "probability")
    if unit == "%":
        value /= 100.0
    elif unit:
        raise ValueError(f"bad probability {text!r} (use 1% or 0.01)")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"probability out of range: {text!r}")
    return value


def parse_size(text: str | float | int) -> int:
    """Bytes from '64kb', '1500', '1mb' (k = 1024)."""
    value, unit = _split(text, "size")
    if unit not in _SIZE:
        raise ValueError(f"bad size unit in {text!r} (use b, kb, mb)")
    return int(value * _SIZE[unit])


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
    value, unit = _split(s, "queue")
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
