"""LinkConfig: the impairments of one direction of an emulated link."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

from .units import parse_percent, parse_queue, parse_rate, parse_size, parse_time

DIRECTIONS = ("a->b", "b->a")

_TIME_FIELDS = {"delay", "jitter", "reorder_gap"}
_PROB_FIELDS = {"loss", "burst_p", "burst_r", "burst_loss_bad", "burst_loss_good",
                "reorder", "duplicate", "corrupt"}


@dataclass(frozen=True)
class LinkConfig:
    """One direction of the link. All defaults mean "perfect wire".

    delay, jitter      seconds; each packet gets delay + uniform(-jitter, +jitter)
                       (never below 0). Jitter keeps packets in order; only
                       `reorder` reorders.
    loss               independent random loss probability
    burst_p, burst_r   Gilbert-Elliott bursty loss: P(good->bad), P(bad->good)
                       per packet; off while burst_p == 0
    burst_loss_bad     loss probability in the bad state (default 1.0)
    burst_loss_good    loss probability in the good state (default 0.0)
    rate               bits per second, 0 = unlimited; a packet's bits are
                       serialised one after another (IP packet size)
    queue_packets,     drop-tail limit of the rate queue, in packets and/or
    queue_bytes        bytes (None = no limit of that kind); only with a rate
    reorder            probability that a packet is held back by reorder_gap
                       seconds extra, so later packets overtake it
    reorder_gap        seconds (default 10 ms)
    duplicate          probability that a packet is delivered twice
    corrupt            probability that a packet has corrupt_bits random bits
                       flipped (after the IP header, so it reaches the
                       transport's checksum; corrupt_ip_header=True flips
                       anywhere)
    mtu                packets larger than this are dropped (0 = no limit
                       beyond the devices' MTU)
    down               True: every packet is dropped (an outage)
    """

    delay: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    burst_p: float = 0.0
    burst_r: float = 0.5
    burst_loss_bad: float = 1.0
    burst_loss_good: float = 0.0
    rate: float = 0.0
    queue_packets: int | None = 1000
    queue_bytes: int | None = None
    reorder: float = 0.0
    reorder_gap: float = 0.010
    duplicate: float = 0.0
    corrupt: float = 0.0
    corrupt_bits: int = 1
    corrupt_ip_header: bool = False
    mtu: int = 0
    down: bool = False

    def __post_init__(self) -> None:
        # accept unit strings in the constructor too: LinkConfig(delay="20ms", rate="50mbit")
        strs = {f.name: getattr(self, f.name) for f in fields(self)
                if isinstance(getattr(self, f.name), str)}
        for key, value in normalize_changes(strs).items():
            object.__setattr__(self, key, value)
        for name in _TIME_FIELDS:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in _PROB_FIELDS:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1]")
        if self.rate < 0:
            raise ValueError("rate must be >= 0")
        if self.mtu < 0 or self.corrupt_bits < 1:
            raise ValueError("mtu must be >= 0 and corrupt_bits >= 1")
        for name in ("queue_packets", "queue_bytes"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1 or None")

    @property
    def transparent(self) -> bool:
        """True when the direction does nothing to packets (the forwarder's fast path)."""
        return not (self.delay or self.jitter or self.loss or self.burst_p or self.rate
                    or self.reorder or self.duplicate or self.corrupt or self.mtu or self.down)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LinkConfig":
        return cls().replace(**data)

    def replace(self, **changes: Any) -> "LinkConfig":
        """A copy with `changes` applied; values may be unit strings ('20ms', '1%', '50mbit').

        `queue` is accepted as a shorthand: '100' / '100p' packets or '64kb' bytes.
        """
        return dataclasses.replace(self, **normalize_changes(changes))


_FIELD_NAMES = {f.name for f in fields(LinkConfig)}


def normalize_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """Validate names and convert unit strings to base units."""
    out: dict[str, Any] = {}
    for key, value in changes.items():
        key = key.replace("-", "_")
        if key == "queue":
            qb, qp = parse_queue(value)
            out["queue_bytes"], out["queue_packets"] = qb, qp
            continue
        if key not in _FIELD_NAMES:
            raise ValueError(f"unknown link property {key!r}")
        if key in _TIME_FIELDS:
            value = parse_time(value)
        elif key in _PROB_FIELDS:
            value = parse_percent(value)
        elif key == "rate":
            value = parse_rate(value)
        elif key in ("queue_packets",):
            value = None if value is None else int(value)
        elif key in ("queue_bytes",):
            value = None if value is None else parse_size(value)
        elif key in ("mtu", "corrupt_bits"):
            value = int(value)
        elif key in ("down", "corrupt_ip_header"):
            if isinstance(value, str):
                value = value.lower() in ("1", "true", "yes", "on")
            value = bool(value)
        out[key] = value
    return out


def expand_direction(direction: str) -> tuple[str, ...]:
    """'a->b', 'b->a', or 'both' (also 'ab', 'ba', '*')."""
    d = direction.strip().lower().replace(" ", "")
    if d in ("a->b", "ab", "a>b"):
        return ("a->b",)
    if d in ("b->a", "ba", "b>a"):
        return ("b->a",)
    if d in ("both", "*", "a<->b"):
        return DIRECTIONS
    raise ValueError(f"bad direction {direction!r} (use 'a->b', 'b->a' or 'both')")
