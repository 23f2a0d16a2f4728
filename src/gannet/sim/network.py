"""The simulator: virtual clock, event queue, nodes and their timers.

Everything happens on one thread in one heap of events ordered by
`(time, sequence)`. The sequence number makes ties FIFO in scheduling order,
which is what makes a run reproducible: given the same seed and the same
script, the same events run in the same order with the same random draws.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from ..wire.batch import coalesce
from .config import LinkConfig, LinkStats, SimulationError
from .link import Link, TraceRecord

__all__ = ["Node", "Simulator"]

# Event kinds; the heap holds (time, seq, kind, a, b, c) tuples.
_ARRIVE = 0  # a=link, b=data, c=send index (None for a duplicate copy)
_TIMER = 1  # a=_NodeState, b=timer generation
_CALL = 2  # a=callable, b=args, c=kwargs


class Node(Protocol):
    """What the simulator drives: the sans-I/O Endpoint contract."""

    def receive_datagram(self, data: bytes, addr: Any, now: float) -> None: ...
    def datagrams_to_send(self, now: float) -> Iterable[tuple[bytes | bytearray, Any]]: ...
    def get_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...


class _NodeState:
    """Bookkeeping for one attached node."""

    __slots__ = ("node", "drain", "addr", "name", "deadline", "gen", "burst_time", "burst")

    def __init__(self, node: Node, addr: Any, name: str,
                 drain: Callable[[float], Iterable[tuple[bytes | bytearray, Any]]]) -> None:
        self.node = node
        self.drain = drain  # how the node's output is taken (see Simulator.add_node)
        self.addr = addr
        self.name = name
        self.deadline: float | None = None  # deadline with a live heap entry
        self.gen = 0  # bumped to invalidate a scheduled timer entry
        self.burst_time: float | None = None  # livelock detection: time of the last timer call
        self.burst = 0  # ... and how many timer calls happened at that time


class Simulator:
    """Deterministic discrete-event network of duck-typed Endpoint nodes.

    `seed` seeds every random choice (per-link generators and `make_rng`).
    `default_link` is the config a link gets when first used without
    `set_link`. `trace=True` records `TraceRecord`s in `self.trace`; a
    callable receives each record instead; the default (off) costs one
    `is None` test per step. `timer_livelock_limit` is how many timer calls a
    node may take at one virtual instant before `SimulationError` is raised.
    With `gro` (the default), datagrams that arrive over one link at the same
    instant reach a node that has `receive_batch(buf, seg, addr, now)`
    grouped as UDP GRO groups them for a real endpoint (`wire.batch.coalesce`:
    equal sizes, the last of a group maybe shorter); a lone datagram goes to
    `receive_datagram`.
    """

    def __init__(
        self,
        seed: int | str = 0,
        *,
        default_link: LinkConfig | None = None,
        trace: bool | Callable[[TraceRecord], Any] = False,
        timer_livelock_limit: int = 10_000,
        gro: bool = True,
    ) -> None:
        self.seed = seed
        self.gro = gro
        self.now = 0.0
        self.default_link = default_link if default_link is not None else LinkConfig()
        self.timer_livelock_limit = timer_livelock_limit
        self.events_processed = 0
        self.trace: list[TraceRecord] | None = None
        self._trace: Callable[[TraceRecord], Any] | None = None
        if trace is True:
            self.trace = []
            self._trace = self.trace.append
        elif callable(trace):
            self._trace = trace
        self._rng = random.Random(f"gannet.sim/{seed}")
        self._heap: list[tuple] = []
        self._seq = 0
        self._by_addr: dict[Any, _NodeState] = {}
        self._by_id: dict[int, _NodeState] = {}
        self._links: dict[tuple[Any, Any], Link] = {}

    # -- randomness ---------------------------------------------------------

    def make_rng(self, label: str) -> random.Random:
        """A generator derived from the seed and `label` only (not from call
        order), e.g. `Endpoint(rng=sim.make_rng("client"))`."""
        return random.Random(f"gannet.sim/{self.seed}/node/{label}")

    # -- nodes ----------------------------------------------------------------

    def add_node(
        self, addr: Any, node: Node, name: str | None = None, *,
        drain: Callable[[float], Iterable[tuple[bytes | bytearray, Any]]] | None = None,
    ) -> Node:
        """Attach `node` at address `addr` and flush whatever it already has
        to send (e.g. a SYN from a `connect` done before attaching).

        `drain(now)`: how the simulator takes the node's output after each
        input (default `node.datagrams_to_send`). A script that reacts to
        the node's events as they come (sim/scenario.py: the application's
        reads and writes) passes its own, which calls the node's."""
        if addr in self._by_addr:
            raise ValueError(f"address {addr!r} is already taken by {self._by_addr[addr].name}")
        if id(node) in self._by_id:
            raise ValueError(f"node {node!r} is already attached")
        state = _NodeState(node, addr, name or f"{type(node).__name__}@{addr!r}",
                           drain or node.datagrams_to_send)
        self._by_addr[addr] = state
        self._by_id[id(node)] = state
        self._service(state)
        return node

    def remove_node(self, node: Node) -> None:
        """Detach a node (a crash): its timer is cancelled, datagrams already
        in flight to its address are dropped as `unreachable`."""
        state = self._state(node)
        state.gen += 1
        state.deadline = None
        del self._by_addr[state.addr]
        del self._by_id[id(node)]

    def node_at(self, addr: Any) -> Node | None:
        state = self._by_addr.get(addr)
        return state.node if state is not None else None

    def address_of(self, node: Node) -> Any:
        return self._state(node).addr

    @property
    def nodes(self) -> list[Node]:
        return [s.node for s in self._by_addr.values()]

    def _state(self, node: Node) -> _NodeState:
        try:
            return self._by_id[id(node)]
        except KeyError:
            raise ValueError(f"node {node!r} is not attached") from None

    def poke(self, node: Node) -> None:
        """Flush `node`'s outgoing datagrams and re-read its timer now; call
        after acting on it outside a simulator callback (e.g. `conn.send`)."""
        self._service(self._state(node))

    def poke_all(self) -> None:
        """`poke` every node, in attach order."""
        for state in list(self._by_addr.values()):
            if self._by_addr.get(state.addr) is state:  # not removed meanwhile
                self._service(state)

    # -- links ----------------------------------------------------------------

    def link(self, src: Any, dst: Any) -> Link:
        """The link `src -> dst`, created with `default_link` on first use."""
        link = self._links.get((src, dst))
        if link is None:
            rng = random.Random(self._rng.getrandbits(64))
            link = self._links[(src, dst)] = Link(self, src, dst, self.default_link, rng)
        return link

    def set_link(self, src: Any, dst: Any, config: LinkConfig) -> Link:
        link = self.link(src, dst)
        link.config = config
        return link

    def set_links(self, a: Any, b: Any, config: LinkConfig) -> tuple[Link, Link]:
        """Configure both directions between `a` and `b` alike."""
        return self.set_link(a, b, config), self.set_link(b, a, config)

    @property
    def links(self) -> list[Link]:
        return list(self._links.values())

    def stats(self) -> dict[tuple[Any, Any], LinkStats]:
        """Snapshot of every link's counters, keyed by `(src, dst)`."""
        return {key: link.stats.copy() for key, link in self._links.items()}

    # -- scheduling -------------------------------------------------------------

    def _push(self, time: float, kind: int, a: Any, b: Any = None, c: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (time, self._seq, kind, a, b, c))

    def _schedule_arrival(self, time: float, link: Link, data: bytes, index: int | None) -> None:
        self._push(time, _ARRIVE, link, data, index)

    def call_at(self, time: float, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run `fn(*args, **kwargs)` at virtual time `time`, then flush every node.

        For application actions (`conn.send`, `conn.close`) and for link
        changes (`link.update(loss=1.0)`). Calls at the same time run in the
        order they were scheduled.
        """
        if time < self.now:
            raise ValueError(f"call_at({time}) is in the past (now={self.now})")
        self._push(time, _CALL, fn, args, kwargs)

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.call_at(self.now + delay, fn, *args, **kwargs)

    # -- running ------------------------------------------------------------------

    def _service(self, state: _NodeState) -> None:
        """After any input to a node: send what it emits, re-arm its timer."""
        node = state.node
        now = self.now
        out = state.drain(now)
        if out:
            src = state.addr
            for data, dst in out:
                if type(data) is not bytes:
                    data = bytes(data)  # the node may reuse its buffer
                link = self._links.get((src, dst)) or self.link(src, dst)
                link._offer(data, now)
        deadline = node.get_timer()
        if deadline is None:
            if state.deadline is not None:
                state.deadline = None
                state.gen += 1
        elif deadline != state.deadline:
            state.deadline = deadline
            state.gen += 1
            # A deadline in the past fires at the current time: the clock
            # never runs backwards.
            self._push(deadline if deadline > now else now, _TIMER, state, state.gen)

    def _fire_timer(self, state: _NodeState) -> None:
        now = self.now
        if now == state.burst_time:
            state.burst += 1
            if state.burst > self.timer_livelock_limit:
                raise SimulationError(
                    f"timer livelock: node {state.name} handled more than "
                    f"{self.timer_livelock_limit} timers at t={now!r} without the "
                    f"clock advancing; get_timer() keeps returning {state.deadline!r}"
                )
        else:
            state.burst_time = now
            state.burst = 1
        state.deadline = None  # consumed: the same value re-arms it
        if self._trace is not None:
            self._trace(TraceRecord(now, state.addr, state.addr, 0, "timer"))
        state.node.handle_timer(now)
        self._service(state)

    def _arrive(self, link: Link, data: bytes, index: int | None) -> None:
        now = self.now
        state = self._by_addr.get(link.dst)
        if state is None:
            link._drop("unreachable", now, len(data))
            return
        link._arrived(data, index, now)
        if self._trace is not None:
            self._trace(TraceRecord(now, link.src, link.dst, len(data), "deliver"))
        heap = self._heap
        batch = getattr(state.node, "receive_batch", None) if self.gro else None
        if batch is not None and heap and heap[0][0] == now and heap[0][2] == _ARRIVE and heap[0][3] is link:
            datagrams = [data]
            while heap and heap[0][0] == now and heap[0][2] == _ARRIVE and heap[0][3] is link:
                _, _, _, _, more, more_index = heapq.heappop(heap)
                link._arrived(more, more_index, now)
                if self._trace is not None:
                    self._trace(TraceRecord(now, link.src, link.dst, len(more), "deliver"))
                datagrams.append(more)
            for buf, seg in coalesce(datagrams):
                batch(buf, seg, link.src, now)
        else:
            state.node.receive_datagram(data, link.src, now)
        self._service(state)

    def pending(self) -> bool:
        """Whether any live event (arrival, timer, callback) is scheduled."""
        heap = self._heap
        while heap:
            entry = heap[0]
            if entry[2] == _TIMER and entry[4] != entry[3].gen:
                heapq.heappop(heap)  # stale timer
                continue
            return True
        return False

    def run(
        self,
        until: float | None = None,
        stop: Callable[[], bool] | None = None,
        max_events: int | None = 10_000_000,
    ) -> float:
        """Process events in time order; return the virtual time reached.

        Stops when `stop()` is true (checked first and after every event),
        when nothing is scheduled any more, or before the first event later
        than `until`; with `until` the clock then ends at exactly `until`
        unless `stop` ended the run. Events at exactly `until` are processed.
        Raises SimulationError after `max_events` events in this call (None:
        no limit). Every node is poked first, so actions done between runs
        are flushed.

        Any exception leaving a run (from a node, a callback or the
        simulator) carries a note with the seed and the virtual time, so a
        failing test always says which seed replays it.
        """
        try:
            return self._run(until, stop, max_events)
        except Exception as exc:
            exc.add_note(f"simulation seed={self.seed!r}, virtual time t={self.now!r} "
                         f"(Simulator(seed={self.seed!r}) replays this run)")
            raise

    def _run(self, until: float | None, stop: Callable[[], bool] | None, max_events: int | None) -> float:
        if until is not None and until < self.now:
            raise ValueError(f"run(until={until}) is in the past (now={self.now})")
        self.poke_all()
        heap = self._heap
        pop = heapq.heappop
        count = 0
        while True:
            if stop is not None and stop():
                return self.now
            while heap and heap[0][2] == _TIMER and heap[0][4] != heap[0][3].gen:
                pop(heap)  # stale timer entry: superseded or cancelled
            if not heap or (until is not None and heap[0][0] > until):
                break
            if max_events is not None and count >= max_events:
                raise SimulationError(
                    f"more than {max_events} events without finishing (t={self.now!r}); "
                    "raise max_events or pass until/stop"
                )
            time, _seq, kind, a, b, c = pop(heap)
            self.now = time
            count += 1
            self.events_processed += 1
            if kind == _ARRIVE:
                self._arrive(a, b, c)
            elif kind == _TIMER:
                self._fire_timer(a)
            else:
                a(*b, **c)
                self.poke_all()
        if until is not None:
            self.now = until
        return self.now
