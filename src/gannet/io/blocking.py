"""The blocking `Socket` API: the calling thread runs the protocol while it waits.

All Gannet endpoints of the process (one per bound `Socket`, shared by the
connections it accepts) belong to a single daemon thread running an asyncio
loop. One thread rather than one per socket: the protocol work is Python
under the GIL, so more I/O threads cannot run it in parallel; they would only
add context switches, and one loop multiplexes any number of UDP sockets.

Application threads never hand their work to that thread. Each `AioEndpoint`
has a lock that whoever is inside the core holds; a `Socket` takes the same
lock and calls the `Connection` directly (send, recv, shutdown), then runs
the endpoint's pass itself (what is ready leaves on this thread). A thread
that must wait (recv with nothing to read, send with a full buffer, accept,
connect) drives the endpoint: it polls the UDP socket and runs the receive
and timer work itself until what it waits for is there
(`AioEndpoint.begin_drive`), so a message costs no thread hand-off. One
thread drives an endpoint at a time; the others wait on a
`threading.Condition` of the lock, notified by the driving thread's passes
and when it leaves. The loop thread runs the endpoint only when no caller
has been inside it for a few milliseconds (keep-alive, retransmission,
answering a peer while the application is busy elsewhere). One reader and
one writer thread per connection may use a Socket at the same time.

What each message runs (send, sendall, recv, recv_into, the wait that
drives the endpoint) is the compiled base class's, `io.sockpath.SocketPath`,
with the attributes those calls read; this class opens, closes and answers
the rest.
"""

from __future__ import annotations

import asyncio
import atexit
import errno
import socket as _socket
import threading
import time
import weakref
from concurrent.futures import Future
from typing import Any, Callable

from .. import observe
from ..config import Config
from ..core.connection import Connection
from ..core.states import State
from ..observe.info import ConnectionInfo
from .endpoint import AioEndpoint, copy_error, make_config, make_udp_socket, resolve
from .loops import new_event_loop
from .sockpath import SocketPath, _ConnWaiter, oserror as _oserror

__all__ = ["Socket", "SHUT_RD", "SHUT_WR", "SHUT_RDWR"]

SHUT_RD, SHUT_WR, SHUT_RDWR = _socket.SHUT_RD, _socket.SHUT_WR, _socket.SHUT_RDWR
EXIT_LINGER = 5.0  # at interpreter exit, wait up to this long for closing sockets' data
FIN_PENDING = (State.FIN_WAIT_1, State.CLOSING, State.LAST_ACK)


