"""Pure session-parameter negotiation and fragmentation (no I/O).

The client offers parameters in CONNECT; the server answers ACCEPT with the
parameters both sides then use (each no larger than what the client asked
for), plus human-readable notes for every value it lowered, or ERROR with a
reason when it refuses.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field

from .codec import PROTOCOL_VERSION, SUPPORTED_MAJOR

STEP = "step-by-step"
BURST = "burst"
MODES = (STEP, BURST)

#: Smallest max_packet_size either side may use (fragments need room to make progress).
MIN_PACKET_SIZE = 16
DEFAULT_PACKET_SIZE = 65536
DEFAULT_WINDOW = 8
DEFAULT_KEEPALIVE = 5.0
#: A peer silent for this many keepalive intervals is considered gone.
KEEPALIVE_MISSES = 3
#: Range a negotiated keepalive interval must lie in, seconds: the session's
#: watchdog wakes four times per interval, so a peer asking for 1e-9 s would
#: make the server spin; an hour is far past any NAT binding's lifetime.
MIN_KEEPALIVE = 0.05
MAX_KEEPALIVE = 3600.0


def keepalive_problem(value: float) -> str | None:
    """Why `value` cannot be a keepalive interval, or None if it can."""
    if not MIN_KEEPALIVE <= value <= MAX_KEEPALIVE:  # (also false for NaN)
        return f"keepalive_interval {value:g} s is outside {MIN_KEEPALIVE:g}-{MAX_KEEPALIVE:g} s"
    return None


class Refused(Exception):
    """The server refuses the offer; `str(exc)` is the reason sent in ERROR."""


@dataclass(frozen=True)
class Offer:
    """What a client asks for in CONNECT."""

    operation_mode: str = STEP
    max_packet_size: int = DEFAULT_PACKET_SIZE
    window_size: int = DEFAULT_WINDOW
    keepalive_interval: float = DEFAULT_KEEPALIVE
    client_id: str | None = None
    format: str = "binary"
    version: str = PROTOCOL_VERSION

    def to_body(self) -> dict:
        body = asdict(self)
        if body["client_id"] is None:
            del body["client_id"]
        return body

    @classmethod
    def from_body(cls, body: dict) -> "Offer":
        """Parse a CONNECT body; raises Refused for malformed values."""
        version = body.get("version")
        if not isinstance(version, str):
            raise Refused("CONNECT carries no protocol version")
        mode = body.get("operation_mode", STEP)
        size = body.get("max_packet_size", DEFAULT_PACKET_SIZE)
        window = body.get("window_size", 1 if mode == STEP else DEFAULT_WINDOW)
        keepalive = body.get("keepalive_interval", DEFAULT_KEEPALIVE)
        client_id = body.get("client_id")
        fmt = body.get("format", "binary")
        if not _is_int(size):
            raise Refused(f"max_packet_size must be an integer, not {size!r}")
        if not _is_int(window):
            raise Refused(f"window_size must be an integer, not {window!r}")
        if isinstance(keepalive, bool) or not isinstance(keepalive, (int, float)):
            raise Refused(f"keepalive_interval must be a number, not {keepalive!r}")
        if client_id is not None and not isinstance(client_id, str):
            raise Refused("client_id must be a string")
        if not isinstance(mode, str):
            raise Refused(f"operation_mode must be a string, not {mode!r}")
        if not isinstance(fmt, str):
            raise Refused("format must be a string")
        return cls(mode, size, window, float(keepalive), client_id, fmt, version)


@dataclass(frozen=True)
class Limits:
    """What a server allows."""

    max_packet_size: int = DEFAULT_PACKET_SIZE
    max_window: int = 64
    keepalive_interval: float = DEFAULT_KEEPALIVE
    modes: tuple[str, ...] = MODES

    def __post_init__(self) -> None:
        problem = keepalive_problem(self.keepalive_interval)
        if problem:
            raise ValueError(problem)


@dataclass(frozen=True)
class Params:
    """The negotiated parameters of one session (sent in ACCEPT)."""

    session_id: str
    operation_mode: str
    max_packet_size: int
    window_size: int
    keepalive_interval: float
    client_id: str | None = None
    notes: tuple[str, ...] = field(default=())
    version: str = PROTOCOL_VERSION

    @property
    def idle_timeout(self) -> float:
        return self.keepalive_interval * KEEPALIVE_MISSES

    def to_body(self) -> dict:
        body = asdict(self)
        body["notes"] = list(self.notes)
        body["status"] = "ok"
        if body["client_id"] is None:
            del body["client_id"]
        return body

    @classmethod
    def from_body(cls, body: dict) -> "Params":
        try:
            p = cls(
                session_id=str(body["session_id"]),
                operation_mode=body["operation_mode"],
                max_packet_size=body["max_packet_size"],
                window_size=body["window_size"],
                keepalive_interval=float(body["keepalive_interval"]),
                client_id=body.get("client_id"),
                notes=tuple(str(n) for n in body.get("notes", ())),
                version=str(body.get("version", PROTOCOL_VERSION)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed ACCEPT: {exc!r}") from None
        if p.operation_mode not in MODES:
            raise ValueError(f"ACCEPT names unknown operation mode {p.operation_mode!r}")
        if not _is_int(p.max_packet_size) or p.max_packet_size < MIN_PACKET_SIZE:
            raise ValueError(f"ACCEPT has invalid max_packet_size {p.max_packet_size!r}")
        if not _is_int(p.window_size) or p.window_size < 1:
            raise ValueError(f"ACCEPT has invalid window_size {p.window_size!r}")
        problem = keepalive_problem(p.keepalive_interval)
        if problem:
            raise ValueError(f"ACCEPT: {problem}")
        return p

    def describe(self) -> str:
        return (
            f"session {self.session_id}: mode={self.operation_mode} "
            f"max_packet_size={self.max_packet_size} window={self.window_size} "
            f"keepalive={self.keepalive_interval:g}s"
        )


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def new_session_id() -> str:
    return secrets.token_hex(6)


def negotiate(offer: Offer, limits: Limits, session_id: str | None = None) -> Params:
    """The server's answer to an offer: Params (with notes), or raises Refused."""
    major = offer.version.split(".")[0]
    if major != str(SUPPORTED_MAJOR):
        raise Refused(
            f"unsupported protocol version {offer.version} (server speaks {PROTOCOL_VERSION})"
        )
    if offer.operation_mode not in MODES:
        raise Refused(
            f"unknown operation mode {offer.operation_mode!r} (expected {' or '.join(MODES)})"
        )
    if offer.operation_mode not in limits.modes:
        raise Refused(f"operation mode {offer.operation_mode} not allowed by this server")
    if offer.max_packet_size < MIN_PACKET_SIZE:
        raise Refused(
            f"max_packet_size {offer.max_packet_size} is below the minimum {MIN_PACKET_SIZE}"
        )
    if offer.window_size < 1:
        raise Refused(f"window_size {offer.window_size} must be at least 1")
    if not offer.keepalive_interval >= MIN_KEEPALIVE:  # (more than the limit is lowered below)
        raise Refused(keepalive_problem(offer.keepalive_interval))

    notes: list[str] = []
    size = offer.max_packet_size
    if size > limits.max_packet_size:
        notes.append(f"server lowered max_packet_size from {size} to {limits.max_packet_size}")
        size = limits.max_packet_size
    window = offer.window_size
    if offer.operation_mode == STEP:
        if window != 1:
            notes.append(f"window_size is 1 in step-by-step mode (asked for {window})")
        window = 1
    elif window > limits.max_window:
        notes.append(f"server lowered window_size from {window} to {limits.max_window}")
        window = limits.max_window
    keepalive = offer.keepalive_interval
    if keepalive > limits.keepalive_interval:
        notes.append(
            f"server lowered keepalive_interval from {keepalive:g}s to {limits.keepalive_interval:g}s"
        )
        keepalive = limits.keepalive_interval
    return Params(
        session_id=session_id or new_session_id(),
        operation_mode=offer.operation_mode,
        max_packet_size=size,
        window_size=window,
        keepalive_interval=keepalive,
        client_id=offer.client_id,
        notes=tuple(notes),
    )


