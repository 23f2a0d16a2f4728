"""Link configuration, link statistics and the simulator's error type.

`LinkConfig` is frozen on purpose: a link's behaviour changes only when a
whole new config is assigned (`link.config = replace(link.config, loss=1.0)`
or `link.update(loss=1.0)`), so a scripted outage is one atomic step at one
virtual instant and a config object can be shared by many links safely.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

__all__ = ["DROP_REASONS", "LinkConfig", "LinkStats", "SimulationError"]


class SimulationError(RuntimeError):
    """The simulation cannot make meaningful progress.

    Raised for runaway runs (more events than `max_events`) and for a node
    whose timer keeps firing without virtual time advancing (a livelock that
    would otherwise spin forever at one instant).
    """


#: Every reason a datagram can be dropped, in the order they are checked.
#: `unreachable` is counted at delivery time when no node is attached at the
#: destination address (never attached, or removed to model a crash).
DROP_REASONS = ("mtu", "queue", "burst", "loss", "scripted", "unreachable")

_PROBABILITIES = (
    "loss",
    "p_good_to_bad",
    "p_bad_to_good",
    "loss_in_bad",
    "loss_in_good",
    "reorder",
    "duplicate",
    "corrupt",
    "truncate",
)


@dataclass(frozen=True, slots=True)
class LinkConfig:
    """Impairments of one direction of a link; the defaults are a perfect wire.

    Processing order for a datagram offered to a link at time `now`:

    1. `mtu` (scripted drop rules, `Link.drop_if`, are evaluated here but
       applied on the wire, after step 3, so they perturb nothing else);
    2. `bandwidth` / `queue_bytes`: a drop-tail FIFO in front of a serializer.
       A datagram waits until the link is free, then takes `size*8/bandwidth`
       seconds to serialize. It is dropped (reason `queue`) if the bytes
       already accepted but not yet fully serialized, plus its own size, would
       exceed `queue_bytes`; a datagram reaching an idle link is always taken.
       `bandwidth` of 0 or None means infinite (no serialization delay).
       `queue_bytes` None means an unbounded queue;
    3. on-the-wire loss, which still consumes bandwidth: the Gilbert-Elliott
       two-state channel (reason `burst`; before each datagram the state moves
       good->bad with `p_good_to_bad` and bad->good with `p_bad_to_good`, then
       the datagram is lost with `loss_in_bad` / `loss_in_good`; the model is
       active while `p_good_to_bad` or `loss_in_good` is non-zero or the
       channel is in the bad state), then independent random `loss`;
    4. `duplicate`: a second copy is sent; each copy independently gets
       the impairments below, so copies may arrive in either order;
    5. per copy: `corrupt` flips between 1 and `corrupt_bits` distinct random
       bits; `truncate` cuts the datagram to a uniformly random shorter length
       (0 .. len-1); arrival = departure + `delay` + jitter, where jitter is
       **uniform in [0, jitter)** (so `delay` is the minimum latency and jitter
       reorders datagrams sent closer together than `jitter`), unless
       `preserve_order` clamps each arrival to be no earlier than the previous
       one; finally with probability `reorder` the copy is held back an extra
       `reorder_delay` seconds so later datagrams overtake it (this explicit
       reordering applies even with `preserve_order`).
    """

    delay: float = 0.0
    jitter: float = 0.0
    preserve_order: bool = False
    loss: float = 0.0
    p_good_to_bad: float = 0.0
    p_bad_to_good: float = 1.0
    loss_in_bad: float = 1.0
    loss_in_good: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 0.0
    duplicate: float = 0.0
    corrupt: float = 0.0
    corrupt_bits: int = 1
    truncate: float = 0.0
    bandwidth: float | None = None
    queue_bytes: int | None = None
    mtu: int | None = None

    def __post_init__(self) -> None:
        # Fail at construction, not deep inside a run: a typo such as
        # loss=10 (meaning 10 %) would otherwise silently drop everything.
        for name in _PROBABILITIES:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"LinkConfig.{name} must be in [0, 1], got {value!r}")
        for name in ("delay", "jitter", "reorder_delay"):
            value = getattr(self, name)
            if not value >= 0.0:
                raise ValueError(f"LinkConfig.{name} must be >= 0, got {value!r}")
        if self.corrupt_bits < 1:
            raise ValueError(f"LinkConfig.corrupt_bits must be >= 1, got {self.corrupt_bits!r}")
        if self.bandwidth is not None and not self.bandwidth >= 0:
            raise ValueError(f"LinkConfig.bandwidth must be >= 0 or None, got {self.bandwidth!r}")
        if self.queue_bytes is not None and self.queue_bytes < 0:
            raise ValueError(
                f"LinkConfig.queue_bytes must be >= 0 or None, got {self.queue_bytes!r}"
            )
        if self.mtu is not None and self.mtu < 0:
            raise ValueError(f"LinkConfig.mtu must be >= 0 or None, got {self.mtu!r}")
        if self.reorder > 0 and self.reorder_delay == 0:
            # Without extra delay "reordering" would be a silent no-op.
            raise ValueError("LinkConfig.reorder needs a positive reorder_delay")


@dataclass(slots=True)
class LinkStats:
    """Counters of one link direction.

    Conservation: `sent + duplicated == delivered + dropped_total + in flight`,
    so after a run drains completely `sent + duplicated == delivered +
    dropped_total`. `corrupted`, `truncated` and `reordered` count delivered
    or scheduled copies; `reordered` counts datagrams that arrived after a
    datagram sent later on the same link (late arrivals, RFC 4737 style; a
    duplicate copy is never counted). `max_queue_delay` is the longest wait
    for the serializer, excluding the datagram's own serialization time.
    """

    sent: int = 0
    delivered: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    duplicated: int = 0
    corrupted: int = 0
    truncated: int = 0
    reordered: int = 0
    bytes_sent: int = 0
    bytes_delivered: int = 0
    max_queue_delay: float = 0.0

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def copy(self) -> LinkStats:
        """A snapshot that later traffic does not change."""
        snap = LinkStats(**{f.name: getattr(self, f.name) for f in fields(self)})
        snap.dropped = dict(self.dropped)
        return snap

    def as_dict(self) -> dict:
        """Plain data, convenient for logging and for comparing runs."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["dropped"] = dict(self.dropped)
        out["dropped_total"] = self.dropped_total
        return out
