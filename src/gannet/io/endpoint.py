"""The asyncio driver of a sans-I/O `Endpoint`: one UDP socket, many connections.

`AioEndpoint` is the only place where Gannet meets a socket and a clock. It
feeds every datagram the socket yields to `Endpoint.receive_datagram`, sends
what `datagrams_to_send` returns, dispatches the endpoint's events to one
handler per connection, and keeps exactly one `loop.call_at` timer armed at
the endpoint's next deadline.

It runs on one event loop thread. Every call into the core is made with
`self.lock` held, so the blocking `Socket` API can touch its connection from
other threads (it takes the same lock and then asks the loop for a flush with
`request_flush_threadsafe`). Asyncio code on the loop thread calls
`request_flush` after writing or reading; flushes are coalesced into one
`call_soon` per loop iteration, except that a write is flushed at once
(`flush_now`), as a kernel TCP socket with TCP_NODELAY sends at once, when
it is the first since the endpoint last ran a pass (a datagram arrived, a
timer fired, a flush ran).

Datagrams move in batches where Linux allows it:

- send: consecutive datagrams to one address whose sizes are equal (the last
  may be shorter) leave in one `sendmsg` with a UDP_SEGMENT control message
  (UDP GSO); the kernel cuts the buffer at the segment size. Support is
  probed at run time; `GANNET_NO_GSO=1` (or `AioEndpoint(gso=False)`) turns
  it off for A/B measurements.
- receive: UDP_GRO lets the kernel hand over several same-sized datagrams of
  one flow in one `recvmsg_into`, handed to `Endpoint.receive_batch` as they
  lie in the buffer (`GANNET_NO_GRO=1` turns it off).
- path MTU: each connection's search starts from the local route's MTU
  toward its peer (`route_mtu`); `GANNET_NO_ROUTE_MTU=1` leaves it
  unknown (the ladder from the bottom, as the simulator has it) for A/B
  measurements and for tests of a probe the interface refuses.

Receive buffer contract: `Endpoint.receive_datagram` is given a memoryview
slice of one preallocated buffer (one per thread, shared by the endpoints
whose loop runs there) that the next `recvmsg_into` overwrites. This
relies on the core decoding the datagram at once and keeping no reference to
`data` after the call returns (`wire.datagram.decode` copies the payload and
any unknown option values into new `bytes`; every other field is an int).
tests/io/test_batching.py checks that contract.
"""

from __future__ import annotations

import _socket
import asyncio
import errno
import heapq
import logging
import math
import os
import random
import select
import socket
import struct
import sys
import threading
import time
import weakref
from functools import partial
from types import MethodType
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import TYPE_CHECKING, cast

from .. import observe
from ..config import Config
from ..core.connection import Connection, copy_error  # noqa: F401 (re-exported for aio, blocking)
from ..core.endpoint import Endpoint
from ..core.events import Event
from ..wire import batch as _batch
from ..wire.batch import Receptacle, SourceTrain, Train, release
from ..wire.datagram import SHORT_SIZE
from ..crypto.endpoint import HandshakeRefused, InsecureEndpoint, SecureEndpoint
from .security import make_endpoint
from .datapath import (DROPPED as _DROPPED, FALLBACK as _FALLBACK, GRO_CMSG_SPACE,  # noqa: F401
                       MSG_TRUNC, PROCESS_ROUNDS, RECV_BATCH, RECV_CALLS, SOL_UDP, STOP as _STOP,
                       RECV_SIZE, SPLIT_SIZE, UDP_GRO, DatagramPath, IoStats, _receive_buffer)
from .memory import keep_freed_memory

log = logging.getLogger("gannet.io")

if TYPE_CHECKING:
    # An address as this endpoint's socket takes and gives it: (host, port),
    # or (host, port, flowinfo, scope_id) for IPv6. The core keeps any
    # object as an address; every one it holds here came from the socket
    # (recvfrom) or from connect, so it is one of these.
    SockAddr = tuple[str, int] | tuple[str, int, int, int]
    # What the core hands over to send: datagrams, or with GSO `Train`s of
    # them (or `SourceTrain`s, see source_trains below), with their
    # addresses (Endpoint.datagrams_to_send).
    Outgoing = list[tuple[bytes | bytearray, SockAddr]]


def _import_numpy_in_background() -> None:
    """The first run of many datagrams wants numpy (wire/batch.py): import
    it without stalling the transfer (not a daemon thread: an exit waits for
    the import rather than cutting it short)."""
    threading.Thread(target=_batch.load_numpy, name="gannet-numpy-import").start()


_batch.import_numpy = _import_numpy_in_background

SEND_BUFFER = 4 * 1024 * 1024
# Linux grants twice this (its bookkeeping), 32 MB: Config.window_size, the
# most a peer may have in flight towards us, which on loopback all lands in
# the socket while this process is busy or not scheduled (BBR kept up to
# 14.5 MB in flight there with 16 MB granted).
RECV_BUFFER = 16 * 1024 * 1024
SOCKET_BUFFER = SEND_BUFFER  # the older name
# SO_SNDBUFFORCE and SO_RCVBUFFORCE (asm-generic/socket.h), which Python's
# socket module does not name: without them a process allowed to pass
# net.core.[rw]mem_max (CAP_NET_ADMIN) was capped there all the same: at
# an rmem_max of 4 MB (8 MB granted) a receive buffer held about a hundred
# of path MTU discovery's 64 KB datagrams, fewer than BBR keeps in flight
# on loopback: the overflow was a loss, and its recovery a stall
# (BENCHMARKS.md, "Path MTU discovery: the receive buffer Linux grants").
# Alpha, MIPS, PA-RISC and SPARC number them differently: there, only
# what the socket module names.
_GENERIC_SOCKET_H = sys.platform == "linux" and os.uname().machine in (
    "x86_64", "i386", "i486", "i586", "i686", "aarch64", "aarch64_be", "armv7l", "armv8l", "armv6l",
    "riscv64", "s390x", "ppc64", "ppc64le", "loongarch64")
SO_SNDBUFFORCE: int | None = getattr(socket, "SO_SNDBUFFORCE", 32 if _GENERIC_SOCKET_H else None)
SO_RCVBUFFORCE: int | None = getattr(socket, "SO_RCVBUFFORCE", 33 if _GENERIC_SOCKET_H else None)
# ICMP errors (IP_RECVERR) that say an address cannot be reached
_UNREACHABLE = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH})
SEND_AGAIN_TRIES = 4  # sends of one datagram while earlier datagrams' ICMP errors keep failing them
# After the first datagram of a readiness callback, FIONREAD (the size of the
# next queued datagram, 0 if none) tells whether another read would only fail
# with EAGAIN: 1.5 us instead of 2.4 for the failing call and its exception,
# once per message in a request-response exchange. The answer goes into a
# writable buffer of the endpoint's (`_queued`): given bytes, fcntl.ioctl
# first tries the buffer as writable, fails, and formats and clears a
# TypeError before taking it read-only (about 5,000 instructions a call).
try:
    import fcntl
    import termios

    _FIONREAD = termios.FIONREAD
except ImportError:  # not POSIX: always read until EAGAIN
    fcntl = None  # type: ignore[assignment]
    _FIONREAD = 0
NOT_YET = 0.002  # a timer called this long before its deadline is re-armed, not run
# An endpoint driven by its callers (begin_drive) goes back to the loop when
# no caller has been inside it for this long: datagrams that arrive while the
# application is away wait at most about this long to be read and answered,
# and a steady exchange wakes the loop about once per this interval.
CALLER_GRACE = 0.005

# UDP segmentation offload (linux/udp.h).
# (SOL_UDP, UDP_GRO, GRO_CMSG_SPACE and MSG_TRUNC are the datagram path's: see the import)
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
GSO_MAX_SEGMENTS = 64  # UDP_MAX_SEGMENTS in the kernel
# 64 KB less IP/UDP headers
GSO_MAX_BYTES: dict[int, int] = {socket.AF_INET: 65507, socket.AF_INET6: 65527}
# errno values that say "this socket or device cannot do GSO at all"
GSO_UNSUPPORTED = frozenset({errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP})