def check_accept(offer: Offer, params: Params) -> None:
    """Client-side: the server may only confirm or lower what was offered."""
    if params.operation_mode != offer.operation_mode:
        raise ValueError(
            f"server changed operation mode from {offer.operation_mode} to {params.operation_mode}"
        )
    if params.max_packet_size > offer.max_packet_size:
        raise ValueError(
            f"server raised max_packet_size from {offer.max_packet_size} to {params.max_packet_size}"
        )
    if params.window_size > max(offer.window_size, 1):
        raise ValueError(
            f"server raised window_size from {offer.window_size} to {params.window_size}"
        )


def split(payload: bytes, max_size: int) -> list[bytes]:
    """Cut a message into fragments of at most max_size bytes (one, possibly empty, at least)."""
    if max_size < 1:
        raise ValueError("max_size must be positive")
    if len(payload) <= max_size:
        return [payload]
    view = memoryview(payload)
    return [bytes(view[i : i + max_size]) for i in range(0, len(payload), max_size)]


class Reassembler:
    """Joins fragments (more=True ... more=False) back into messages."""

    def __init__(self, max_message: int | None = None):
        self.max_message = max_message
        self._parts: list[bytes] = []
        self._size = 0

    @property
    def pending(self) -> bool:
        return bool(self._parts)

    def add(self, fragment: bytes, more: bool) -> bytes | None:
        """Add one fragment; returns the whole message after its last fragment."""
        self._size += len(fragment)
        if self.max_message is not None and self._size > self.max_message:
            size, self._parts, self._size = self._size, [], 0
            raise ValueError(f"reassembled message exceeds {self.max_message} bytes ({size} so far)")
        self._parts.append(fragment)
        if more:
            return None
        data = b"".join(self._parts)
        self._parts, self._size = [], 0
        return data
