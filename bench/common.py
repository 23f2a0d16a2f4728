"""Shared pieces of the side-by-side benchmark runners.

Every runner module (``bench/run_*.py``) is started twice by ``compare.py``:
once as ``server`` and once as ``client``, each in its own process.  The
protocol between the orchestrator and a runner process is deliberately tiny:

* the server binds an ephemeral loopback port and prints ``READY <port>``
  on stdout as soon as it can accept work;
* every process ends by printing one line ``RESULT <json>`` on stdout;
* a runner whose transport cannot be used prints ``RESULT`` with an
  ``"unavailable"`` reason and exits 0, so the table can say why.

Workloads:

``bulk``
    the client streams ``--bytes`` bytes of a deterministic pseudo-random
    pattern to the server.  Both sides compute CRC32C incrementally over
    large chunks; the orchestrator compares count and checksum.  Goodput is
    measured from the client's first send to the server's last receive
    (``time.monotonic`` is one system-wide clock on Linux, so the two
    processes' timestamps are comparable).
``pingpong``
    the client sends ``--count`` messages of ``--size`` bytes (64 by
    default) one at a time and waits for the server's echo; each round
    trip is timed with ``perf_counter_ns`` and each echo is compared to
    what was sent.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:  # project dependency: hardware CRC32C, several GB/s
    from crc32c import crc32c as _crc

    HASH_NAME = "crc32c"
except ImportError:  # pragma: no cover - fallback keeps the harness usable
    from zlib import crc32 as _crc

    HASH_NAME = "crc32"

HOST = "127.0.0.1"
SEED = 0x6A77E7
# Pattern period: a few MiB and deliberately not a power of two, so that a
# transport that repeats or reorders whole aligned chunks changes the hash.
PATTERN_LEN = (4 << 20) + 4099
MAX_CHUNK = 1 << 20  # largest slice a sender asks for
END_MAGIC = b"GANNET-BENCH-END\x00"  # end-of-blast marker for raw UDP runs


def crc_update(crc: int, data) -> int:
    return _crc(data, crc)


class Pattern:
    """A deterministic pseudo-random byte stream of any length.

    ``view(offset, n)`` returns a zero-copy memoryview of the stream bytes
    ``[offset, offset + n)`` for ``n <= MAX_CHUNK``.
    """

    def __init__(self, seed: int = SEED) -> None:
        self._buf = _DEFAULT_PATTERN if seed == SEED else _pattern_bytes(seed)

    def view(self, offset: int, n: int) -> memoryview:
        if n > MAX_CHUNK:
            raise ValueError("chunk too large")
        start = offset % PATTERN_LEN
        return self._buf[start : start + n]


def _pattern_bytes(seed: int) -> memoryview:
    base = random.Random(seed).randbytes(PATTERN_LEN)
    return memoryview(base + base[:MAX_CHUNK])


# Made when a runner imports this module, before it connects: building it
# takes 10-20 ms, which a client that made it after connecting spent with
# its transport's first round trips under way (and a Gannet client's event
# loop blocked, its handshake ACK held: the server's first RTT sample
# then measured the pattern's making).
_DEFAULT_PATTERN = _pattern_bytes(SEED)


class Corruptor:
    """Flips one byte of the outgoing stream at a given offset (test hook).

    The sender hashes the *intended* bytes and transmits a copy with one
    byte flipped, which is what a transport that corrupts data would look
    like to the receiver.  ``--corrupt-at -1`` (the default) disables it.
    """

    def __init__(self, at: int) -> None:
        self.at = at

    def apply(self, offset: int, chunk: memoryview):
        at = self.at
        if at < 0 or not (offset <= at < offset + len(chunk)):
            return chunk
        copy = bytearray(chunk)
        copy[at - offset] ^= 0xFF
        return copy


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


@dataclass
class Meter:
    """CPU and wall clock over the measured window of one process."""

    t0: float = 0.0
    c0: float = 0.0
    t1: float = 0.0
    c1: float = 0.0

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.c0 = cpu_seconds()

    def stop(self) -> None:
        self.t1 = time.monotonic()
        self.c1 = cpu_seconds()

    def as_dict(self) -> dict[str, float]:
        return {"t_start": self.t0, "t_end": self.t1, "cpu": self.c1 - self.c0}


class BulkReceiver:
    """Counts and hashes received bulk bytes; times first to last byte."""

    def __init__(self, expected: int = 0) -> None:
        self.expected = expected  # 0 = unknown (stream ends with EOF)
        self.nbytes = 0
        self.crc = 0
        self.t_first = 0.0
        self.t_last = 0.0
        self.c_first = 0.0
        self.c_end = 0.0

    def feed(self, data) -> None:
        now = time.monotonic()
        if not self.nbytes:
            self.t_first = now
            self.c_first = cpu_seconds()
        self.t_last = now
        self.nbytes += len(data)
        self.crc = _crc(data, self.crc)

    @property
    def done(self) -> bool:
        return 0 < self.expected <= self.nbytes

    def result(self, **extra: Any) -> dict[str, Any]:
        self.c_end = cpu_seconds()
        d = {
            "bytes": self.nbytes,
            "crc": self.crc,
            "t_start": self.t_first,
            "t_end": self.t_last,
            "cpu": (self.c_end - self.c_first) if self.nbytes else 0.0,
        }
        d.update(extra)
        return d


class BulkSender:
    """Yields the chunks of the bulk stream and hashes the intended bytes."""

    def __init__(self, args, chunk: int | None = None) -> None:
        self.total = args.bytes
        self.chunk = min(chunk or args.chunk, MAX_CHUNK)
        self.time_limit = args.time_limit
        self.pattern = Pattern()
        self.corrupt = Corruptor(args.corrupt_at)
        self.sent = 0
        self.crc = 0
        self.meter = Meter()

    def chunks(self):
        """Chunks to transmit, in order; stops at the byte count or time limit."""
        self.meter.start()
        deadline = self.meter.t0 + self.time_limit if self.time_limit > 0 else None
        n = 0
        while self.sent < self.total:
            size = min(self.chunk, self.total - self.sent)
            view = self.pattern.view(self.sent, size)
            self.crc = _crc(view, self.crc)
            out = self.corrupt.apply(self.sent, view)
            self.sent += size
            yield out
            n += 1
            if deadline is not None and not n & 7 and time.monotonic() >= deadline:
                break

    def result(self, **extra: Any) -> dict[str, Any]:
        self.meter.stop()
        d = {"bytes": self.sent, "crc": self.crc, **self.meter.as_dict()}
        d.update(extra)
        return d


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    """p50/p90/p99/max of round-trip samples, in microseconds."""
    if not samples_ns:
        return {}
    s = sorted(samples_ns)

    def pick(q: float) -> float:
        i = min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))
        return s[i] / 1000.0

    return {
        "p50_us": pick(0.50),
        "p90_us": pick(0.90),
        "p99_us": pick(0.99),
        "max_us": s[-1] / 1000.0,
        "mean_us": sum(s) / len(s) / 1000.0,
    }


def free_udp_port() -> int:
    """An ephemeral loopback UDP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def big_buffers(sock: socket.socket, size: int = 8 << 20) -> None:
    """Ask for large kernel socket buffers (forced past rmem_max as root)."""
    for force, plain in ((33, socket.SO_RCVBUF), (32, socket.SO_SNDBUF)):
        try:  # SO_RCVBUFFORCE / SO_SNDBUFFORCE need CAP_NET_ADMIN
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            try:
                sock.setsockopt(socket.SOL_SOCKET, plain, size)
            except OSError:
                pass


