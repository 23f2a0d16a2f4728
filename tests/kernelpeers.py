"""A kernel TCP peer for the tests of Gannet's TCP wire (not a test module)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def kernel_sink(reply: Callable[[bytes], bytes]) -> Iterator[tuple[int, bytearray]]:
    """A kernel TCP server on 127.0.0.1 for one connection: it reads to the
    peer's FIN, then sends `reply(what it read)` (a half-close, so the answer
    travels after the FIN). Yields (port, the bytes read so far); on leaving,
    waits for the connection to end."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.settimeout(30)
    got = bytearray()

    def serve() -> None:
        c, _ = srv.accept()
        with c:
            c.settimeout(30)
            while chunk := c.recv(1 << 16):
                got.extend(chunk)
            c.sendall(reply(bytes(got)))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    with srv:
        yield srv.getsockname()[1], got
        t.join(30)
