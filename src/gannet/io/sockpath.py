"""The blocking `Socket`'s per-call path, compiled (gannet._build.MODULES).

`SocketPath` is the base class of `io.blocking.Socket`: it holds the state
each call reads (the connection's waiter, the endpoint, the shutdown flags,
the timeout) as native attributes, and runs what a message costs the
caller: `send`, `sendall`, `recv` and `recv_into`, the wait that drives the
endpoint (`wait`) and the readiness checks. Opening, closing, options and
the rest are Socket's, in Python. `_ConnWaiter` (the per-connection state
the endpoint's passes update and waiting threads read) is native for the
same reason: its handler runs once per event.

Why a base class rather than compiled functions beside a Python class
(docs/design.md, "What a blocking `Socket` round trip costs"): the public
class stays a Python class (users may subclass it or set attributes on it),
while the attributes every call reads are struct reads here, and the parts
of the call reach each other as native functions. Under GANNET_PURE=1 this
module runs from this source.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from typing import Any, Final

from mypy_extensions import mypyc_attr

from ..config import Config
from ..core.connection import Connection
from ..core.events import ConnectionEstablished, ConnectionTerminated, DataReceived, Event, StreamEnded
from ..core.states import State
from .datapath import DatagramPath, begin_drive, drive, end_drive

_CLOSED: Final = State.CLOSED  # (an enum member's lookup is slow in Python 3.11: readiness checks ask often)
_WRITABLE: Final = (State.SYN_SENT, State.SYN_RECEIVED, State.ESTABLISHED, State.CLOSE_WAIT)

# The event classes the handler tells apart, as Final names (read per event).
_DataReceived: Final = DataReceived
_StreamEnded: Final = StreamEnded
_ConnectionEstablished: Final = ConnectionEstablished
_ConnectionTerminated: Final = ConnectionTerminated

# What a wait waits for (`wait`'s `kind`): the two of every message are
# asked natively; the rest (accept, connect) through a callable.
READ: Final = 0
WRITE: Final = 1
OTHER: Final = 2


class _ConnWaiter:
    """Per-connection state the endpoint's passes update and application
    threads wait on."""

    aep: DatagramPath
    conn: Connection
    cond: Any  # threading.Condition of aep.lock
    established: bool
    discard: bool
    error: Exception | None

    def __init__(self, aep: DatagramPath, conn: Connection, cond: Any) -> None:
        self.aep = aep
        self.conn = conn
        self.cond = cond
        self.established = conn.established
        self.discard = False
        self.error = conn.error
        endpoint: Any = aep  # (an AioEndpoint: attach is its)
        endpoint.attach(conn, self.on_event)

    def on_event(self, ev: Event) -> None:  # whoever runs the endpoint's pass, lock held
        kind = type(ev)
        if kind is _DataReceived or kind is _StreamEnded:  # (most events: a message)
            if self.discard:
                self.drop_input()
        elif kind is _ConnectionEstablished:
            self.established = True
        elif isinstance(ev, _ConnectionTerminated) and ev.error is not None:
            self.error = ev.error
        cond = self.cond
        if cond._waiters:  # (usually none: the reader drives the endpoint itself)
            cond.notify_all()

    def drop_input(self) -> None:
        conn = self.conn
        while conn.readable_bytes:
            conn.recv(conn.readable_bytes)


def oserror(code: int, what: str = "") -> OSError:
    msg = os.strerror(code)
    return OSError(code, f"{msg}: {what}" if what else msg)


@mypyc_attr(allow_interpreted_subclasses=True)
class SocketPath:
    """The per-call state and path of a blocking Socket (its base class)."""

    family: int
    wire: str
    config: Config
    _timeout: float | None = None
    _aep: DatagramPath | None = None  # (an AioEndpoint)
    _owns_aep: bool = False
    _w: _ConnWaiter | None = None
    _listening: bool = False
    _accept_cond: Any = None  # threading.Condition | None
    _closed: bool = False
    _rd_shut: bool = False
    _wr_shut: bool = False

    def send(self, data: bytes | bytearray | memoryview) -> int:
        """Queue what fits in the send buffer (waiting for room); returns the count."""
        w = connected_for_write(self)
        if type(data) is not bytes and type(data) is not bytearray:
            data = memoryview(data).cast("B")
        if not len(data):
            return 0
        with w.aep.lock:
            return send_locked(self, w, data, None)

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        """Send everything (the timeout, if any, bounds the whole call)."""
        w = connected_for_write(self)
        if type(data) is not bytes and type(data) is not bytearray:
            data = memoryview(data).cast("B")
        timeout = self._timeout
        deadline = None if not timeout else time.monotonic() + timeout
        total = len(data)
        with w.aep.lock:
            sent = send_locked(self, w, data, deadline) if total else 0
            if sent < total:  # (the rest through a view: slicing bytes would copy them)
                view = memoryview(data)
                while sent < total:
                    sent += send_locked(self, w, view[sent:], deadline)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """Wait for at least one byte; b"" at end of stream."""
        if not isinstance(bufsize, int) or bufsize < 0:
            raise ValueError("negative buffersize in recv")
        if flags:
            raise ValueError("recv flags are not supported")
        return recv_locked(self, bufsize)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        view = memoryview(buffer).cast("B")
        if nbytes < 0:
            raise ValueError("negative buffersize in recv_into")
        n = nbytes or len(view)
        if n > len(view):
            raise ValueError("buffer too small for requested bytes")
        if flags:
            raise ValueError("recv flags are not supported")
        data = recv_locked(self, n)
        k = len(data)
        view[:k] = data
        return k

    def _wait(self, cond: Any, ready: Callable[[], bool], deadline: float | None = None) -> None:
        wait(self, cond, OTHER, ready, deadline)

    def _connected(self) -> _ConnWaiter:
        return connected(self)


def connected(s: SocketPath) -> _ConnWaiter:
    if s._closed:
        raise oserror(errno.EBADF, "socket is closed")
    w = s._w
    if w is None:
        raise oserror(errno.ENOTCONN, "socket is not connected")
    return w


def connected_for_write(s: SocketPath) -> _ConnWaiter:
    if s._closed or s._wr_shut:
        raise BrokenPipeError(errno.EPIPE, "socket is shut down for writing")
    w = s._w
    return w if w is not None else connected(s)


def can_read(s: SocketPath, conn: Connection) -> bool:
    return conn.readable_bytes > 0 or conn.eof or conn.state is _CLOSED or s._rd_shut or s._closed


def can_write(s: SocketPath, conn: Connection) -> bool:
    return conn.send_space > 0 or conn.error is not None or s._closed or s._wr_shut \
        or conn.state not in _WRITABLE


def is_ready(s: SocketPath, kind: int, ready: Callable[[], bool] | None) -> bool:
    if kind == READ or kind == WRITE:
        w = s._w
        assert w is not None  # (connected)
        return can_read(s, w.conn) if kind == READ else can_write(s, w.conn)
    assert ready is not None
    return ready()


def recv_locked(s: SocketPath, bufsize: int) -> bytes:
    """Socket.recv after its argument checks (it takes the lock)."""
    w = s._w
    if w is None or s._closed:
        w = connected(s)  # (raises)
    if bufsize == 0 or s._rd_shut:
        return b""
    conn = w.conn
    aep = w.aep
    with aep.lock:
        wait(s, w.cond, READ, None, None)
        if conn.readable_bytes and not s._rd_shut:
            data = conn.recv(bufsize)
            aep.flush_threadsafe()  # the window may have opened
            return data
        if conn.error is not None and not conn.eof:
            from .endpoint import copy_error

            raise copy_error(conn.error)
        return b""


def send_locked(s: SocketPath, w: _ConnWaiter, data: bytes | bytearray | memoryview,
                deadline: float | None) -> int:
    """With the lock held: queue what fits of `data` (waiting for room)
    and hand what the core has ready to the kernel, on this thread."""
    conn = w.conn
    while True:
        if s._closed or s._wr_shut:
            raise BrokenPipeError(errno.EPIPE, "socket is shut down for writing")
        # Call send even when full: a short send is what asks the core
        # for SendSpaceAvailable.
        n = conn.send(data)  # raises the connection's error, or BrokenPipeError
        if n:
            w.aep.flush_threadsafe()  # sent from this thread, at once
            return n
        wait(s, w.cond, WRITE, None, deadline)


def wait(s: SocketPath, cond: Any, kind: int, ready: Callable[[], bool] | None,
         deadline: float | None) -> None:
    """With the endpoint's lock held (cond is a Condition of it): wait until
    what `kind` names is ready (`ready()` for OTHER), honouring the timeout.
    The thread drives the endpoint while it waits (reads the socket, runs
    the core, fires its deadlines); if another thread drives it, it waits on
    cond, notified by that thread's passes, and is handed the drive when it
    leaves."""
    if is_ready(s, kind, ready):
        return
    timeout = s._timeout
    if timeout == 0:
        raise BlockingIOError(errno.EAGAIN, "operation would block")
    if deadline is None and timeout is not None:
        deadline = time.monotonic() + timeout
    aep = s._aep
    assert aep is not None
    while True:  # (ready was False on entry, and is asked again after each wait)
        left: float | None = None
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("timed out")
        if begin_drive(aep):
            try:
                drive(aep, None if left is None else aep.now() + left, None)
            finally:
                end_drive(aep)
        else:
            d = aep._drive
            waiting: dict[Any, int] | None = None if d is None else d.waiting
            if waiting is None:  # (the endpoint closed before anyone drove it)
                cond.wait(left)
            else:
                waiting[cond] = waiting.get(cond, 0) + 1
                try:
                    cond.wait(left)
                finally:
                    if waiting[cond] == 1:
                        del waiting[cond]
                    else:
                        waiting[cond] -= 1
        if is_ready(s, kind, ready):
            return
