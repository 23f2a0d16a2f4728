"""The units people type, parsed in one place: 20ms, 50mbit, 5%, 4MB.

    parse_time("20ms") -> 0.02        "1s", "250us", "2m", or a number of seconds
    parse_rate("50mbit") -> 50e6      bits per second; "1gbit", "100kbps", "10MB/s" (bytes)
    parse_percent("1%") -> 0.01       a bare number is a fraction in [0, 1]
    parse_size("4MB") -> 4_000_000    "512k", "1GiB"; kilo=1024 for tc's convention

Every parser also accepts an int or float already in base units, and raises
ValueError naming what it expected.
"""

from __future__ import annotations

import re

_NUM = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"

_TIME = {"": 1.0, "s": 1.0, "sec": 1.0, "ms": 1e-3, "msec": 1e-3, "us": 1e-6, "usec": 1e-6,
         "ns": 1e-9, "m": 60.0, "min": 60.0}
_RATE = {"": 1.0, "bit": 1.0, "bps": 1.0, "kbit": 1e3, "kbps": 1e3, "mbit": 1e6, "mbps": 1e6,
         "gbit": 1e9, "gbps": 1e9, "k": 1e3, "m": 1e6, "g": 1e9,
         "b/s": 8.0, "kb/s": 8e3, "mb/s": 8e6, "gb/s": 8e9}
_POWER = {"": 0, "k": 1, "m": 2, "g": 3}


def _split(text: str | float | int, what: str, hint: str) -> tuple[float, str]:
    if isinstance(text, bool):
        raise ValueError(f"not a {what}: {text!r} ({hint})")
    if isinstance(text, (int, float)):
        return float(text), ""
    m = re.fullmatch(_NUM + r"\s*([a-zA-Z%/]*)", str(text).strip())
    if not m:
        raise ValueError(f"not a {what}: {text!r} ({hint})")
    return float(m.group(1)), m.group(2).lower()


def _scaled(text: str | float | int, what: str, hint: str, units: dict[str, float]) -> float:
    value, unit = _split(text, what, hint)
    if unit not in units:
        raise ValueError(f"not a {what}: {text!r} ({hint})")
    return value * units[unit]


def parse_time(text: str | float | int) -> float:
    """Seconds from '20ms', '1.5s', '250us', '2m' or a number of seconds."""
    return _scaled(text, "duration", "try 20ms or 1.5s", _TIME)


def parse_rate(text: str | float | int) -> float:
    """Bits per second from '50mbit', '1gbit', '100kbps', '10MB/s' (bytes) or a number."""
    return _scaled(text, "rate", "try 50mbit", _RATE)


def parse_percent(text: str | float | int) -> float:
    """A probability in [0, 1] from '5%', '0.5%' or a fraction such as 0.05."""
    hint = "try 5% or 0.05"
    value, unit = _split(text, "probability", hint)
    if unit == "%":
        value /= 100.0
    elif unit:
        raise ValueError(f"not a probability: {text!r} ({hint})")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"not a probability: {text!r} (out of range; {hint})")
    return value


def parse_size(text: str | float | int, kilo: int = 1000) -> int:
    """Bytes from '4MB', '512k', '1GiB' or a number.

    k/M/G count in powers of `kilo` (1000 by default, 1024 for the
    tc-style sizes netlab takes); KiB/MiB/GiB are always powers of 1024.
    """
    hint = "try 4MB or 64KiB"
    value, unit = _split(text, "size", hint)
    unit = unit.removesuffix("b")
    base = kilo
    if unit.endswith("i"):
        unit, base = unit[:-1], 1024
    if unit not in _POWER:
        raise ValueError(f"not a size: {text!r} ({hint})")
    return int(value * base ** _POWER[unit])
