"""Parsing the units people type: 20ms, 1.5s, 5%, 50mbit, 4MB."""

from __future__ import annotations

from gannet.units import parse_percent, parse_rate, parse_size
from gannet.units import parse_time as parse_duration

__all__ = ["parse_duration", "parse_percent", "parse_rate", "parse_size", "positive_duration",
           "positive_rate", "positive_size"]


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
