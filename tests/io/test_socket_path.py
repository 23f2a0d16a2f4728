"""The blocking Socket's per-call path is a compiled base class
(io/sockpath.py's `SocketPath`); the public class stays a Python class.

What a user may do with a Python class still works on Socket: subclass it
(overriding a per-call method and calling the base's), set attributes of
their own on an instance, keep a weak reference to it. The per-call
methods keep the socket module's argument checks and errors.
"""

import threading
import weakref

import pytest

import gannet
from gannet.io import sockpath

pytestmark = pytest.mark.timeout(30)


def echo(conn):
    while data := conn.recv(65536):
        conn.sendall(data)


class CountingSocket(gannet.Socket):
    """A user's subclass: counts its receives, and its own attribute."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.received = 0

    def recv(self, bufsize, flags=0):
        data = super().recv(bufsize, flags)
        self.received += len(data)
        return data


def test_a_subclass_overrides_recv_and_keeps_attributes_of_its_own():
    ls = gannet.Socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    c = CountingSocket()
    c.label = "client"  # an attribute the class does not declare
    ref = weakref.ref(c)
    c.connect(ls.getsockname())
    s, _ = ls.accept()
    server = threading.Thread(target=echo, args=(s,), daemon=True)
    server.start()
    try:
        assert isinstance(c, sockpath.SocketPath)
        for i in range(50):
            msg = i.to_bytes(2, "big") * 32
            c.sendall(msg)
            got = b""
            while len(got) < len(msg):
                got += c.recv(len(msg) - len(got))
            assert got == msg
        buf = bytearray(64)
        c.send(b"y" * 64)
        n = 0
        while n < 64:
            n += c.recv_into(memoryview(buf)[n:])
        assert bytes(buf) == b"y" * 64
        assert c.received == 50 * 64  # (recv_into is the base's own: not counted)
        assert c.label == "client" and ref() is c
        assert c.receive is not None  # the alias
    finally:
        c.close()
        server.join(10)
        s.close()
        ls.close()


def test_the_per_call_methods_keep_the_socket_modules_errors():
    ls = gannet.Socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    c = gannet.Socket()
    with pytest.raises(OSError) as info:
        c.recv(10)  # not connected
    assert info.value.errno == 107  # ENOTCONN
    with pytest.raises(OSError):
        c.sendall(b"x")
    c.connect(ls.getsockname())
    s, _ = ls.accept()
    try:
        with pytest.raises(ValueError):
            c.recv(-1)
        with pytest.raises(ValueError):
            c.recv(10, 1)
        with pytest.raises(ValueError):
            c.recv_into(bytearray(4), 8)
        with pytest.raises(ValueError):
            c.recv_into(bytearray(4), -1)
        assert c.recv(0) == b""
        assert c.send(b"") == 0
        c.settimeout(0)
        with pytest.raises(BlockingIOError):
            c.recv(10)  # nothing there, non-blocking
        c.settimeout(0.05)
        with pytest.raises(TimeoutError):
            c.recv(10)
        c.shutdown(gannet.SHUT_WR)
        with pytest.raises(BrokenPipeError):
            c.sendall(b"x")
        assert s.recv(10) == b""  # the FIN
    finally:
        c.close()
        s.close()
        ls.close()
    with pytest.raises(OSError) as info:
        c.recv(10)
    assert info.value.errno == 9  # EBADF