# socket.socket.family is a Python property that builds an AddressFamily enum
# on every read (about 0.7 us); an endpoint read it three times as it was
# made. The C type's own attribute is the plain int.
try:
    _raw_family = _socket.socket.family.__get__
except AttributeError:  # not CPython's socket type: the property, then
    _raw_family = socket.socket.family.__get__
_FAMILIES = {int(f): f for f in (socket.AF_INET, socket.AF_INET6)}


def family_of(sock: socket.socket) -> int:
    """sock.family (an AddressFamily for IPv4 and IPv6), without the enum lookup."""
    try:
        raw = _raw_family(sock)
    except TypeError:  # not a socket.socket (a wrapper): its own attribute
        return sock.family
    fam = _FAMILIES.get(raw)
    return fam if fam is not None else sock.family


def _env_off(name: str) -> bool:
    # os.environ.get of a name that is not set raises and catches a KeyError
    # inside (about a microsecond; an endpoint asks twice): look in the
    # encoded mapping behind it first, where CPython keeps one.
    key = _ENV_KEYS.get(name)
    if key is None:
        try:
            key = _ENV_KEYS[name] = os.environ.encodekey(name)
        except AttributeError:
            key = _ENV_KEYS[name] = False
    data = getattr(os.environ, "_data", None)
    if key is not False and type(data) is dict and key not in data:
        return False
    return os.environ.get(name, "").strip().lower() not in ("", "0", "no", "false", "off")


_ENV_KEYS: dict[str, object] = {}


# Keyword aliases accepted wherever config overrides are (tools use these).
ALIASES = {"mtu": "max_datagram_size", "cc": "congestion_control"}

Handler = Callable[[Event], None]


def make_config(config: Config | None, overrides: dict[str, object]) -> Config:
    """`config` (or the defaults) with keyword overrides applied.

    Unknown names raise TypeError, bad values ValueError (from Config).
    """
    cfg = config if config is not None else Config()
    if not overrides:
        return cfg
    names = {f.name for f in fields(Config)}
    changes: dict[str, object] = {}
    for key, value in overrides.items():
        name = ALIASES.get(key, key)
        if name not in names:
            raise TypeError(f"unknown Gannet setting {key!r}")
        changes[name] = value
    # (a size that is no int is left for Config to reject)
    size = changes.get("max_datagram_size")
    if "mtu" in overrides and "pmtud" not in overrides:
        # `mtu=` pins the datagram size, as a benchmark's --mtu means it.
        changes["pmtud"] = False
        if isinstance(size, int):
            changes.setdefault("pmtud_max", max(size, cfg.max_datagram_size))
    pmtud_max = changes.get("pmtud_max", cfg.pmtud_max)
    if isinstance(size, int) and isinstance(pmtud_max, int) and pmtud_max < size:
        changes["pmtud_max"] = size
    return cfg.with_(**changes)


_force_denied = False  # the *BUFFORCE options were refused for lack of privilege


def _set_buffer(sock: socket.socket, force: int | None, normal: int, size: int) -> None:
    global _force_denied
    if force is not None and not _force_denied:
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
            return
        except PermissionError:
            _force_denied = True  # not root (CAP_NET_ADMIN): no use asking for every socket
        except OSError:
            pass  # fall back to the capped option
    try:
        sock.setsockopt(socket.SOL_SOCKET, normal, size)
    except OSError:
        pass


def resolve(host: str | None, port: int, family: int = 0, *, passive: bool = False):
    """getaddrinfo for UDP: a list of (family, sockaddr), in preference order."""
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an integer 0-65535, not {port!r}")
    if host == "":
        host = None
    flags = socket.AI_PASSIVE if passive else 0
    infos = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM, 0, flags)
    seen, out = set(), []
    for fam, _, _, _, addr in infos:
        if fam in (socket.AF_INET, socket.AF_INET6) and (fam, addr) not in seen:
            seen.add((fam, addr))
            out.append((fam, addr))
    if not out:
        raise OSError(errno.EAFNOSUPPORT, f"no IPv4/IPv6 address for {host!r}")
    return out


_SOCK_NONBLOCK = getattr(socket, "SOCK_NONBLOCK", 0)  # Linux


def make_udp_socket(family: int, addr: tuple) -> socket.socket:
    """A bound, non-blocking UDP socket with large buffers (as root the
    *BUFFORCE options pass net.core.[rw]mem_max; otherwise the kernel caps)."""
    if _SOCK_NONBLOCK:  # non-blocking from the start: two fcntl calls fewer per socket
        sock = socket.socket(family, socket.SOCK_DGRAM | _SOCK_NONBLOCK)
    else:
        sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if not _SOCK_NONBLOCK:
            sock.setblocking(False)
        _set_buffer(sock, SO_RCVBUFFORCE, socket.SO_RCVBUF, RECV_BUFFER)
        _set_buffer(sock, SO_SNDBUFFORCE, socket.SO_SNDBUF, SEND_BUFFER)
        _enable_icmp_errors(sock)
        sock.bind(addr)
    except BaseException:
        sock.close()
        raise
    return sock


# Linux values (linux/in.h, linux/in6.h); the socket module does not name them.
IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
IPV6_MTU_DISCOVER = getattr(socket, "IPV6_MTU_DISCOVER", 23)
PMTUDISC_PROBE = 3  # set DF, never fragment locally, ignore the kernel's PMTU cache


PMTUDISC_WANT = 1  # the kernel's default for UDP: fragment if the route says so
# Largest datagram every IPv4 / IPv6 path with a 1500-byte MTU carries whole.
SAFE_DATAGRAM: dict[int, int] = {socket.AF_INET: 1472, socket.AF_INET6: 1452}


def set_dont_fragment(sock: socket.socket, on: bool) -> bool:
    """Switch DF (no local fragmentation, PMTU cache ignored) on or off.

    Datagrams larger than a 1500-byte path carries are sent with DF: such a
    datagram is a PMTU probe, or follows a confirmed probe, and must arrive
    whole or not at all (RFC 8899 3); fragmenting it would make a probe
    "succeed" and turn every later loss into a lost train of fragments. Too
    big for the local interface then fails at once with EMSGSIZE, counted and
    dropped like any loss. GSO batches are sent without DF, because the
    kernel checks DF against the whole batch before it cuts it into segments.
    Returns False where the platform has no such option."""
    if family_of(sock) == socket.AF_INET6:
        level, opt = socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER
    else:
        level, opt = socket.IPPROTO_IP, IP_MTU_DISCOVER
    try:
        sock.setsockopt(level, opt, PMTUDISC_PROBE if on else PMTUDISC_WANT)
    except OSError:
        return False
    return True


# Linux values (linux/in.h, linux/in6.h): the route MTU of a connected socket.
IP_MTU = getattr(socket, "IP_MTU", 14)
IPV6_MTU = getattr(socket, "IPV6_MTU", 24)
# IP and UDP headers: what a route's MTU holds besides the UDP payload.
_IP_UDP_HEADERS: dict[int, int] = {socket.AF_INET: 28, socket.AF_INET6: 48}


def route_mtu(family: int, addr: object) -> int:
    """The largest UDP payload the local route toward `addr` carries (the
    outgoing interface's MTU, or a smaller one the kernel's route or PMTU
    cache holds, less the IP and UDP headers), or 0 where it cannot be
    told (not Linux, a host name, no route). Asked of a throwaway connected
    UDP socket: connect() on UDP picks the route and sends nothing. It is
    the local end's ceiling only: PMTUD still probes the path beyond."""
    if not sys.platform.startswith("linux") or family not in _IP_UDP_HEADERS:
        return 0
    if family == socket.AF_INET6:
        level, opt = socket.IPPROTO_IPV6, IPV6_MTU
    else:
        level, opt = socket.IPPROTO_IP, IP_MTU
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(addr)  # type: ignore[arg-type]
            mtu = probe.getsockopt(level, opt)
    except (OSError, TypeError, ValueError, OverflowError):
        return 0
    return max(0, mtu - _IP_UDP_HEADERS[family])


