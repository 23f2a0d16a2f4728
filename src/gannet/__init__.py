"""Gannet: a reliable, TCP-grade transport over UDP.

Public API:

- `gannet.Socket`: blocking, `socket.socket`-shaped (bind/listen/accept/connect,
  send/sendall/recv, shutdown, close, settimeout)
- `gannet.open_connection` / `gannet.start_server`: asyncio streams, shaped
  like `asyncio.open_connection` / `asyncio.start_server`
- `gannet.Config`: every protocol setting; the functions above also take the
  settings as keyword overrides (`Socket(mss=1200)`, `open_connection(h, p, nodelay=False)`)

The names are loaded on first use (PEP 562): `import gannet` alone loads
neither asyncio nor numpy, so a command line tool that only parses its
arguments (`gannet --help`) starts at once.
"""

from __future__ import annotations

import logging
import os

TYPE_CHECKING = False  # (typing.TYPE_CHECKING without importing typing)

__version__ = "0.1.0"

# numpy (wire.batch) loads OpenBLAS, which starts a pool of worker threads
# that spin on the other cores; Gannet does no linear algebra, and on a
# 2-core machine those threads took CPU from the peer process (loopback bulk
# 270-630 MB/s with them, 610-710 MB/s without). Set before any submodule
# imports numpy; a user's own setting wins, and a numpy imported before Gannet
# keeps the pool it made.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# Library code reports through `logging` (logger "gannet" and its children:
# gannet.io, gannet.observe, gannet.tunnel, ...) and never prints; what is
# shown, and where, is the application's choice. Without one, nothing is
# (not even Python's last-resort stderr output for warnings).
logging.getLogger("gannet").addHandler(logging.NullHandler())

# The compiled core or the pure-Python one (GANNET_PURE=1): chosen before
# any core module is imported (_build.py).
from . import _build  # noqa: E402

_build.select()

# public name -> the module that defines it
_HOMES = {
    "Config": "gannet.config",
    "Server": "gannet.io.aio",
    "StreamReader": "gannet.io.aio",
    "StreamWriter": "gannet.io.aio",
    "open_connection": "gannet.io.aio",
    "start_server": "gannet.io.aio",
    "SHUT_RD": "gannet.io.blocking",
    "SHUT_RDWR": "gannet.io.blocking",
    "SHUT_WR": "gannet.io.blocking",
    "Socket": "gannet.io.blocking",
}

__all__ = sorted([*_HOMES, "__version__"])

if TYPE_CHECKING:
    from typing import Any

    from .config import Config
    from .io.aio import Server, StreamReader, StreamWriter, open_connection, start_server
    from .io.blocking import SHUT_RD, SHUT_RDWR, SHUT_WR, Socket


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'gannet' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later reads skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
