"""The client's half of a code exchange computed by a forked child, started
while a command loads (gannet.crypto.spake).

Of the instructions `gannet send --code` executed before its SYN, a third
(some 235 of 654 million, 25-30 ms) went to importing spake2 (its module
level checks the generators of three integer groups with `pow` and derives
its Ed25519 constants in pure Python) and computing the first SPAKE2
message (two scalar multiplications in pure Python); the rest of its way
to the SYN (asyncio, cryptography, Gannet's modules, the endpoint) needs
none of it. One interpreter runs Python on one core at a time, so a thread
would only take turns with the main one; a child process runs on another
core.

`start_ahead(code)` forks the child as soon as the command has parsed its
code (gannet.cli.main, before the stats socket's thread exists and before
the sender's own modules), after what both processes load (hashlib, json,
cryptography's bindings): it imports spake2, computes the message and
writes it to a pipe, then reads the server's message from another, writes
back the SPAKE2 key (the finish) and exits. The parent offers it to the
handshake (gannet.crypto.spake), which reads the message for its SYN. The
protocol, the library and the key are the same as in one process; the
child is a fork of this one (the same user, its memory a copy), so the
code goes nowhere it was not. A fork, not a fresh interpreter: one would
spend 357 million instructions to its message (its own start and the
imports a fork finds done), and the message would come after the point
where the sender needs it (BENCHMARKS.md, start-up, sixth pass); the fork
costs the parent about a thousand pages copied on write as it goes on, a
few milliseconds.

A child that cannot be made (no `os.fork`, no descriptors left) or that
ends before its message is replaced by the exchange in this process; one
that ends after it (the message left in the SYN, and the secret scalar
behind it with the child) fails that handshake with ExchangeLost. Where
no CPU is likely idle (or this process may run on one CPU only), no child
is started: it would only take turns with the parent.
"""

from __future__ import annotations

import os

from ..crypto import spake
from ..crypto.spake import KEY_SIZE, MESSAGE_SIZE, ExchangeLost

TYPE_CHECKING = False  # (typing.TYPE_CHECKING without importing typing)
if TYPE_CHECKING:
    from typing import Any

# A child's answer to the server's message: OK then the key, or BAD_ELEMENT
# (spake2 refused the message) then as many zeros.
OK = 0
BAD_ELEMENT = 1
# How long the parent waits for an answer of its child before giving up on
# it: the child computes for tens of milliseconds on a quiet machine, but
# on a busy one it waits for a core as any process does.
ANSWER_TIMEOUT = 30.0


def start_ahead(code: str) -> bool:
    """Start the client's half of the exchange for `code` (normalized) in a
    forked child and offer it to the next handshake with that code; False
    (nothing started) where this process cannot fork, no CPU is likely idle
    for the child (or this process may run on one CPU only), or one is
    offered already."""
    if spake.offered(code) or not hasattr(os, "fork") or not _wanted():
        return False
    # What spake2 imports and this process loads for itself too (hashlib,
    # json, cryptography's bindings with the HKDF that spake2 uses), loaded
    # once before the fork rather than in both processes after it.
    import hashlib  # noqa: F401
    import json  # noqa: F401

    import cryptography.hazmat.primitives.kdf.hkdf  # noqa: F401
    try:
        spake.offer(code, ForkedExchange(code))
    except OSError:
        return False
    return True


def _cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # (not Linux)
        return os.cpu_count() or 1


def _wanted() -> bool:
    """Whether a child would run beside this process: a CPU is likely idle
    (the last minute's load average below the CPUs this process may use).
    The child's work is the parent's, moved: it shortens the way to the SYN
    only where it runs beside the parent; on a busy machine it would wait
    for a CPU as the parent does, and the parent would pay for the fork
    (BENCHMARKS.md, start-up, sixth pass).
    GANNET_SPAKE_CHILD=1 starts one whatever the load, =0 never."""
    setting = os.environ.get("GANNET_SPAKE_CHILD", "").strip().lower()
    if setting in ("0", "no", "false", "off"):
        return False
    if setting in ("1", "yes", "true", "on"):
        return True
    cpus = _cpus()
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return cpus > 1 and load < cpus


