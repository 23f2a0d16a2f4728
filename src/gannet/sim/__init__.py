"""Deterministic simulated network for driving sans-I/O Gannet Endpoints.

Why: transport bugs hide in rare interleavings of loss, reordering and
timers. On a real network they show up once and never again; here a run is a
pure function of its seed and script, so a failing seed replays exactly,
byte for byte, and thousands of seeds run in seconds because time is virtual.
There is no real time, no socket and no thread anywhere in this package.

Quick start::

    from gannet.core.endpoint import Endpoint
    from gannet.sim import Simulator, LinkConfig

    sim = Simulator(seed=7, default_link=LinkConfig(delay=0.02, loss=0.01))
    a = sim.add_node(("10.0.0.1", 4000), Endpoint(rng=sim.make_rng("a")))
    b = sim.add_node(("10.0.0.2", 4000), Endpoint(rng=sim.make_rng("b")))
    b.listen()
    conn = a.connect(("10.0.0.2", 4000), sim.now)
    sim.poke(a)                                  # flush the SYN
    fwd = sim.link(("10.0.0.1", 4000), ("10.0.0.2", 4000))
    sim.call_at(5.0, fwd.update, loss=1.0)       # outage from t=5 ...
    sim.call_at(10.0, fwd.update, loss=0.01)     # ... to t=10
    sim.call_at(1.0, conn.send, b"hello")        # flushed after the call
    sim.run(until=60.0)

Nodes. Anything with the Endpoint methods `receive_datagram(data, addr,
now)`, `datagrams_to_send(now)`, `get_timer()` and `handle_timer(now)` can
be attached at an address (any hashable; opaque to the node). A node
receives datagrams with the sender's address as `addr`. After every input
to a node (a datagram or a timer) the simulator drains `datagrams_to_send`
and re-reads `get_timer`; after every `call_at` callback it does that for
all nodes (in attach order); `poke(node)` / `poke_all()` do it on demand,
and `run` pokes all nodes before starting.

Timers. `handle_timer(now)` is called with `now` equal to the deadline
when the deadline is in the future when read, or with the current time when
a node returns a deadline already past. A node that keeps returning a past
deadline is run again at the same instant; after `timer_livelock_limit`
(default 10000) timer calls without the clock advancing, `SimulationError`
names the node.

Links. One `Link` per direction, created on first use from
`Simulator.default_link` or set with `set_link` / `set_links`. A frozen
`LinkConfig` describes delay, uniform jitter, loss, Gilbert-Elliott bursty
loss, explicit reordering, duplication, bit corruption, truncation,
bandwidth with a byte-limited drop-tail queue, and MTU; see its docstring
for the exact order of processing. Assign `link.config` or call
`link.update(...)` at any time. `link.drop_if(pred)` / `link.drop_nth(i)`
drop chosen datagrams (0-based link index) for unit tests.

Running. `run(until=None, stop=None, max_events=10_000_000)` returns the
virtual time reached; `sim.now` is the clock. Events at the same time run in
the order they were scheduled.

Randomness. Every link has a `random.Random` derived from the seed in
link-creation order; `make_rng(label)` derives a generator from the seed and
a label for the nodes themselves. Nothing reads the global random module.

Observability. `stats()` snapshots per-link `LinkStats`; `trace=True`
collects `TraceRecord(time, src, dst, length, event)` tuples in
`sim.trace`, or pass a callable to receive them. Tracing is off by default.
"""

from .config import DROP_REASONS, LinkConfig, LinkStats, SimulationError
from .link import DropPredicate, Link, TraceRecord
from .network import Node, Simulator

__all__ = [
    "DROP_REASONS",
    "DropPredicate",
    "Link",
    "LinkConfig",
    "LinkStats",
    "Node",
    "SimulationError",
    "Simulator",
    "TraceRecord",
]