def _enable_icmp_errors(sock: socket.socket, on: bool = True) -> None:
    """Linux: report ICMP errors on this unconnected socket (with the address
    they concern, through the error queue), so that a SYN to a port nobody
    listens on fails at once with ConnectionRefusedError, as TCP's does."""
    if family_of(sock) == socket.AF_INET6:
        level, opt = socket.IPPROTO_IPV6, getattr(socket, "IPV6_RECVERR", 25)
    else:
        level, opt = socket.IPPROTO_IP, getattr(socket, "IP_RECVERR", 11)
    if not hasattr(socket, "MSG_ERRQUEUE"):
        return
    try:
        sock.setsockopt(level, opt, 1 if on else 0)
    except OSError:
        pass


def gso_supported(sock: socket.socket) -> bool:
    """Whether the kernel knows UDP_SEGMENT on this socket (Linux 4.18+).

    Reading the option does not change the socket (setting it would make
    every send segmented). A device that cannot segment still fails the
    first real send with EIO; `AioEndpoint` then turns GSO off."""
    if sock.type != socket.SOCK_DGRAM or sock.family not in GSO_MAX_BYTES:
        return False
    try:
        sock.getsockopt(SOL_UDP, UDP_SEGMENT)
    except OSError:
        return False
    return True


def enable_gro(sock: socket.socket) -> bool:
    """Ask for UDP GRO (Linux 5.0+); False if the kernel refuses."""
    if not GRO_CMSG_SPACE or not hasattr(sock, "recvmsg_into"):
        return False
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


def gro_segment_size(ancdata: list) -> int:
    """The segment size in a UDP_GRO control message, or 0 if there is none."""
    for level, kind, data in ancdata:
        if level == SOL_UDP and kind == UDP_GRO and len(data) >= 2:
            # The kernel writes an int; older ones a u16: read what is there.
            return int.from_bytes(data[:4] if len(data) >= 4 else data[:2], _NATIVE)
    return 0


_NATIVE = sys.byteorder


SOCKADDRS_KEPT = 1024  # packed addresses an endpoint keeps for send_trains
SEND_TRAINS_MAX = 64  # trains in one sendmmsg (wire/_batch.c's limit)
# wire/_batch.c's send_trains (Linux), or None: each train its own sendmsg.
_send_trains = getattr(_batch._c, "send_trains", None)


def sockaddr_of(family: int, addr: SockAddr) -> bytes | None:
    """`addr` as the struct sockaddr that sendmmsg takes (Linux's layout),
    for send_trains; None for what this does not pack (a host name, another
    family, another system), which the socket module then sends."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        if family == socket.AF_INET and len(addr) == 2:
            return struct.pack("=H2s4s8x", socket.AF_INET, addr[1].to_bytes(2, "big"),
                               socket.inet_pton(socket.AF_INET, addr[0]))
        if family == socket.AF_INET6 and len(addr) == 4:
            host, port, flowinfo, scope_id = addr
            return struct.pack("=H2s4s16sI", socket.AF_INET6, port.to_bytes(2, "big"),
                               flowinfo.to_bytes(4, "big"), socket.inet_pton(socket.AF_INET6, host), scope_id)
    except (OSError, ValueError, TypeError, OverflowError, AttributeError):
        return None
    return None

_GSO_KNOWN: dict[int, bool] = {}  # address family -> gso_supported


class _PooledSystemRandom(random.SystemRandom):
    """SystemRandom whose getrandbits reads a per-thread buffer of
    os.urandom bytes, refilled 4 KB at a time: a connection draws three
    32-bit values (connection ID, ISN, timestamp offset), which were three
    getrandom system calls per connection at each end."""

    POOL = 4096

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()
        if hasattr(os, "register_at_fork"):  # a child must not reuse the parent's bytes
            os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._local = threading.local()

    def getrandbits(self, k: int) -> int:
        if k == 32:  # what connections draw: from a list of ready-made words
            try:
                return self._local.words.pop()
            except (AttributeError, IndexError):
                words = self._local.words = list(_WORDS.unpack(os.urandom(self.POOL)))
                return words.pop()
        if k <= 0 or k > 256:
            return super().getrandbits(k)
        n = (k + 7) // 8
        local = self._local
        buf = getattr(local, "buf", b"")
        pos = getattr(local, "pos", 0)
        if pos + n > len(buf):
            buf = local.buf = os.urandom(self.POOL)
            pos = 0
        local.pos = pos + n
        return int.from_bytes(buf[pos:pos + n], "big") >> (n * 8 - k)


_WORDS = struct.Struct(f"={_PooledSystemRandom.POOL // 4}I")  # a pool as 32-bit words
_SYSTEM_RANDOM = _PooledSystemRandom()  # unpredictable (os.urandom); one serves every endpoint


class _LoopTimers:
    """The timers of every AioEndpoint on one event loop, behind one asyncio timer.

    A client has one endpoint per connection (`open_connection`): 10,000
    connections kept 10,000 asyncio TimerHandles in the loop's heap, each
    with its own context and compared in Python, and every deadline that
    moved earlier (the SYN's retransmission, then a tail-loss probe, then a
    delayed ACK) cancelled one handle and pushed another. Here an endpoint's
    deadline is a (time, tick, endpoint) entry in one heap, compared in C; a
    deadline that moves earlier pushes a new entry and leaves the old one to
    be skipped when it surfaces; the loop holds one TimerHandle, for the
    earliest entry, and one firing serves every endpoint that is due by then.

    An entry is live while the endpoint's `_timer_tick` is its tick: one live
    entry per endpoint. (Liveness was once "the endpoint's `_timer_at` equals
    its time", and an endpoint armed again for a time it had been armed for
    before - a TIME-WAIT deadline, re-armed after each earlier delayed ACK -
    revived the stale entries: the firing called the endpoint once per
    entry, and each extra call handed the core its next, future deadline as
    the current time, so keep-alive probes and idle timeouts fired at once.)

    It also holds what every endpoint of the loop shares: the clock and the
    timer slack (see AioEndpoint.__init__).
    """

    __slots__ = ("loop", "heap", "handle", "handle_at", "tick", "stale", "firing", "now", "slack",
                 "uvloop", "endpoints", "__weakref__")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.heap: list[tuple[float, int, AioEndpoint]] = []
        self.handle: asyncio.TimerHandle | None = None
        self.handle_at = 0.0
        self.tick = 0
        self.stale = 0  # entries in the heap that no longer match their endpoint's deadline
        self.firing = False
        self.endpoints = 0  # open AioEndpoints on this loop (busy polling asks: datapath)
        # The core's clock. asyncio's loop.time() is time.monotonic(); uvloop's
        # is the same clock cut to whole milliseconds, too coarse to time a
        # loopback round trip (samples of zero collapse BBR's window), so read
        # the monotonic clock directly where it is the loop's. uvloop also
        # arms timers in whole milliseconds, up to one early: add that as
        # slack, so a timer never fires before its deadline and the output
        # pass after it sees the deadline reached (else the pacer, finding
        # its tokens short, re-arms for the same instant again and again).
        coarse = type(loop).__module__.startswith("uvloop")
        same_clock = abs(loop.time() - time.monotonic()) < 0.5
        self.now: Callable[[], float] = time.monotonic if same_clock else loop.time
        self.slack = 0.001 if coarse else 0.0
        self.uvloop = coarse

    def arm(self, aep: AioEndpoint, when: float) -> None:
        """Call aep._on_timer at `when` (the caller set aep._timer_at = when);
        any entry the endpoint had goes stale (the caller said `superseded`)."""
        tick = self.tick
        heapq.heappush(self.heap, (when, tick, aep))
        aep._timer_tick = tick
        self.tick = tick + 1
        if self.firing:
            return  # _fire arms the loop's timer when it is done
        if self.handle is None or when < self.handle_at:
            if self.handle is not None:
                self.handle.cancel()
            self.handle_at = when
            self.handle = self.loop.call_at(when + self.slack, self._fire)

    def superseded(self) -> None:
        """An endpoint's entry no longer counts (an earlier one, or closed)."""
        self.stale += 1
        heap = self.heap
        if self.stale > 64 and self.stale > len(heap) // 2:
            heap[:] = [e for e in heap if e[2]._timer_tick == e[1]]
            heapq.heapify(heap)
            self.stale = 0

    def _fire(self) -> None:
        self.handle = None
        heap = self.heap
        # Loops fire a hair early; what was armed for this instant is due.
        limit = max(self.handle_at, self.now())
        due = []
        while heap and heap[0][0] <= limit:
            when, tick, aep = heapq.heappop(heap)
            if aep._timer_tick == tick:
                due.append((aep, tick))
            else:
                self.stale -= 1
        self.firing = True
        try:
            for aep, tick in due:
                if aep._timer_tick != tick:
                    # Re-armed (earlier) or closed by an endpoint called
                    # before it: counted as stale, but already out of the heap.
                    self.stale -= 1
                    continue
                try:
                    aep._on_timer()
                except Exception as exc:  # noqa: BLE001 - one endpoint must not stop the others
                    self.loop.call_exception_handler(
                        {"message": "Gannet endpoint timer failed", "exception": exc})
        finally:
            self.firing = False
        while heap and heap[0][2]._timer_tick != heap[0][1]:
            heapq.heappop(heap)
            self.stale -= 1
        if heap:
            self.handle_at = heap[0][0]
            self.handle = self.loop.call_at(self.handle_at + self.slack, self._fire)


