"""Congestion control behind one small interface, chosen by name.

The connection tells a controller what happened (bytes acknowledged, a
congestion event, a retransmission timeout) and reads `cwnd` back; it never
looks inside. New controllers register themselves with `register`.
"""

from __future__ import annotations



from ...config import CONGESTION_CONTROLS
from .base import CongestionControl

_REGISTRY: dict[str, type[CongestionControl]] = {}


def register(cls: type[CongestionControl]) -> type[CongestionControl]:
    _REGISTRY[cls.name] = cls
    CONGESTION_CONTROLS.add(cls.name)  # (what Config accepts; the core imports config, not the reverse)
    return cls


def available() -> list[str]:
    return sorted(_REGISTRY)


def create(name: str, mss: int, initial_window: int) -> CongestionControl:
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown congestion control {name!r}; available: {', '.join(available())}"
        ) from None
    return cls(mss, initial_window)


from . import newreno  # noqa: E402,F401  (registers itself)
from . import cubic  # noqa: E402,F401  (registers itself)
from . import bbr  # noqa: E402,F401  (registers itself)

__all__: list[str] = ["CongestionControl", "available", "create", "register"]
