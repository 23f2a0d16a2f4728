"""CPU cost of Gannet's sans-I/O core alone: no sockets, no event loop.

Two Endpoints in one process hand each other their output directly (runs as
trains, split into GRO-shaped batches), so what is measured is the core's
Python and the wire encoding, both sides together, on CPU time:

    python bench/core_cost.py bulk --mtu 1472 --mb 100   # CPU s per GB moved
    python bench/core_cost.py bulk --mtu 65000 --mb 300
    python bench/core_cost.py bulk --mtu 65000 --mb 300 --gather   # runs as SourceTrains
    python bench/core_cost.py pingpong --count 20000      # us per 64-byte round trip

`--encrypted` runs the same through two SecureEndpoints (the default
protection, AES-128-GCM), `--insecure` through two with encryption off:
their difference is what the security layer costs.

Compare the result with `bench/compare.py`'s CPU s/GB for the same datagram
size: the difference is the kernel, the asyncio adapter and the streams.
"""

from __future__ import annotations

import argparse
import random
import time

from gannet.config import Config
from gannet.core.endpoint import Endpoint
from gannet.wire.batch import Train, release

try:
    from gannet.wire.batch import load_numpy
except ImportError:  # a tree whose wire.batch imports numpy itself (comparisons)
    def load_numpy() -> None:
        pass


SECURITY = None  # None: plain Endpoints; else the Security of two SecureEndpoints


def endpoint(config: Config, rng: random.Random) -> Endpoint:
    if SECURITY is None:
        return Endpoint(config, rng)
    from gannet.crypto.endpoint import SecureEndpoint

    return SecureEndpoint(config, rng, security=SECURITY)


def pair(config: Config):
    a, b = endpoint(config, random.Random(1)), endpoint(config, random.Random(2))
    b.listen(4)
    ca = a.connect("B", 0.0)
    for _ in range(3):
        pump(a, b, "A", 0.0)
        pump(b, a, "B", 0.0)
    cb = b.accept()
    assert cb is not None, "handshake did not complete"
    return a, b, ca, cb


def pump(src: Endpoint, dst: Endpoint, name: str, now: float) -> None:
    for d, _ in src.datagrams_to_send(now, True):
        # A train arrives as one GRO batch, as it would on loopback.
        if type(d) is not Train and type(d) is not bytes and type(d) is not bytearray:
            d = d.train()  # a SourceTrain (--gather): its datagrams, as the kernel would copy them
            dst.receive_batch(d, d.size if len(d) > d.size else 0, name, now)
        elif type(d) is Train:
            dst.receive_batch(d, d.size, name, now)
            # ... and goes back to the pool, as the adapter gives it back
            # once the kernel has copied it (the receiver keeps no view of it).
            release(d)
        else:
            dst.receive_batch(d, 0, name, now)
    # The events are taken, as an adapter takes them after each input (left
    # in the queue, a run's 40,000 events were live objects that the garbage
    # collector walked again and again).
    while dst.next_event() is not None:
        pass


def bulk(mtu: int, mb: int, cc: str, gather: bool = False) -> None:
    a, b, ca, cb = pair(Config(pmtud=False, max_datagram_size=mtu, congestion_control=cc))
    a.source_trains = gather  # (as the I/O adapter asks with GSO; each train is then copied here)
    load_numpy()  # (once per process, at the first run otherwise: not per GB)
    chunk = bytes(1 << 20)
    total = mb << 20
    sent = got = 0
    now = 0.0
    start = time.process_time()
    while got < total:
        now += 0.0002
        if sent < total:
            sent += ca.send(chunk[: total - sent])
        pump(a, b, "A", now)
        got += len(cb.recv(1 << 22))
        pump(b, a, "B", now)
        a.handle_timer(now)
        b.handle_timer(now)
    cpu = time.process_time() - start
    print(f"bulk, {mtu} B datagrams, {cc}: {cpu / (got / 1e9):.2f} CPU s/GB (both sides), "
          f"{cb.stats.fast_path_segments} of {cb.stats.segments_received} segments on the fast path, "
          f"{ca.stats.runs_sent} runs sent")


def pingpong(count: int, cc: str) -> None:
    a, b, ca, cb = pair(Config(pmtud=False, congestion_control=cc))
    msg = b"p" * 64
    now = 0.0

    def rounds(n: int) -> None:
        nonlocal now
        for i in range(n):
            now += 0.0001
            ca.send(msg)
            pump(a, b, "A", now)
            cb.send(cb.recv(64))
            pump(b, a, "B", now)
            assert ca.recv(64) == msg
            if i % 50 == 0:
                a.handle_timer(now)
                b.handle_timer(now)

    rounds(500)
    start = time.process_time()
    rounds(count)
    cpu = time.process_time() - start
    print(f"ping-pong, 64 B, {cc}: {cpu / count * 1e6:.1f} us of core CPU per round trip (both sides)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    pb = sub.add_parser("bulk")
    pb.add_argument("--mtu", type=int, default=1472)
    pb.add_argument("--mb", type=int, default=100)
    pb.add_argument("--gather", action="store_true",
                    help="the sender's runs as SourceTrains, as the I/O adapter asks with GSO")
    pb.add_argument("--cc", default="newreno")
    pp = sub.add_parser("pingpong")
    pp.add_argument("--count", type=int, default=20000)
    pp.add_argument("--cc", default="bbr")
    for sp in (pb, pp):
        kind = sp.add_mutually_exclusive_group()
        kind.add_argument("--encrypted", action="store_true", help="two SecureEndpoints (AES-128-GCM)")
        kind.add_argument("--insecure", action="store_true", help="two SecureEndpoints, encryption off")
    args = p.parse_args()
    if args.encrypted or args.insecure:
        from gannet.crypto.endpoint import Security

        global SECURITY
        SECURITY = Security(insecure=args.insecure, has_aes=True)
    if args.what == "bulk":
        bulk(args.mtu, args.mb, args.cc, args.gather)
    else:
        pingpong(args.count, args.cc)


if __name__ == "__main__":
    main()