# A loop's timers, by id(loop), held weakly: the endpoints on the loop (and
# an armed TimerHandle) keep them alive, and nothing here keeps the loop
# (a WeakKeyDictionary would: its value holds the loop strongly, so every
# loop that ever had an endpoint stayed in memory).
_loop_timers: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def _cpus() -> int:
    """The machine's CPUs (online)."""
    return os.cpu_count() or 1


def _timers_of(loop: asyncio.AbstractEventLoop) -> _LoopTimers:
    # The loop asked for last first (a client makes an endpoint per connection).
    global _last_timers
    timers = _last_timers()
    if timers is not None and timers.loop is loop:
        return timers
    timers = _loop_timers.get(id(loop))
    if timers is None or timers.loop is not loop:  # (an id outlives its loop)
        timers = _loop_timers[id(loop)] = _LoopTimers(loop)
    _last_timers = weakref.ref(timers)  # weak: it lives as long as its loop
    return timers


def _no_timers() -> None:
    return None


_last_timers: Callable[[], _LoopTimers | None] = _no_timers


class _Drive:
    """An endpoint's state while application threads drive it (begin_drive)."""

    __slots__ = ("active", "driving", "poll_until", "left_at", "check", "check_at",
                 "waiting", "after", "poller", "_wake_r", "_wake_w")

    def __init__(self, fd: int) -> None:
        self.active = False  # callers drive it: the loop does not watch the socket
        self.driving = False  # a thread is between begin_drive and end_drive
        self.poll_until: float | None = None  # that thread sleeps in poll until then
        self.left_at = 0.0  # when the last drive ended
        self.check: asyncio.TimerHandle | None = None  # the loop's _check_callers
        self.check_at: float | None = None
        # The core's deadline as the last drive left it (math.nan: not known),
        # for end_drive: asking the core again would find the same.
        self.after: float | None = math.nan
        # The Conditions (of the endpoint's lock) other threads wait on while
        # one drives, with how many wait on each: end_drive notifies one
        # waiter of each, and one of them drives next.
        self.waiting: dict[threading.Condition, int] = {}
        # A wake-up for the driving thread's poll: another thread changed
        # what it waits for (close, shutdown, an earlier deadline, an event).
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.poller = select.poll()
        self.poller.register(fd, select.POLLIN)
        self.poller.register(self._wake_r.fileno(), select.POLLIN)

    def wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:  # full (a wake-up is pending already) or closed
            pass

    def drain(self) -> None:
        try:
            while self._wake_r.recv(512):
                pass
        except OSError:
            pass

    def close(self) -> None:
        self.wake()
        if self.check is not None:
            self.check.cancel()
            self.check = None
        self._wake_w.close()
        self._wake_r.close()


