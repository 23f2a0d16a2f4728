"""Gannet: a reliable, TCP-grade transport over UDP.

Public API:

- `gannet.Socket`: blocking, `socket.socket`-shaped (bind/listen/accept/connect,
  send/sendall/recv, shutdown, close, settimeout)
- `gannet.open_connection` / `gannet.start_server`: asyncio streams, shaped
  like `asyncio.open_connection` / `asyncio.start_server`
- `gannet.Config`: every protocol setting; the functions above also take the
  settings as keyword overrides (`Socket(mss=1200)`, `open_connection(h, p, nodelay=False)`)
"""

__version__ = "0.1.0"

import os

# numpy (wire.batch) loads OpenBLAS, which starts a pool of worker threads
# that spin on the other cores; Gannet does no linear algebra, and on a
# 2-core machine those threads took CPU from the peer process (loopback bulk
# 270-630 MB/s with them, 610-710 MB/s without). Set before any submodule
# imports numpy; a user's own setting wins, and a numpy imported before Gannet
# keeps the pool it made.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# The compiled core or the pure-Python one (GANNET_PURE=1): chosen before
# any core module is imported (_build.py).
from . import _build  # noqa: E402

_build.select()

from typing import TYPE_CHECKING, Any

from .config import Config  # noqa: E402 - after the setting above

__all__ = [
    "Config", "SHUT_RD", "SHUT_RDWR", "SHUT_WR", "Server", "Socket", "StreamWriter",
    "__version__", "open_connection", "start_server",
]

# The adapters are imported on first use (PEP 562): `import gannet.core` or
# a CLI command that needs no network (`gannet --help`) then loads neither
# asyncio nor numpy.
_LAZY = {
    "Server": "aio", "StreamWriter": "aio", "open_connection": "aio", "start_server": "aio",
    "Socket": "blocking", "SHUT_RD": "blocking", "SHUT_RDWR": "blocking", "SHUT_WR": "blocking",
}

if TYPE_CHECKING:
    from .io.aio import Server, StreamWriter, open_connection, start_server
    from .io.blocking import SHUT_RD, SHUT_RDWR, SHUT_WR, Socket


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gannet' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".io.{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