class ForkedExchange:
    """SPAKE2_A's `start` and `finish`, computed by a forked child."""

    def __init__(self, code: str) -> None:
        self._code = code
        self._pid: int | None = None
        self._started = False
        down_r, down_w = os.pipe()  # parent -> child: the server's message
        try:
            up_r, up_w = os.pipe()  # child -> parent: our message, then the key
        except OSError:
            os.close(down_r)
            os.close(down_w)
            raise
        try:
            pid = os.fork()
        except OSError:
            for fd in (down_r, down_w, up_r, up_w):
                os.close(fd)
            raise
        if pid == 0:  # the child: never returns
            status = 1
            try:
                os.close(down_w)
                os.close(up_r)
                _serve(code, down_r, up_w)
                status = 0
            finally:
                os._exit(status)  # (no atexit handlers, no stdio buffers of the parent's)
        os.close(down_r)
        os.close(up_w)
        self._pid = pid
        self._to_child: int | None = down_w
        self._from_child: int | None = up_r
        self._local: Any = None  # the exchange in this process, if the child failed first

    def start(self) -> bytes:
        """Our SPAKE2 message (waits for the child to have computed it)."""
        message = _read(self._from_child, MESSAGE_SIZE)
        self._started = True
        if message is None:
            self.close()
            self._local = spake.local_exchange(self._code)
            return self._local.start()
        return message

    def finish(self, message: bytes) -> bytes:
        """The SPAKE2 key for the server's `message`. ValueError when spake2
        refuses the message; ExchangeLost when the child is gone."""
        if self._local is not None:
            return self._local.finish(message)
        if not self._started:
            raise ValueError("finish before start")
        if len(message) != MESSAGE_SIZE:
            raise ValueError(f"a SPAKE2 message is {MESSAGE_SIZE} bytes")
        try:
            if self._to_child is None:
                raise ExchangeLost("the code exchange was ended")
            try:
                _write(self._to_child, bytes(message))
            except OSError:
                raise ExchangeLost("the process computing the code exchange ended") from None
            answer = _read(self._from_child, 1 + KEY_SIZE)
        finally:
            self.close()
        if answer is None:
            raise ExchangeLost("the process computing the code exchange ended")
        if answer[0] != OK:
            raise ValueError("the peer's SPAKE2 message is not a valid element")
        return answer[1:]

    def close(self) -> None:
        """End the child (if it has not ended) and reap it; close the pipes."""
        for fd in (self._to_child, self._from_child):
            if fd is not None:
                os.close(fd)
        self._to_child = self._from_child = None
        pid, self._pid = self._pid, None
        if pid is not None:
            import signal

            # (ours to signal: this wait is what reaps it)
            try:
                os.kill(pid, signal.SIGTERM)  # it may be computing what nobody will read
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass

    def __del__(self) -> None:
        if self._pid is not None:
            self.close()


def _serve(code: str, from_parent: int, to_parent: int) -> None:
    """The child: our message, then the key for the server's message."""
    import contextlib
    import signal

    # Ctrl-C interrupts the parent, whose exit closes the pipe: that ends
    # the child, without a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A session of its own: where the kernel shares the CPU among sessions
    # first (Linux's autogroup), a child in the parent's session would take
    # its CPU time out of the parent's share, and on a busy machine the two
    # would only take turns (the sender gained nothing and paid for the
    # fork: 8-19 % slower to its SYN at load 2-4, where a child in a session
    # of its own gave 1.01x; BENCHMARKS.md, start-up, sixth pass).
    with contextlib.suppress(OSError):
        os.setsid()
    exchange = spake.local_exchange(code)
    _write(to_parent, exchange.start())
    message = _read(from_parent, MESSAGE_SIZE, timeout=None)
    if message is None:
        return  # the parent never needed the finish
    try:
        key = exchange.finish(message)
    except Exception:  # spake2 raises its own errors for bad elements
        _write(to_parent, bytes((BAD_ELEMENT,)) + bytes(KEY_SIZE))
        return
    _write(to_parent, bytes((OK,)) + key)


def _read(fd: int | None, size: int, timeout: float | None = ANSWER_TIMEOUT) -> bytes | None:
    """Exactly `size` bytes from `fd`, or None at its end (or after
    `timeout` seconds without them)."""
    if fd is None:
        return None
    import select
    import time

    deadline = None if timeout is None else time.monotonic() + timeout
    data = b""
    while len(data) < size:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
        try:
            chunk = os.read(fd, size - len(data))
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    return data


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