class AioEndpoint(DatagramPath):
    """One UDP socket and the Gannet endpoint behind it, on one event loop.

    Construct it on the loop's thread (it registers a reader). What every
    datagram runs (the read, the pass, the one-datagram send, dispatch, the
    timer check) is its compiled base class's, `io.datapath.DatagramPath`,
    which also holds the state that path reads; this class sets it up,
    closes, drives for blocking callers, and handles batches and errors.
    """

    # A client has one of these per connection (`open_connection`), so it is
    # kept small: slots (past 30 attributes an instance dict stops sharing
    # its keys and costs 1-2 KB), the send backlog made only when needed.
    # (The per-datagram state is DatagramPath's native attributes.)
    __slots__ = (
        "config", "ep", "local_address", "family", "_writing", "_retry_handle",
        "_closed_waiters", "icmp_errors", "_gso_max_bytes", "_gso_cmsg", "_life_task", "_uvloop",
        "_rearm_due", "observer", "_reader_on", "_sockaddrs",
    ) + tuple(  # (what the base has not: the compiled one neither, the pure one both)
        name for name, offset in (("__dict__", DatagramPath.__dictoffset__),
                                  ("__weakref__", DatagramPath.__weakrefoffset__)) if not offset)
    # Whether a lone datagram may take _send's shortcut straight to
    # sendto(data, addr) on a UDP socket (a carrier of another kind says no).
    ONE_DATAGRAM_SHORTCUT = True
    # The task that closes the endpoint with its loop (_keep_until_loop_ends).
    _life_task: asyncio.Task[None]

    def __init__(self, sock: socket.socket, config: Config, loop: asyncio.AbstractEventLoop,
                 *, gso: bool | None = None, gro: bool | None = None,
                 endpoint: Endpoint | None = None) -> None:
        """`gso` / `gro`: None (the default) uses them where the kernel can,
        unless GANNET_NO_GSO / GANNET_NO_GRO is set; False never does.
        `endpoint`: the core endpoint to drive (default: Gannet over UDP on
        `sock`; gannet.io.rawtcp passes a TcpEndpoint and its raw socket)."""
        self.loop = loop
        self.sock = sock
        self.config = config
        # encrypted unless config.insecure (or the caller brings its own, e.g. the TCP wire's)
        # (of a class that takes an observer's wrappers when one will be attached, below)
        self.ep = self.core = ep = (endpoint if endpoint is not None
                                    else make_endpoint(config, _SYSTEM_RANDOM, observe.per_packet(config)))
        if endpoint is None and not _env_off("GANNET_NO_ROUTE_MTU"):
            # Each connection's PMTUD search starts from the local route's
            # MTU toward its peer (core Endpoint.route_mtu).
            ep.route_mtu = partial(route_mtu, family_of(sock))
        # The core endpoint's event queue, dirty set and timer heap: the same
        # objects for its life (core/endpoint.py makes them once and empties
        # them in place), kept in attributes of the path's own (one read
        # fewer each).
        self._events = ep._events
        self._dirty = ep._dirty
        self._heap = ep._heap
        self.lock = threading.RLock()
        self.local_address = sock.getsockname()
        self.family = family = family_of(sock)
        # The largest datagram sent without DF (see set_dont_fragment), read
        # for every datagram sent: an attribute, not a property to call.
        self._safe = SAFE_DATAGRAM.get(family, 1452)
        self.on_available = None
        # Called with a HandshakeRefused event: an incoming connection that
        # failed its key exchange (the application never had it).
        self.on_refused = None
        self.close_when_idle = False
        self.closed = False
        self.io_stats = IoStats()
        self._off_loop = False  # flush_threadsafe is sending on another thread
        self._handlers = {}
        timers = self._timer = _timers_of(loop)  # this loop's timers (one asyncio timer)
        self._timer_at = None  # our deadline there, if armed
        self._timer_tick = -1  # the tick of our live entry there (see _LoopTimers)
        self.now = timers.now  # the core's clock: see _LoopTimers
        self._uvloop = timers.uvloop  # see _rearm_poll
        self._flush_scheduled = False
        self._held_acks: list[Connection] | None = None  # see release_ack_soon
        # The core's deadlines may have moved since the timer was last armed
        # (a connection was processed, or the timer fired): see _process_locked.
        self._timer_moved = False
        self._sent_at_once = False  # a write left at once and no pass has run since (flush_now)
        self._drive: _Drive | None = None  # made by the first begin_drive
        self._reader_on = True  # the loop watches the socket (off while callers drive it)
        # made when the kernel pushes back
        self._backlog: deque[tuple[bytes | bytearray, SockAddr]] | None = None
        self._writing = False
        self._retry_handle: asyncio.TimerHandle | None = None
        self._closed_waiters: list[asyncio.Future] | None = None  # made by wait_closed
        self._refused: dict[Connection, Exception] = {}
        self.icmp_errors = 0
        self._rearm_due = False  # a _rearm_poll is scheduled
        timers.endpoints += 1  # (less one at close)
        # Busy polling's budget (Config.busy_poll, datapath.busy_poll_due):
        # none on a machine of one CPU, where a local peer could only answer
        # once the poll gave the CPU up. (A process pinned to one CPU of
        # several polls: a peer pinned to another, the usual low-latency
        # placement, is what polling is for, and one pinned to the same
        # makes the polls miss, which turns them down; docs/design.md,
        # "Polling before sleeping".)
        busy = config.busy_poll
        if busy and _cpus() < 2:
            busy = 0
        self._busy_ns = busy * 1000
        self._fd = sock.fileno()
        self._queued = bytearray(4)  # FIONREAD's answer (see _FIONREAD)
        self._ioctl = fcntl.ioctl if _FIONREAD else None  # (None: not POSIX, read until EAGAIN)
        self._fionread = _FIONREAD
        self._shortcut = self.ONE_DATAGRAM_SHORTCUT
        if gso is None:
            gso = not _env_off("GANNET_NO_GSO")
        if gso:
            gso = _GSO_KNOWN.get(family)  # the kernel's answer does not change
            if gso is None:
                gso = _GSO_KNOWN[family] = gso_supported(sock)
        self.gso = bool(gso)
        """Whether sends are batched with UDP GSO (turned off if the kernel refuses)."""
        self._gso_max_bytes = GSO_MAX_BYTES.get(family, 65507)
        self._gso_cmsg: dict[int, list] = {}  # segment size -> ancillary data
        if gro is None:
            gro = not _env_off("GANNET_NO_GRO")
        self.gro = bool(gro) and enable_gro(sock)
        self._rbuf, self._rview, self._rbufs = _receive_buffer()
        # Once per process (io/memory.py says why), on the loop's next pass:
        # a client's SYN leaves first (connect_endpoint sends it at once),
        # and the first window of data comes after the SYN-ACK.
        loop.call_soon(keep_freed_memory)
        # A listener with a code starts the next hello's half of the code
        # exchange while it waits (SecureEndpoint.prepare): its endpoint
        # here, else None.
        self._preparer: SecureEndpoint | None = (
            ep if isinstance(ep, SecureEndpoint) and ep.security.code is not None else None)
        # qlog, pcap, limit accounting (gannet.observe): None unless one is
        # on; the observer wraps self.ep's boundary calls, nothing here checks.
        self.observer = observe.attach(self)
        # A plaintext endpoint's batches of the short form go straight to the
        # core's receive_batch, which is all the endpoint's own would do with
        # them (InsecureEndpoint.batch_passed_on; observed, it says None).
        self._batch_passed_on: tuple[int, Callable[..., None] | None] = (
            (ep.PASSED_ON, ep.batch_passed_on()) if isinstance(ep, InsecureEndpoint) else (-1, None))
        # ... and its large datagrams (path MTU discovery's) are read with
        # their payloads straight into bytes objects of their own, which
        # the core's receive_parts keeps (datapath.receive_gro).
        if self._batch_passed_on[1] is not None and Receptacle is not None:
            self._parts_passed_on = MethodType(Endpoint.receive_parts, ep)
            self._split = [bytearray(SHORT_SIZE), Receptacle(SPLIT_SIZE - SHORT_SIZE)]
        # A plaintext endpoint's runs of large datagrams (path MTU
        # discovery's) leave as SourceTrains: the payloads stay in the send
        # buffer and one sendmsg gathers them with their headers and
        # trailers (_send_train), so the kernel's copy is the only one. Not
        # for an endpoint that seals its runs.
        ep.source_trains = self.gso and (type(ep) is Endpoint or isinstance(ep, InsecureEndpoint))
        self._sockaddrs: dict[SockAddr, bytes | None] = {}  # address -> struct sockaddr (_send_trains)
        loop.add_reader(self._fd, self._on_readable)

    # ------------------------------------------------------------- handlers
    @property
    def stats(self):
        return self.ep.stats

    @property
    def send_errors(self) -> int:
        """Datagrams the kernel refused for reasons other than a full buffer."""
        return self.io_stats.send_errors

    def attach(self, conn: Connection, handler: Handler) -> None:
        """Route `conn`'s events to `handler` (called with the lock held)."""
        self._handlers[conn] = handler

    def detach(self, conn: Connection) -> None:
        self._handlers.pop(conn, None)

    def prepare_soon(self) -> None:
        """Let the core do ahead, on a later pass of the loop, the work of
        the next SYN that needs nothing from it (SecureEndpoint.prepare)."""
        if self._preparer is not None:
            self.loop.call_soon(self._prepare)

    def prepare_soon_threadsafe(self) -> None:
        """The same, from any thread (the blocking Socket's listener)."""
        if self._preparer is not None:
            self._call_loop(self._prepare)

    def _prepare(self) -> None:
        preparer = self._preparer
        with self.lock:
            if not self.closed and preparer is not None:
                preparer.prepare()

    def connect(self, addr: object, config: Config | None = None,
                server_name: str | None = None) -> Connection:
        """`server_name`: the host as the application named it, for an
        encrypted endpoint's known_hosts (SecureEndpoint.connect)."""
        with self.lock:
            if self.closed:
                raise OSError(errno.EBADF, "endpoint is closed")
            if server_name is not None and isinstance(self.ep, SecureEndpoint):
                return self.ep.connect(addr, self.now(), config, server_name=server_name)
            return self.ep.connect(addr, self.now(), config)

    # ------------------------------------------------------------ flushing
    def release_ack_soon(self, conn: Connection) -> None:
        """`conn` holds its handshake ACK for the application's first data
        (Connection.hold_handshake_ack): release it at the next flush, one
        loop turn from now, after the task that awaited the connection has
        run. A write in that task joins the same flush and carries the ACK."""
        if self._held_acks is None:
            self._held_acks = [conn]
        else:
            self._held_acks.append(conn)
        self.request_flush()

    # ------------------------------------------------- driven by its callers
    # The blocking Socket's threads run the endpoint themselves while they
    # wait, instead of sleeping until the loop thread has read the datagram,
    # run the core and notified them (two thread wake-ups in series for every
    # message). Whoever is inside begin_drive/end_drive reads the socket and
    # fires the deadlines; the loop stops watching the socket at the first
    # begin_drive and takes it back CALLER_GRACE after the last caller left
    # (_check_callers), so an exchange of many messages costs the loop
    # thread no wake-up per message, and an endpoint nobody calls still
    # answers, keeps alive and retransmits.

    # (begin_drive and end_drive are the datagram path's: io/datapath.py)
    def _new_drive(self) -> _Drive:
        return _Drive(self._fd)

    def drive_waiting(self) -> dict[threading.Condition, int] | None:
        """With the lock held: the Conditions threads wait on while another
        drives (a thread adds its own before waiting, removes it after);
        None if no thread ever drove the endpoint."""
        d = self._drive
        return None if d is None else d.waiting

    def wake_driver(self) -> None:
        """With the lock held: wake the thread driving the endpoint, if it
        sleeps in poll (what it waits for may have changed: close, shutdown)."""
        d = self._drive
        if d is not None and d.poll_until is not None:
            d.wake()

    def _call_loop(self, fn: Callable[[], None]) -> None:
        try:
            self.loop.call_soon_threadsafe(fn)
        except RuntimeError:  # the loop is gone (interpreter exit)
            pass

    def _reader_off(self) -> None:
        """On the loop: callers drive the endpoint; stop watching the socket."""
        with self.lock:
            self.io_stats.loop_calls += 1
            d = self._drive
            if self.closed or d is None or not d.active:
                return
            if self._reader_on:
                self._reader_on = False
                self.loop.remove_reader(self._fd)
            if d.check is None:
                self._arm_check(self.now() + CALLER_GRACE)

    def _arm_check(self, when: float) -> None:
        d = self._drive
        assert d is not None
        if d.check is not None:
            d.check.cancel()
        d.check_at = when
        d.check = self.loop.call_at(when + self._timer.slack, self._check_callers)

    def _check_callers(self) -> None:
        """On the loop: take the socket back when no caller has been inside
        for CALLER_GRACE, or when a deadline is due and nobody drives."""
        with self.lock:
            self.io_stats.loop_calls += 1
            d = self._drive
            if self.closed or d is None or not d.active:
                return
            if d.check is not None:
                d.check.cancel()  # (called early by end_drive)
                d.check = None
            d.check_at = None
            now = self.now()
            if d.driving:
                self._arm_check(now + CALLER_GRACE)  # the caller fires the deadlines
                return
            back = d.left_at + CALLER_GRACE
            deadline = self.ep.get_timer()
            if back > now and (deadline is None or deadline > now):
                self._arm_check(back if deadline is None else min(back, deadline))
                return
            d.active = False
            self._reader_on = True
            self.loop.add_reader(self._fd, self._on_readable)
            self._timer_moved = True  # the pass below arms the loop's timer
            if self.gro:
                self._receive_gro(self._rbufs, self._rview)
            else:
                self._receive_plain(self._rbuf, self._rview)

    # ------------------------------------------------------------- network
    def _read_error_queue(self, taken: bool = False) -> bool:
        """Drain the socket's ICMP error queue; a port unreachable answering a
        SYN refuses that connection. False if there was nothing to read.

        `taken`: a receive or send call just reported the socket's pending
        error. The poll may have seen that error as POLLERR even when the
        queue holds nothing: an ICMP message that finds the receive buffer
        full (a flood) is not queued, since the error queue is charged to
        that buffer, but it sets the error all the same. So the socket is
        registered again (_rearm_poll) whenever an error was taken, not only
        when the queue had entries."""
        flag = getattr(socket, "MSG_ERRQUEUE", 0)
        if not flag:
            return False
        got = False
        for _ in range(64):
            try:
                sent, anc, _, addr = self.sock.recvmsg(64, 512, flag)  # (the start of what drew it)
            except OSError:
                break
            got = True
            self.icmp_errors += 1
            code = int.from_bytes(anc[0][2][:4], "little") if anc and len(anc[0][2]) >= 4 else 0
            if code not in _UNREACHABLE:
                continue
            now = self.now()
            # A listener stops answering the address (forged SYNs name closed
            # ports); our own attempts to reach it are refused.
            for conn in self.ep.address_unreachable(addr, now, sent):
                if code == errno.ECONNREFUSED:
                    self._refused[conn] = ConnectionRefusedError(
                        errno.ECONNREFUSED, f"Connection refused by {addr!r}")
                    conn.abort(now)
        if (got or taken) and self._uvloop and not self.closed and not self._rearm_due:
            self._rearm_due = True  # one re-registration per loop turn, however many errors
            self.loop.call_soon_threadsafe(self._rearm_poll)
        return got

    def _rearm_poll(self) -> None:
        """Register the socket with the loop again, after an ICMP error.

        An error on the socket (IP_RECVERR queues one for every port
        unreachable, e.g. a peer that exited before our last ACK reached it)
        makes the poll report POLLERR, and libuv, under uvloop, then stops
        polling the descriptor for good: the endpoint would never read again
        (an echo server stopped answering after a few clients had come and
        gone). The asyncio loops keep polling; uvloop needs the reader (and
        writer) added back."""
        with self.lock:
            self._rearm_due = False
            if self.closed or not self._reader_on:
                return  # (callers drive it: begin_drive's poll sees errors)
            self.loop.remove_reader(self._fd)
            self.loop.add_reader(self._fd, self._on_readable)
            if self._writing:
                self.loop.remove_writer(self._fd)
                self.loop.add_writer(self._fd, self._on_writable)

    def _drain_backlog(self) -> None:
        backlog = self._backlog
        if backlog:
            items = list(backlog)
            backlog.clear()
            i = self._transmit(items)
            if i < len(items):
                backlog.extend(items[i:] if i else items)
                return  # _transmit asked for a writable callback or a retry
        if self._writing:
            self._writing = False
            self.loop.remove_writer(self._fd)

    def _transmit(self, out: Outgoing) -> int:
        """Send `out` in order; returns how many were handed to the kernel
        (or dropped with an error): len(out) unless the socket buffer filled,
        in which case a writable callback or a retry has been arranged."""
        if self.gso:
            return self._transmit_gso(out)
        return self._transmit_plain_run(out, 0, len(out))

    def _transmit_gso(self, out: Outgoing) -> int:
        """Like `_transmit`, in runs of equal-sized datagrams to one address,
        each run one sendmsg with UDP_SEGMENT."""
        st = self.io_stats
        max_bytes = self._gso_max_bytes
        n = len(out)
        i = 0
        while i < n:
            data, addr = out[i]
            if type(data) is Train or type(data) is SourceTrain:
                if _send_trains is not None and i + 1 < n and (
                        type(out[i + 1][0]) is Train or type(out[i + 1][0]) is SourceTrain):
                    # Trains to one address: one sendmmsg for all of them
                    # (what is left, or refused, goes on one at a time below).
                    i = self._send_trains(out, i)
                    if i >= n or (type(out[i][0]) is not Train and type(out[i][0]) is not SourceTrain):
                        continue
                if not self._send_train(out, i):
                    return i
                i += 1
                continue
            size = len(data)
            j = i + 1
            stop = i + GSO_MAX_SEGMENTS if i + GSO_MAX_SEGMENTS < n else n
            total = size
            while j < stop:
                d, a = out[j]
                k = len(d)
                if (k > size or (a is not addr and a != addr) or total + k > max_bytes or type(d) is Train
                        or type(d) is SourceTrain):
                    break
                total += k
                j += 1
                if k < size:
                    break  # a shorter datagram can only end a run
            try:
                self._send_call([d for d, _ in out[i:j]] if j - i > 1 else [data], size, j - i, addr)
            except OSError as exc:
                outcome = self._send_failed(exc, size, j - i, addr, data if j - i == 1 else None)
                if outcome is _STOP:
                    return i
                if outcome is _FALLBACK:
                    sent = self._transmit_plain_run(out, i, j)
                    if sent < j:
                        return sent
                i = j
                continue
            st.send_calls += 1
            st.datagrams_sent += j - i
            i = j
        return n

    def _send_trains(self, out: Outgoing, i: int) -> int:
        """Send the Trains and the SourceTrains from out[i] on, to out[i]'s
        address, in sendmmsg calls
        (wire/_batch.c's send_trains; `_send_train` of each is its
        equivalent). Returns the index of the first not sent: `_send_train`
        sends that one, and meets any error as it would.

        The messages of one call share the don't-fragment setting that
        `_send_call` would give each: off for several datagrams, on for one
        larger than the safe size (path MTU discovery's 64 KB datagrams, a
        SourceTrain each, or sealed, a Train of one row each); where the
        setting changes, or SEND_TRAINS_MAX
        trains are in, the next call goes on from there."""
        addr = out[i][1]
        names = self._sockaddrs
        name = names.get(addr, b"")
        if name == b"":
            if len(names) >= SOCKADDRS_KEPT:
                names.clear()  # (peers come and go: packing again costs a microsecond)
            name = names[addr] = sockaddr_of(self.family, addr)
        if name is None:
            return i
        st = self.io_stats
        safe = self._safe
        n = len(out)
        while True:
            trains: list[Train | SourceTrain] = []
            df = False
            j = i
            while j < n and len(trains) < SEND_TRAINS_MAX:
                d, a = out[j]
                if a is not addr and a != addr:
                    break
                if type(d) is SourceTrain:
                    one = d.length <= d.mss and d.size > safe  # (one datagram: DF as _send_call sets it)
                elif type(d) is Train:
                    # (one row - a sealed 64 KB datagram of path MTU
                    # discovery - is one datagram: DF as _send_call sets it)
                    one = len(d) <= d.size and d.size > safe
                else:
                    break
                if j == i:
                    df = one
                elif one is not df:
                    break
                trains.append(d)
                j += 1
            if len(trains) < 2:
                return i
            if self._df is not df:
                self._set_df(df)
            try:
                assert _send_trains is not None  # (the caller saw it)
                took = _send_trains(self._fd, trains, name)
            except OSError:
                return i  # (_send_train meets the error again and deals with it)
            st.send_calls += 1  # (sendmmsg took at least the first: else it raised)
            for train in trains[:took]:
                if isinstance(train, SourceTrain):
                    count = train.count
                    st.gathered_sends += 1
                    if count == 1:
                        st.datagrams_sent += 1
                        continue
                else:
                    count = -(-len(train) // train.size)
                    release(train)  # the kernel has its copy: encode_run may fill it again
                    if count == 1:
                        st.datagrams_sent += 1
                        continue
                st.datagrams_sent += count
                st.gso_calls += 1
                st.gso_datagrams += count
            i += took
            if took < len(trains):
                return i  # (the kernel stopped there: _send_train meets why)

    def _send_train(self, out: Outgoing, i: int) -> bool:
        """Send the Train or SourceTrain out[i] in one sendmsg with
        UDP_SEGMENT (a SourceTrain's payloads gathered from the send buffer
        with its headers and trailers). False when the socket is full (a
        retry is arranged; out[i] is what is left)."""
        data, addr = out[i]
        train = cast("Train | SourceTrain", data)  # (the caller saw its type)
        size = train.size
        bufs: Sequence[bytes | bytearray | memoryview]
        if type(train) is SourceTrain:
            count = train.count
            bufs = train.pieces()
        else:
            assert type(train) is Train
            count = -(-len(train) // size)
            bufs = [train]
        try:
            self._send_call(bufs, size, count, addr)
        except OSError as exc:
            outcome = self._send_failed(exc, size, count, addr)
            if outcome is _STOP:
                return False  # (out[i] goes again as it is)
            if outcome is _FALLBACK:
                if type(train) is SourceTrain:
                    out[i] = (train.train(), addr)  # (sent one datagram at a time from its bytes)
                return self._send_train_plain(out, i)
            return True
        st = self.io_stats
        st.send_calls += 1
        st.datagrams_sent += count
        if type(train) is Train:
            release(train)  # the kernel has its copy: encode_run may fill it again
        else:
            st.gathered_sends += 1
        return True

    def _send_call(self, bufs: Sequence[bytes | bytearray | memoryview], size: int, count: int,
                   addr: SockAddr) -> None:
        """One system call for `count` datagrams of `size` bytes (the last may
        be shorter) held in `bufs`: sendto for one, sendmsg with UDP_SEGMENT
        for more. OSError goes to the caller (see `_send_failed`)."""
        if count == 1:
            if (size > self._safe) is not self._df:
                self._set_df(size > self._safe)
            if len(bufs) == 1:
                self.sock.sendto(bufs[0], addr)
            else:  # (a SourceTrain's pieces)
                self.sock.sendmsg(bufs, (), 0, addr)
            return
        if self._df:
            self._set_df(False)
        cmsg = self._gso_cmsg.get(size)
        if cmsg is None:
            cmsg = self._gso_cmsg[size] = [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))]
        self.sock.sendmsg(bufs, cmsg, 0, addr)
        st = self.io_stats
        st.gso_calls += 1
        st.gso_datagrams += count

    def _socket_full(self, exc: OSError) -> bool:
        """Whether a send's error only says the socket cannot take more now
        (full, interrupted, or the kernel out of buffers); the send then
        stops, a writable callback or a short retry having been arranged."""
        if isinstance(exc, (BlockingIOError, InterruptedError)):
            self._wait_writable()
            return True
        if exc.errno == errno.ENOBUFS:
            self._retry_later()
            return True
        return False

    def _send_failed(self, exc: OSError, size: int, count: int, addr: SockAddr,
                     data: bytes | bytearray | None = None) -> object:
        """What to do after `_send_call` raised: _STOP (the socket is full; a
        writable callback or a retry is arranged), _DROPPED (one datagram
        lost; the core retransmits) or _FALLBACK (send the batch again one
        datagram at a time). `data` is the datagram when it was one."""
        if self._socket_full(exc):
            return _STOP
        code = exc.errno
        # An error the send reported (EMSGSIZE, or an earlier datagram's ICMP
        # error such as ECONNREFUSED): drain the queue behind it, or the stale
        # error fails the next send too (and see _rearm_poll).
        self._read_error_queue(taken=True)
        if code in _UNREACHABLE:
            # Not about these datagrams: the kernel reports an ICMP error for
            # an earlier one on the next send, which it then does not make.
            # Send them again one by one (_send_again): under a flood of
            # port unreachables, every reply would otherwise risk being lost
            # to a stranger's error (a client's SYN,ACK cost it an RTO).
            return _FALLBACK
        st = self.io_stats
        st.last_send_error = f"{errno.errorcode.get(code or 0, code)} ({size} B x{count})"
        if count == 1:
            st.send_errors += 1
            log.debug("sendto %r failed: %r", addr, exc)
            if code == errno.EMSGSIZE and data is not None:
                self.ep.datagram_too_big(data, addr)  # a PMTU probe learns at once
            return _DROPPED
        # The kernel refused the batch (too large for the path, no offload on
        # the device, or an error left by an ICMP message): sending it again
        # one datagram at a time sorts it out.
        st.gso_fallbacks += 1
        if code in GSO_UNSUPPORTED and not st.gso_calls:
            self.gso = False  # never worked here: stop trying
            log.debug("UDP GSO off for %r: %r", self.local_address, exc)
        log.debug("GSO send to %r failed (%r); sending one by one", addr, exc)
        return _FALLBACK

    def _send_train_plain(self, out: Outgoing, i: int) -> bool:
        """The Train out[i] one datagram at a time; False (out[i] = the rest) if
        the socket filled."""
        train, addr = out[i]
        assert type(train) is Train  # (the caller saw it)
        items: Outgoing = [(d, addr) for d in train.datagrams()]
        sent = self._transmit_plain_run(items, 0, len(items))
        if sent < len(items):
            rest = Train(train[sent * train.size:])
            rest.size = train.size
            out[i] = (rest, addr)
            return False
        return True

    def _transmit_plain_run(self, out: Outgoing, i: int, j: int) -> int:
        sendto = self.sock.sendto
        st = self.io_stats
        safe = self._safe
        for k in range(i, j):
            data, addr = out[k]
            if type(data) is SourceTrain:  # (GSO turned off with one queued)
                data = data.train()
                out[k] = (data, addr)
            if type(data) is Train:
                if not self._send_train_plain(out, k):
                    return k
                continue
            if (len(data) > safe) is not self._df:
                self._set_df(len(data) > safe)
            try:
                sendto(data, addr)
            except OSError as exc:
                if self._socket_full(exc):
                    return k
                self._read_error_queue(taken=True)  # as in _send_failed
                if exc.errno in _UNREACHABLE and self._send_again(data, addr):
                    st.send_calls += 1
                    st.datagrams_sent += 1
                    continue
                st.send_errors += 1
                st.last_send_error = f"{errno.errorcode.get(exc.errno or 0, exc.errno)} ({len(data)} B)"  # e.g. unreachable: dropped, the core retransmits
                log.debug("sendto %r failed: %r", addr, exc)
                if exc.errno == errno.EMSGSIZE:
                    self.ep.datagram_too_big(data, addr)  # a PMTU probe learns at once
                continue
            st.send_calls += 1
            st.datagrams_sent += 1
        return j

    def _send_again(self, data: bytes | bytearray, addr: SockAddr) -> bool:
        """Send `data` again after its send reported an earlier datagram's
        ICMP error (see _send_failed); a few times, while more such errors
        keep arriving. False if it still could not go."""
        for _ in range(SEND_AGAIN_TRIES):
            try:
                self.sock.sendto(data, addr)
                return True
            except OSError as exc:
                if exc.errno not in _UNREACHABLE:
                    return False
                self._read_error_queue(taken=True)
        return False

    def _set_df(self, on: bool) -> None:
        if self._df_supported:
            self._df_supported = set_dont_fragment(self.sock, on)
            # A DF datagram too big for the interface fails with EMSGSIZE at
            # once; with IP_RECVERR on, the kernel would also queue that error
            # and report it again on later calls. Big datagrams are sent with
            # the error queue off; small ones (SYNs among them) with it on.
            _enable_icmp_errors(self.sock, not on)
        self._df = on if self._df_supported else False

    def _wait_writable(self) -> None:
        if not self._writing and not self.closed:
            self._writing = True
            if self._off_loop:
                self.loop.call_soon_threadsafe(self._add_writer)
            else:
                self.loop.add_writer(self._fd, self._on_writable)

    def _add_writer(self) -> None:
        with self.lock:
            if self._writing and not self.closed:
                self.loop.add_writer(self._fd, self._on_writable)

    def _retry_later(self) -> None:
        if self._off_loop:
            self.loop.call_soon_threadsafe(self._retry_later_on_loop)
        elif self._retry_handle is None and not self.closed:
            self._retry_handle = self.loop.call_later(0.001, self._on_retry)

    def _retry_later_on_loop(self) -> None:
        with self.lock:
            self._retry_later()

    def _on_retry(self) -> None:
        self._retry_handle = None
        with self.lock:
            if not self.closed:
                self._drain_backlog()

    def _on_writable(self) -> None:
        with self.lock:
            if not self.closed:
                self._drain_backlog()

    # ---------------------------------------------------------------- time
    def _on_timer(self) -> None:
        """Our deadline is due (called by this loop's _LoopTimers)."""
        with self.lock:
            self.io_stats.loop_calls += 1
            self.io_stats.timer_calls += 1
            deadline = self._timer_at
            self._timer_at = None
            self._timer_tick = -1
            if self.closed or deadline is None:
                return
            now = self.now()
            if deadline > now + NOT_YET:
                # Not due (a live entry is due when it fires): never tell the
                # core a time still to come, or it runs every deadline up to
                # it at once (keep-alive probes, the idle timeout, RTOs).
                log.debug("timer for %.6f called at %.6f: armed again", deadline, now)
                self._timer_at = deadline
                self._timer.arm(self, deadline)
                return
            # Loops fire a hair early; the core must see the deadline reached.
            self.ep.handle_timer(max(deadline, now))
            self._timer_moved = True  # disarmed above: arm again for the next deadline
            self._process_locked()

    # ------------------------------------------------------------- closing
    def close(self) -> None:
        """Close the UDP socket now (connections still open just go silent)."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self._timer.endpoints -= 1
            if self._drive is not None:
                self._drive.close()
            try:
                if self._reader_on:
                    self.loop.remove_reader(self._fd)
                if self._writing:
                    self.loop.remove_writer(self._fd)
            except Exception:  # noqa: BLE001 - the loop may be closing already
                pass
            if self._timer_at is not None:
                self._timer_at = None
                self._timer_tick = -1
                self._timer.superseded()
            if self._retry_handle is not None:
                self._retry_handle.cancel()
            self._retry_handle = None
            if self._backlog:
                self._backlog.clear()
            if self.observer is not None:
                self.observer.close(self.now())
            self.sock.close()
            waiters, self._closed_waiters = self._closed_waiters or (), None
        for fut in waiters:
            if not fut.done():
                fut.get_loop().call_soon_threadsafe(_set_done, fut)

    async def wait_closed(self) -> None:
        if self.closed:
            return
        fut = asyncio.get_running_loop().create_future()
        with self.lock:
            if self.closed:
                return
            if self._closed_waiters is None:
                self._closed_waiters = []
            self._closed_waiters.append(fut)
        await fut

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.ep.connection_count} connections"
        return f"<AioEndpoint {self.local_address!r} {state}>"


def _set_done(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


async def create_endpoint(
    host: str | None, port: int, *, config: Config, family: int = 0,
    loop: asyncio.AbstractEventLoop | None = None, wire: str = "udp",
) -> AioEndpoint:
    """Bind a UDP socket on `host`:`port` (family from getaddrinfo) on the
    running loop; with `wire="tcp"`, a raw-socket TCP port (gannet.io.rawtcp)."""
    loop = loop or asyncio.get_running_loop()
    if wire == "tcp":
        from .rawtcp import create_tcp_endpoint

        return create_tcp_endpoint(host, port, config=config, loop=loop)
    if host == "":
        host = None
    infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM,
                                   flags=socket.AI_PASSIVE)
    infos = [i for i in infos if i[0] in (socket.AF_INET, socket.AF_INET6)]
    if not infos:
        raise OSError(errno.EAFNOSUPPORT, f"no IPv4/IPv6 address for {host!r}")
    if host is None:  # wildcard: prefer IPv4 like the socket module's "" does
        infos.sort(key=lambda i: i[0] != socket.AF_INET)
    error: OSError | None = None
    for fam, _, _, _, addr in infos:
        try:
            sock = make_udp_socket(fam, addr)
        except OSError as exc:
            error = exc
            continue
        aep = AioEndpoint(sock, config, loop)
        _keep_until_loop_ends(aep)
        return aep
    assert error is not None
    raise error


def _keep_until_loop_ends(aep: AioEndpoint) -> None:
    """Close `aep` when it closes itself or when the loop cancels its tasks
    (asyncio.run does so on exit), so no UDP socket outlives its loop."""

    async def life() -> None:
        try:
            await aep.wait_closed()
        finally:
            aep.close()

    task = aep.loop.create_task(life(), name=f"gannet-endpoint-{aep.local_address}")
    aep._life_task = task