def ready(port: int) -> None:
    print(f"READY {port}", flush=True)


def emit(result: dict[str, Any]) -> None:
    result.setdefault("hash", HASH_NAME)
    print("RESULT " + json.dumps(result), flush=True)


def unavailable(reason: str) -> None:
    emit({"unavailable": reason})
    sys.stdout.flush()
    os._exit(0)


def parser(description: str) -> argparse.ArgumentParser:
    """The command line every runner accepts (extra options per runner)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("role", choices=["server", "client", "probe"])
    p.add_argument("--workload", choices=["bulk", "pingpong"], default="bulk")
    p.add_argument("--host", default=HOST)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--bytes", type=int, default=64 << 20)
    p.add_argument("--count", type=int, default=2000, help="ping-pong round trips")
    p.add_argument("--size", type=int, default=64, help="ping-pong message size")
    p.add_argument("--time-limit", type=float, default=0.0,
                   help="bulk: stop sending after this many seconds (0 = no limit)")
    p.add_argument("--corrupt-at", type=int, default=-1,
                   help="test hook: the sender flips the stream byte at this offset")
    p.add_argument("--chunk", type=int, default=256 * 1024, help="bulk write size")
    return p


def pingpong_message(pattern: Pattern, i: int, size: int) -> memoryview:
    return pattern.view(i * size, size)


def dispatch(args, server, client) -> None:
    """Run the role a runner was started in: probe (report ready), server or client."""
    if args.role == "probe":
        emit({"ok": True})
    elif args.role == "server":
        server(args)
    else:
        client(args)


def machine_info() -> dict[str, Any]:
    """CPU count and model, kernel, Python and load average, for a report's header."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "python": platform.python_version(), "loadavg": os.getloadavg()}
