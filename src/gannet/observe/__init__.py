"""Looking into Gannet: connection info, qlog, pcap, live stats, diagnosis.

Everything here watches the sans-I/O core from its boundary (trace.py); the
core has no hooks. What is on is decided per endpoint when an I/O adapter
makes one (`attach`): by its Config (`qlog_dir`, `track_limits`) and by the
process-wide settings that Gannet's commands set from `--qlog DIR`,
`--pcap FILE` and the stats socket (`configure`). An endpoint with nothing
on gets no observer and runs no extra code.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Config
    from ..core.connection import Connection
    from ..io.endpoint import AioEndpoint
    from .info import ConnectionInfo
    from .trace import EndpointObserver

__all__ = ["ConnectionInfo", "configure", "connection_info", "attach", "info_of", "settings"]

log = logging.getLogger("gannet.observe")


def __getattr__(name: str) -> object:
    # ConnectionInfo's module is loaded when first asked for (an info is read
    # at a connection's end, or on request), not on a client's way to its SYN.
    if name in ("ConnectionInfo", "connection_info"):
        from . import info

        return getattr(info, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class Settings:
    """Process-wide observation settings (the commands' global options)."""

    qlog_dir: str | None = None
    pcap_path: str | None = None
    track_limits: bool = False


settings = Settings()
_endpoints: weakref.WeakSet = weakref.WeakSet()  # observed AioEndpoints, for the stats socket
_lock = threading.Lock()


def configure(*, qlog_dir: str | None = None, pcap_path: str | None = None,
              track_limits: bool | None = None) -> None:
    """Set what every endpoint made from now on in this process observes."""
    if qlog_dir is not None:
        settings.qlog_dir = qlog_dir
    if pcap_path is not None:
        settings.pcap_path = pcap_path
    if track_limits is not None:
        settings.track_limits = track_limits


def wanted(config: Config) -> bool:
    """Whether an adapter endpoint with `config` gets an observer (`attach`;
    `per_packet` says whether its core endpoint must take the observer's
    wrappers)."""
    return bool(config.qlog_dir or settings.qlog_dir or settings.pcap_path or config.track_limits
                or settings.track_limits)


def per_packet(config: Config) -> bool:
    """Whether the observer of an adapter endpoint with `config` records
    each datagram (a qlog or a pcap): the adapter then makes its core
    endpoint one that takes the observer's wrappers (trace.observable).
    Limit accounting alone needs no wrapper: the adapter's pass calls the
    observer (`after_pass`), and the endpoint stays of its native class,
    whose calls to its own methods stay native."""
    return bool(config.qlog_dir or settings.qlog_dir or settings.pcap_path)


def attach(aep: AioEndpoint) -> EndpointObserver | None:
    """The observer for a new adapter endpoint, or None when nothing is on."""
    config = aep.config
    if not wanted(config):
        return None
    qlog_dir = config.qlog_dir or settings.qlog_dir
    pcap_path = settings.pcap_path
    from .trace import EndpointObserver

    shared = None
    if pcap_path:
        from . import pcap  # (only with a capture: the stats socket's observer needs none)

        shared = pcap.open_shared(pcap_path)
    packets = per_packet(config)
    observer = EndpointObserver(
        aep.ep, local_addr=aep.local_address, qlog_dir=qlog_dir, pcap=shared, track_limits=True,
        install=packets,
    )
    if not packets:
        aep.after_pass = observer.after_pass  # (the pass calls it: see per_packet)
    with _lock:
        _endpoints.add(aep)
    return observer


def observed_endpoints() -> list[AioEndpoint]:
    with _lock:
        return [aep for aep in _endpoints if not aep.closed]


def info_of(aep: AioEndpoint, conn: Connection) -> ConnectionInfo:
    """`conn`'s info now, with the limited times when its endpoint tracks them."""
    from .info import connection_info

    observer = getattr(aep, "observer", None)
    clock = observer.clock_of(conn) if observer is not None else None
    return connection_info(conn, aep.now(), clock, getattr(aep.ep, "datagram_overhead", 0))


@atexit.register
def _at_exit() -> None:
    for aep in observed_endpoints():
        observer = getattr(aep, "observer", None)
        if observer is not None:
            try:
                with aep.lock:
                    observer.close(aep.now())
            except Exception:  # noqa: BLE001 - exiting: write what can be written
                log.debug("closing traces at exit failed", exc_info=True)
    from . import pcap

    pcap.close_all()
