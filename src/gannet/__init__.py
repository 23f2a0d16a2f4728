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

from .config import Config
from .io.aio import Server, StreamWriter, open_connection, start_server
from .io.blocking import SHUT_RD, SHUT_RDWR, SHUT_WR, Socket

__all__ = [
    "Config", "SHUT_RD", "SHUT_RDWR", "SHUT_WR", "Server", "Socket", "StreamWriter",
    "__version__", "open_connection", "start_server",
]
