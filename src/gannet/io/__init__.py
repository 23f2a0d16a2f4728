"""Gannet's I/O adapters: the only code that touches sockets, clocks and threads.

- `gannet.io.endpoint`: `AioEndpoint`, one UDP socket driven by an asyncio loop
- `gannet.io.aio`: asyncio streams (`open_connection`, `start_server`)
- `gannet.io.blocking`: the blocking `Socket`, run by a background loop thread
"""

from .aio import Server, StreamWriter, open_connection, start_server
from .blocking import Socket
from .endpoint import AioEndpoint, create_endpoint, make_config

__all__ = [
    "AioEndpoint", "Server", "StreamWriter", "create_endpoint", "make_config",
    "open_connection", "start_server", "Socket",
]
