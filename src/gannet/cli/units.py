"""Parsing the units people type: 20ms, 1.5s, 5%, 50mbit, 4MB."""

from __future__ import annotations

import re

_NUM = r"([0-9]*\.?[0-9]+)"


def parse_duration(text: str) -> float:
    """'20ms', '1.5s', '250us', '2m' or a bare number of seconds -> seconds."""
    m = re.fullmatch(_NUM + r"\s*(us|ms|s|m)?", text.strip().lower())
    if not m:
        raise ValueError(f"not a duration: {text!r} (try 20ms or 1.5s)")
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, None: 1.0}[m.group(2)]
    return float(m.group(1)) * scale


def parse_percent(text: str) -> float:
    """'5%' or '0.05' -> 0.05."""
    t = text.strip()
    m = re.fullmatch(_NUM + r"\s*(%?)", t)
    if not m:
        raise ValueError(f"not a probability: {text!r} (try 5% or 0.05)")
    value = float(m.group(1)) / 100 if m.group(2) else float(m.group(1))
    if not 0 <= value <= 1:
        raise ValueError(f"not a probability: {text!r}")
    return value


def parse_rate(text: str) -> float:
    """'50mbit', '1gbit', '100kbit', '10MB/s' -> bits per second."""
    m = re.fullmatch(_NUM + r"\s*(bit|kbit|mbit|gbit|b/s|kb/s|mb/s|gb/s)?", text.strip().lower())
    if not m:
        raise ValueError(f"not a rate: {text!r} (try 50mbit)")
    scale = {
        None: 1, "bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9,
        "b/s": 8, "kb/s": 8e3, "mb/s": 8e6, "gb/s": 8e9,
    }[m.group(2)]
    return float(m.group(1)) * scale


def parse_size(text: str) -> int:
    """'4MB', '512k', '1G', '1000' -> bytes (powers of 1000 for kB/MB/GB, 1024 for KiB...)."""
    m = re.fullmatch(_NUM + r"\s*([kmg]i?b?)?", text.strip().lower())
    if not m:
        raise ValueError(f"not a size: {text!r} (try 4MB)")
    unit = m.group(2) or ""
    base = 1024 if "i" in unit else 1000
    power = {"": 0, "k": 1, "m": 2, "g": 3}[unit[:1]]
    return int(float(m.group(1)) * base**power)


def _positive(parse, name: str):
    """An argparse `type=` that parses with `parse` and insists on a positive value."""

    def convert(text: str):
        import argparse

        try:
            value = parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{name} must be positive")
        return value

    convert.__name__ = name  # argparse names the type in its error messages
    return convert


positive_duration = _positive(parse_duration, "duration")
positive_size = _positive(parse_size, "size")
positive_rate = _positive(parse_rate, "rate")
"""Bits per second."""
