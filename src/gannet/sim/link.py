"""One direction of a simulated link: impairments, queue and fault hooks.

A `Link` decides, when a datagram is offered at virtual time `now`, whether
it is dropped and, if not, when (and in how many copies, with which bytes)
it arrives. It never calls a node; it hands arrivals back to the owning
`Simulator`, which keeps the single event queue. Each link has its own
seeded `random.Random`, so the random stream of one link is not perturbed by
traffic on another.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NamedTuple

from .config import LinkConfig, LinkStats

if TYPE_CHECKING:
    from .network import Simulator

__all__ = ["DropPredicate", "Link", "TraceRecord"]

#: `predicate(data, index) -> bool`; True drops the datagram. `index` is the
#: 0-based position of the datagram among all datagrams offered to the link.
DropPredicate = Callable[[bytes, int], bool]


class TraceRecord(NamedTuple):
    """One traced happening. `event` is one of: send, deliver, duplicate,
    corrupt, truncate, reorder, timer, or `drop:<reason>` (see DROP_REASONS).
    For `timer` records `src` and `dst` are both the node's address."""

    time: float
    src: Any
    dst: Any
    length: int
    event: str


class Link:
    """Directed link `src -> dst`. Reassign `config` (or call `update`) at any
    time, e.g. from `Simulator.call_at`; datagrams already in flight keep the
    arrival times they were given when they were sent."""

    __slots__ = (
        "src",
        "dst",
        "config",
        "stats",
        "_sim",
        "_rng",
        "_index",
        "_rules",
        "_bad",
        "_queue",
        "_queued_bytes",
        "_busy_until",
        "_order_floor",
        "_max_delivered",
    )

    def __init__(
        self, sim: Simulator, src: Any, dst: Any, config: LinkConfig, rng: random.Random
    ) -> None:
        self.src = src
        self.dst = dst
        self.config = config
        self.stats = LinkStats()
        self._sim = sim
        self._rng = rng
        self._index = 0
        self._rules: list[DropPredicate] = []
        self._bad = False  # Gilbert-Elliott channel state
        self._queue: deque[tuple[float, int]] = deque()  # (serialized_at, size)
        self._queued_bytes = 0
        self._busy_until = 0.0
        self._order_floor = 0.0  # last arrival time, for preserve_order
        self._max_delivered = -1  # highest send index delivered so far

    def __repr__(self) -> str:
        return f"Link({self.src!r} -> {self.dst!r}, {self.config!r})"

    # -- configuration and scripted faults ---------------------------------

    def update(self, **changes: Any) -> LinkConfig:
        """Replace some config fields; `link.update(loss=1.0)` starts an outage."""
        self.config = replace(self.config, **changes)
        return self.config

    def drop_if(self, predicate: DropPredicate) -> DropPredicate:
        """Drop every datagram for which `predicate(data, index)` is true.

        The predicate is called once for every datagram offered, with the
        bytes as sent. A matching datagram is lost on the wire: it still
        occupies the queue and makes all the random draws it would have
        made, so adding a rule changes nothing else in the run (a failing
        seed can be replayed with one extra, chosen loss). A datagram that
        the MTU, the queue or random loss drops first keeps that reason.
        Returns the predicate, for `remove_drop`.
        """
        self._rules.append(predicate)
        return predicate

    def drop_nth(self, *indices: int) -> DropPredicate:
        """Drop exactly the datagrams with these 0-based link indices."""
        wanted = frozenset(indices)
        return self.drop_if(lambda _data, index: index in wanted)

    def remove_drop(self, predicate: DropPredicate) -> None:
        self._rules.remove(predicate)

    def clear_drops(self) -> None:
        self._rules.clear()

    @property
    def offered(self) -> int:
        """Datagrams offered so far; the index the next one will get."""
        return self._index

    @property
    def queued_bytes(self) -> int:
        """Bytes accepted by the serializer and not yet fully sent, as of now."""
        self._expire_queue(self._sim.now)
        return self._queued_bytes

    # -- datapath (called by the Simulator) --------------------------------

    def _expire_queue(self, now: float) -> None:
        queue = self._queue
        while queue and queue[0][0] <= now:
            self._queued_bytes -= queue.popleft()[1]

    def _drop(self, reason: str, now: float, size: int) -> None:
        self.stats.dropped[reason] += 1
        trace = self._sim._trace
        if trace is not None:
            trace(TraceRecord(now, self.src, self.dst, size, "drop:" + reason))

    def _offer(self, data: bytes, now: float) -> None:
        """Take one datagram sent at `now`; schedule its arrival(s) or drop it."""
        cfg = self.config
        stats = self.stats
        size = len(data)
        index = self._index
        self._index = index + 1
        stats.sent += 1
        stats.bytes_sent += size
        trace = self._sim._trace
        if trace is not None:
            trace(TraceRecord(now, self.src, self.dst, size, "send"))

        scripted = False
        if self._rules:
            for rule in self._rules:
                if rule(data, index):
                    scripted = True
                    break
        if cfg.mtu is not None and size > cfg.mtu:
            return self._drop("mtu", now, size)

        depart = now
        rate = cfg.bandwidth
        if rate:
            self._expire_queue(now)
            limit = cfg.queue_bytes
            if limit is not None and self._queue and self._queued_bytes + size > limit:
                return self._drop("queue", now, size)
            start = self._busy_until if self._busy_until > now else now
            depart = start + size * 8 / rate
            self._busy_until = depart
            self._queue.append((depart, size))
            self._queued_bytes += size
            if start - now > stats.max_queue_delay:
                stats.max_queue_delay = start - now

        rng = self._rng
        if cfg.p_good_to_bad or cfg.loss_in_good or self._bad:
            if self._bad:
                if rng.random() < cfg.p_bad_to_good:
                    self._bad = False
            elif rng.random() < cfg.p_good_to_bad:
                self._bad = True
            p = cfg.loss_in_bad if self._bad else cfg.loss_in_good
            if p and rng.random() < p:
                return self._drop("burst", now, size)
        if cfg.loss and rng.random() < cfg.loss:
            return self._drop("loss", now, size)

        if scripted:
            # Make every random draw the datagram would have made, then drop
            # it: the rest of the run sees exactly the same random stream.
            self._drop("scripted", now, size)
            self._emit(data, depart, index, now, False)
            if cfg.duplicate and rng.random() < cfg.duplicate:
                self._emit(data, depart, None, now, False)
            return
        self._emit(data, depart, index, now, True)
        if cfg.duplicate and rng.random() < cfg.duplicate:
            stats.duplicated += 1
            if trace is not None:
                trace(TraceRecord(now, self.src, self.dst, size, "duplicate"))
            self._emit(data, depart, None, now, True)

    def _emit(self, data: bytes, depart: float, index: int | None, now: float, live: bool) -> None:
        """Apply per-copy impairments and schedule the arrival.

        `index` is None for a duplicate copy, which is then not considered
        for reorder accounting. With `live` false only the random draws are
        made (for a scripted drop): no counters, no trace, no arrival.
        """
        cfg = self.config
        rng = self._rng
        trace = self._sim._trace if live else None
        corrupted = truncated = False
        if cfg.corrupt and data and rng.random() < cfg.corrupt:
            nbits = len(data) * 8
            k = rng.randint(1, cfg.corrupt_bits) if cfg.corrupt_bits > 1 else 1
            buf = bytearray(data)
            # sample() on a range draws distinct positions without building
            # the range, so two flips never cancel and cost O(k).
            for pos in rng.sample(range(nbits), min(k, nbits)):
                buf[pos >> 3] ^= 1 << (pos & 7)
            data = bytes(buf)
            corrupted = True
        if cfg.truncate and data and rng.random() < cfg.truncate:
            data = data[: rng.randrange(len(data))]
            truncated = True

        arrival = depart + cfg.delay
        if cfg.jitter:
            arrival += rng.random() * cfg.jitter
        if cfg.preserve_order:
            if arrival < self._order_floor:
                arrival = self._order_floor
            self._order_floor = arrival
        if cfg.reorder and rng.random() < cfg.reorder:
            arrival += cfg.reorder_delay
        if not live:
            return
        if corrupted:
            self.stats.corrupted += 1
            if trace is not None:
                trace(TraceRecord(now, self.src, self.dst, len(data), "corrupt"))
        if truncated:
            self.stats.truncated += 1
            if trace is not None:
                trace(TraceRecord(now, self.src, self.dst, len(data), "truncate"))
        self._sim._schedule_arrival(arrival, self, data, index)

    def _arrived(self, data: bytes, index: int | None, now: float) -> None:
        """Account one arrival at the destination address."""
        stats = self.stats
        stats.delivered += 1
        stats.bytes_delivered += len(data)
        if index is not None:
            if index < self._max_delivered:
                stats.reordered += 1
                trace = self._sim._trace
                if trace is not None:
                    trace(TraceRecord(now, self.src, self.dst, len(data), "reorder"))
            else:
                self._max_delivered = index