class _LoopThread:
    """The process's Gannet I/O thread (started on first use)."""

    _instance: _LoopThread | None = None
    _guard = threading.Lock()

    def __init__(self) -> None:
        self.loop = new_event_loop()
        self.endpoints: weakref.WeakSet[AioEndpoint] = weakref.WeakSet()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), name="gannet-io", daemon=True)
        self.thread.start()
        ready.wait()
        atexit.register(self._at_exit)

    @classmethod
    def get(cls) -> _LoopThread:
        inst = cls._instance
        if inst is None:
            with cls._guard:
                inst = cls._instance
                if inst is None:
                    inst = cls._instance = cls()
        return inst

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(ready.set)
        self.loop.run_forever()

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run fn(*args) on the loop thread and return its result."""
        if threading.current_thread() is self.thread:
            return fn(*args)
        fut: Future = Future()

        def run() -> None:
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                fut.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return fut.result()

    def _at_exit(self) -> None:
        self._linger_at_exit()
        # Then stop the loop and let the thread leave it: a daemon thread
        # still inside the event loop's C code (uvloop's above all) while the
        # interpreter finalizes can crash the process at exit.
        try:
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:
            return  # the loop is already closed
        self.thread.join(timeout=2.0)

    def _linger_at_exit(self) -> None:
        """Give closed sockets a bounded chance to deliver what they had buffered."""
        deadline = time.monotonic() + EXIT_LINGER
        while time.monotonic() < deadline:
            busy = False
            for aep in list(self.endpoints):
                with aep.lock:
                    if not aep.closed and any(c.state in FIN_PENDING for c in aep.ep.connections):
                        busy = True
                        break
            if not busy:
                return
            time.sleep(0.01)


class Socket(SocketPath):
    """A Gannet stream socket with the blocking `socket.socket` interface.

    >>> s = Socket(); s.connect(("127.0.0.1", 9000)); s.sendall(b"hi"); s.recv(100)
    """

    def __init__(self, family: int = _socket.AF_INET, config: Config | None = None,
                 *, wire: str = "udp", **config_overrides: object) -> None:
        """`wire="tcp"`: real TCP on raw sockets instead of Gannet over UDP
        (IPv4 only, needs root; gannet.io.rawtcp)."""
        if family not in (_socket.AF_INET, _socket.AF_INET6):
            raise ValueError("family must be AF_INET or AF_INET6")
        if wire not in ("udp", "tcp"):
            raise ValueError(f"wire must be 'udp' or 'tcp', not {wire!r}")
        if wire == "tcp" and family != _socket.AF_INET:
            raise ValueError("wire='tcp' is IPv4 only (AF_INET)")
        self.family = family
        self.wire = wire
        self.config = make_config(config, config_overrides)
        self._timeout: float | None = _socket.getdefaulttimeout()
        self._aep: AioEndpoint | None = None
        self._owns_aep = False
        self._w: _ConnWaiter | None = None
        self._listening = False
        self._accept_cond: threading.Condition | None = None
        self._closed = False
        self._rd_shut = False
        self._wr_shut = False

    @classmethod
    def _accepted(cls, listener: Socket, w: _ConnWaiter) -> Socket:
        s = cls.__new__(cls)
        s.family = listener.family
        s.wire = listener.wire
        s.config = listener.config
        s._timeout = _socket.getdefaulttimeout()  # as socket.accept() does
        s._aep = listener._aep  # (w's endpoint: the listener's)
        s._owns_aep = False
        s._w = w
        s._listening = False
        s._accept_cond = None
        s._closed = False
        s._rd_shut = s._wr_shut = False
        return s

    # -------------------------------------------------------------- helpers
    def _check_open(self) -> None:
        if self._closed:
            raise _oserror(errno.EBADF, "socket is closed")

    def _bind(self, host: str | None, port: int) -> None:
        if self.wire == "tcp":
            from .firewall import hook_sigterm
            from .rawtcp import create_tcp_endpoint

            hook_sigterm()  # on the caller's thread, which may be the main one
            lt = _LoopThread.get()
            aep = lt.call(lambda: create_tcp_endpoint(host, port, config=self.config, loop=lt.loop,
                                                        keep=False))
            lt.endpoints.add(aep)
            self._aep = aep
            self._owns_aep = True
            return
        error: OSError | None = None
        for fam, addr in resolve(host, port, self.family, passive=True):
            if fam != self.family:
                continue
            try:
                sock = make_udp_socket(fam, addr)
            except OSError as exc:
                error = exc
                continue
            lt = _LoopThread.get()
            try:
                aep = lt.call(AioEndpoint, sock, self.config, lt.loop)
            except BaseException:
                sock.close()
                raise
            lt.endpoints.add(aep)
            self._aep = aep
            self._owns_aep = True
            return
        raise error or _oserror(errno.EAFNOSUPPORT, f"no {self.family!r} address for {host!r}")

    # ------------------------------------------------------------ opening
    def bind(self, address: tuple) -> None:
        self._check_open()
        if self._aep is not None:
            raise _oserror(errno.EINVAL, "socket is already bound")
        host, port = _split(address)
        self._bind(host, port)

    def listen(self, backlog: int = 5) -> None:
        self._check_open()
        if not isinstance(backlog, int) or isinstance(backlog, bool):
            raise ValueError("backlog must be an integer")
        if self._w is not None:
            raise _oserror(errno.EISCONN, "socket is connected")
        if self._aep is None:
            self._bind(None, 0)
        aep = self._aep
        assert aep is not None
        with aep.lock:
            self._accept_cond = threading.Condition(aep.lock)
            aep.ep.listen(max(1, backlog))
            aep.on_available = lambda _conn, c=self._accept_cond: c.notify_all()
            # The first hello's half of a code exchange, started while none is
            # here (the thread in accept() starts each next one as it waits).
            aep.prepare_soon_threadsafe()
        self._listening = True

    def accept(self) -> tuple[Socket, tuple]:
        self._check_open()
        if not self._listening:
            raise _oserror(errno.EINVAL, "accept() before listen()")
        aep, cond = self._aep, self._accept_cond
        assert aep is not None and cond is not None
        with cond:
            while True:
                found: list[Connection] = []

                def ready() -> bool:
                    # Asked more than once per wait (the driving thread asks
                    # before it polls, _wait again after): taking a connection
                    # is a side effect, so a second ask must not take another
                    # or, with none left, report that none came.
                    if self._closed or found:
                        return True
                    conn = aep.ep.accept()
                    if conn is not None:
                        found.append(conn)
                        return True
                    return False

                self._wait(cond, ready)
                if self._closed:
                    raise _oserror(errno.EBADF, "socket closed during accept()")
                conn = found[0]
                if conn.state is _CLOSED and conn.error is not None:
                    continue  # reset before we took it
                w = _ConnWaiter(aep, conn, threading.Condition(aep.lock))
                break
        addr = conn.remote_addr
        assert isinstance(addr, tuple)  # (the core keeps the address recvfrom gave)
        return Socket._accepted(self, w), addr

    def connect(self, address: tuple) -> None:
        self._check_open()
        if self._w is not None:
            raise _oserror(errno.EISCONN, "socket is already connected")
        if self._listening:
            raise _oserror(errno.EINVAL, "socket is listening")
        host, port = _split(address)
        targets = [a for f, a in resolve(host, port, self.family) if f == self.family]
        if not targets:
            raise _oserror(errno.EAFNOSUPPORT, f"no address of this family for {host!r}")
        if self._aep is None:
            if self.wire == "tcp":
                from .rawtcp import route_source

                self._bind(route_source(targets[0][0]), 0)
            else:
                self._bind("::" if self.family == _socket.AF_INET6 else "0.0.0.0", 0)
        aep = self._aep
        assert aep is not None
        with aep.lock:
            conn = aep.connect(targets[0], self.config, host)
            w = _ConnWaiter(aep, conn, threading.Condition(aep.lock))
            self._w = w
            aep.flush_threadsafe()  # the SYN leaves from this thread
            if self._timeout == 0:
                raise BlockingIOError(errno.EINPROGRESS, "connection in progress")
            try:
                self._wait(w.cond, lambda: w.established or conn.state is _CLOSED)
            except TimeoutError:
                conn.abort(aep.now())
                aep.flush_threadsafe()
                self._w = None
                raise
            if not w.established:
                self._w = None
                raise copy_error(w.error or ConnectionResetError("connection closed during the handshake"))

    # ---------------------------------------------------------------- data
    # send, sendall, recv, recv_into: SocketPath's (io/sockpath.py, compiled)
    receive = SocketPath.recv

    # ------------------------------------------------------------ closing
    def shutdown(self, how: int) -> None:
        if how not in (SHUT_RD, SHUT_WR, SHUT_RDWR):
            raise ValueError("how must be SHUT_RD, SHUT_WR or SHUT_RDWR")
        w = self._connected()
        with w.cond:
            if how in (SHUT_RD, SHUT_RDWR):
                self._rd_shut = True
                w.discard = True
                w.drop_input()
            if how in (SHUT_WR, SHUT_RDWR) and not self._wr_shut:
                self._wr_shut = True
                w.conn.shutdown_write(w.aep.now())
            w.cond.notify_all()
            aep = self._aep
            assert aep is not None  # (connected)
            aep.wake_driver()  # a thread driving the endpoint for our recv
            aep.flush_threadsafe()

    def close(self, linger: float | None = None) -> None:
        """Graceful close: returns at once (the I/O thread finishes delivery and
        the FIN exchange), or waits up to `linger` seconds for our data and
        FIN to be acknowledged. Unread incoming data is discarded."""
        if self._closed:
            return
        self._closed = True
        aep = self._aep
        if aep is None:
            return
        w = self._w
        with aep.lock:
            if self._listening and self._accept_cond is not None:
                aep.ep.stop_listening()
                aep.on_available = None
                while (conn := aep.ep.accept()) is not None:
                    conn.abort(aep.now())  # accepted by the core, never by us
                self._accept_cond.notify_all()
            if w is not None:
                w.discard = True
                w.drop_input()
                w.conn.close(aep.now())
                w.cond.notify_all()
            if self._owns_aep:
                aep.close_when_idle = True
            aep.wake_driver()  # a thread driving the endpoint for our recv or accept
            aep.request_flush_threadsafe()
            if w is not None and linger:
                deadline = time.monotonic() + linger
                while w.conn.state not in _FIN_ACKED:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    w.cond.wait(left)

    def detach(self) -> None:
        raise _oserror(errno.EOPNOTSUPP, "a Gannet socket has no descriptor to detach")

    def __enter__(self) -> Socket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ options
    def settimeout(self, value: float | None) -> None:
        if value is not None:
            value = float(value)
            if value < 0 or value != value:
                raise ValueError("Timeout value out of range")
        self._timeout = value

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self.settimeout(None if flag else 0.0)

    def getblocking(self) -> bool:
        return self._timeout != 0

    # --------------------------------------------------------------- info
    def getpeername(self) -> tuple:
        addr = self._connected().conn.remote_addr
        assert isinstance(addr, tuple)  # (the core keeps the address connect or recvfrom gave)
        return addr

    def getsockname(self) -> tuple:
        self._check_open()
        if self._aep is None:
            return ("::", 0, 0, 0) if self.family == _socket.AF_INET6 else ("0.0.0.0", 0)
        return self._aep.local_address

    @property
    def type(self) -> int:
        return _socket.SOCK_STREAM

    @property
    def connection(self) -> Connection | None:
        return self._w.conn if self._w is not None else None

    @property
    def stats(self):
        """The connection's counters (None until connected)."""
        return self._w.conn.stats if self._w is not None else None

    def info(self) -> ConnectionInfo | None:
        """The connection's state in numbers, like Linux's TCP_INFO: RTTs,
        windows, pacing, losses, path MTU, congestion phase, and the time
        spent limited by each cause when limits are tracked
        (`Config.track_limits`, qlog or the stats socket). None until
        connected."""
        w = self._w
        if w is None or self._aep is None:
            return None
        with self._aep.lock:
            return observe.info_of(self._aep, w.conn)

    @property
    def endpoint_stats(self):
        """The UDP endpoint's counters (datagrams, malformed_dropped, ...)."""
        return self._aep.ep.stats if self._aep is not None else None

    @property
    def io_stats(self):
        """What the UDP endpoint's driver did (IoStats: system calls, loop_calls, caller_passes)."""
        return self._aep.io_stats if self._aep is not None else None

    @property
    def state(self) -> State | None:
        return self._w.conn.state if self._w is not None else None

    def __repr__(self) -> str:
        if self._closed:
            what = "closed"
        elif self._listening:
            what = f"listening {self.getsockname()!r}"
        elif self._w is not None:
            what = f"{self._w.conn.state} {self.getsockname()!r} -> {self._w.conn.remote_addr!r}"
        else:
            what = "unconnected"
        return f"<gannet.Socket {what}>"


_CLOSED = State.CLOSED  # (an enum member's lookup is slow in Python 3.11: readiness checks ask often)
_FIN_ACKED = (State.FIN_WAIT_2, State.TIME_WAIT, State.CLOSED)


def _split(address: tuple) -> tuple[str | None, int]:
    if not isinstance(address, tuple) or len(address) not in (2, 4):
        raise ValueError(f"address must be a (host, port) tuple, not {address!r}")
    host, port = address[0], address[1]
    if host is not None and not isinstance(host, str):
        raise ValueError(f"host must be a string, not {host!r}")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an integer 0-65535, not {port!r}")
    return host, port
