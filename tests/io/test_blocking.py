"""The blocking gannet.Socket over loopback."""

import errno
import hashlib
import importlib.util
import socket
import threading
import time
from pathlib import Path

import pytest

import gannet

from gannet_io_helpers import free_udp_port, needs_ipv6, pattern

pytestmark = pytest.mark.timeout(30)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def listener(host="127.0.0.1", family=socket.AF_INET, backlog=16, **kw):
    s = gannet.Socket(family, **kw)
    s.bind((host, 0))
    s.listen(backlog)
    return s


def serve_in_thread(ls, handler):
    def run():
        conn, addr = ls.accept()
        with conn:
            handler(conn, addr)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def recv_exactly(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(min(1 << 20, n - len(buf)))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def recv_all(s):
    buf = bytearray()
    while chunk := s.recv(1 << 20):
        buf += chunk
    return bytes(buf)


def test_round_trip_and_addresses():
    with listener() as ls:
        port = ls.getsockname()[1]
        assert port != 0
        seen = {}

        def echo(conn, addr):
            seen["addr"] = addr
            seen["peer"] = conn.getpeername()
            data = conn.recv(100)
            conn.sendall(data.upper())

        t = serve_in_thread(ls, echo)
        with gannet.Socket() as s:
            s.connect(("127.0.0.1", port))
            assert s.getpeername() == ("127.0.0.1", port)
            s.sendall(b"hello")
            assert recv_exactly(s, 5) == b"HELLO"
            assert s.recv(10) == b""  # the server closed
            assert s.stats.bytes_received == 5
            assert s.endpoint_stats.datagrams_received > 0
        t.join(5)
        assert seen["addr"] == seen["peer"]
        assert seen["addr"][1] != 0


def test_ten_megabytes_each_way_verified_by_hash():
    up, down = pattern(10 << 20, 1), pattern(10 << 20, 2)
    got = {}
    with listener() as ls:
        def server(conn, addr):
            got["up"] = hashlib.sha256(recv_all(conn)).digest()
            conn.sendall(down)

        t = serve_in_thread(ls, server)
        with gannet.Socket() as s:
            s.connect(ls.getsockname())
            s.sendall(up)
            s.shutdown(socket.SHUT_WR)
            data = recv_all(s)
        t.join(10)
    assert got["up"] == hashlib.sha256(up).digest()
    assert hashlib.sha256(data).digest() == hashlib.sha256(down).digest()


def test_half_close_then_read_the_reply():
    with listener() as ls:
        def server(conn, addr):
            request = recv_all(conn)  # ends at the client's FIN
            conn.sendall(b"got %d bytes" % len(request))

        t = serve_in_thread(ls, server)
        with gannet.Socket() as s:
            s.connect(ls.getsockname())
            s.sendall(b"x" * 5000)
            s.shutdown(gannet.SHUT_WR)
            with pytest.raises(BrokenPipeError):
                s.send(b"more")
            assert recv_all(s) == b"got 5000 bytes"
        t.join(5)


def test_recv_timeout_raises_timeout_error():
    with listener() as ls:
        release = threading.Event()
        t = serve_in_thread(ls, lambda conn, addr: release.wait(5))
        with gannet.Socket() as s:
            s.settimeout(0.2)
            assert s.gettimeout() == 0.2
            s.connect(ls.getsockname())
            start = time.monotonic()
            with pytest.raises(TimeoutError):
                s.recv(10)
            assert 0.15 < time.monotonic() - start < 2
            assert socket.timeout is TimeoutError
            s.setblocking(False)
            with pytest.raises(BlockingIOError):
                s.recv(10)
        release.set()
        t.join(5)


def test_connect_to_nothing_is_refused_quickly():
    port = free_udp_port()
    with gannet.Socket() as s:
        start = time.monotonic()
        with pytest.raises(ConnectionRefusedError):
            s.connect(("127.0.0.1", port))
        assert time.monotonic() - start < 2


def test_misuse_raises_oserror_like_the_socket_module():
    s = gannet.Socket()
    with pytest.raises(OSError) as e:
        s.accept()
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        s.send(b"x")
    assert e.value.errno == errno.ENOTCONN
    with pytest.raises(OSError) as e:
        s.recv(1)
    assert e.value.errno == errno.ENOTCONN
    with pytest.raises(OSError) as e:
        s.getpeername()
    assert e.value.errno == errno.ENOTCONN
    s.bind(("127.0.0.1", 0))
    with pytest.raises(OSError) as e:
        s.bind(("127.0.0.1", 0))
    assert e.value.errno == errno.EINVAL
    s.close()
    with pytest.raises(OSError) as e:
        s.bind(("127.0.0.1", 0))
    assert e.value.errno == errno.EBADF

    with pytest.raises(ValueError):
        gannet.Socket(socket.AF_UNIX)
    with pytest.raises(ValueError):
        gannet.Socket().settimeout(-1)
    with pytest.raises(ValueError):
        gannet.Socket().connect(("127.0.0.1", 70000))
    with pytest.raises(ValueError):
        gannet.Socket().shutdown(42)
    with pytest.raises(TypeError):
        gannet.Socket(no_such_setting=1)
    with pytest.raises(ValueError):
        gannet.Socket(mss=1)

    with listener() as ls:
        t = serve_in_thread(ls, lambda conn, addr: conn.recv(1))
        with gannet.Socket() as c:
            c.connect(ls.getsockname())
            with pytest.raises(OSError) as e:
                c.connect(ls.getsockname())
            assert e.value.errno == errno.EISCONN
            with pytest.raises(ValueError):
                c.recv(-1)
        t.join(5)


def test_address_in_use():
    with listener() as ls:
        s = gannet.Socket()
        with pytest.raises(OSError) as e:
            s.bind(ls.getsockname())
        assert e.value.errno == errno.EADDRINUSE


def test_context_manager_closes_and_peer_sees_eof():
    with listener() as ls:
        got = {}
        t = serve_in_thread(ls, lambda conn, addr: got.setdefault("data", recv_all(conn)))
        with gannet.Socket() as s:
            s.connect(ls.getsockname())
            s.sendall(b"bye")
        with pytest.raises(BrokenPipeError):
            s.send(b"x")
        with pytest.raises(OSError):
            s.recv(1)
        t.join(5)
        assert got["data"] == b"bye"
    with pytest.raises(OSError):
        ls.accept()


def test_close_unblocks_accept_in_another_thread():
    ls = listener()
    errors = []

    def run():
        try:
            ls.accept()
        except OSError as exc:
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.1)
    ls.close()
    t.join(5)
    assert errors and errors[0].errno == errno.EBADF


def _load_example(name):
    spec = importlib.util.spec_from_file_location(f"gannet_example_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fifty_concurrent_clients_against_the_threaded_echo_server(capsys):
    handle_client = _load_example("echo_server").handle_client
    ls = listener(backlog=64)

    def accept_loop():
        while True:
            try:
                conn, addr = ls.accept()
            except OSError:
                return
            threading.Thread(target=handle_client, args=(conn, addr), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    failures = []

    def client(i):
        try:
            with gannet.Socket() as s:
                s.settimeout(15)
                s.connect(ls.getsockname())
                for j in range(5):
                    msg = f"client {i} message {j}".encode()
                    s.sendall(msg)
                    reply = recv_exactly(s, 6 + len(msg))
                    if reply != b"Echo: " + msg:
                        failures.append((i, j, reply))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            failures.append((i, repr(exc)))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(25)
    ls.close()
    assert not failures
    assert not any(t.is_alive() for t in threads)


def test_one_reader_and_one_writer_thread():
    n = 3 << 20
    data = pattern(n, 3)
    with listener() as ls:
        t = serve_in_thread(ls, lambda conn, addr: conn.sendall(recv_exactly(conn, n)))
        with gannet.Socket() as s:
            s.connect(ls.getsockname())
            got = {}
            r = threading.Thread(target=lambda: got.setdefault("data", recv_exactly(s, n)))
            r.start()
            view = memoryview(data)
            for i in range(0, n, 100_000):
                s.sendall(view[i:i + 100_000])
            r.join(20)
            assert got["data"] == data
        t.join(5)


def test_recv_into():
    with listener() as ls:
        t = serve_in_thread(ls, lambda conn, addr: conn.sendall(b"abcdef"))
        with gannet.Socket() as s:
            s.connect(ls.getsockname())
            buf = bytearray(10)
            n = 0
            while n < 6:
                k = s.recv_into(memoryview(buf)[n:])
                assert k
                n += k
            assert buf[:6] == b"abcdef"
        t.join(5)


def test_shutdown_read_discards_and_returns_eof():
    with listener() as ls:
        t = serve_in_thread(ls, lambda conn, addr: (conn.sendall(b"x" * 100_000), conn.recv(1)))
        with gannet.Socket() as s:
            s.connect(ls.getsockname())
            s.shutdown(gannet.SHUT_RD)
            assert s.recv(10) == b""
            s.sendall(b"k")
        t.join(5)


@needs_ipv6
def test_ipv6_round_trip():
    with listener("::1", socket.AF_INET6) as ls:
        assert ls.getsockname()[0] == "::1"
        t = serve_in_thread(ls, lambda conn, addr: conn.sendall(recv_exactly(conn, 4)[::-1]))
        with gannet.Socket(socket.AF_INET6) as s:
            s.connect(("::1", ls.getsockname()[1]))
            s.sendall(b"abcd")
            assert recv_exactly(s, 4) == b"dcba"
        t.join(5)


def test_io_thread_leaves_its_loop_before_the_interpreter_exits():
    """A daemon thread still inside the event loop's C code while the
    interpreter finalizes can crash the process at exit (seen as SIGSEGV
    in CLI clients): the exit handler stops the loop and joins the thread."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent('''
        import atexit, sys, threading

        def check():  # registered first, so it runs after gannet's exit handler
            alive = [t for t in threading.enumerate() if t.name == "gannet-io" and t.is_alive()]
            print(f"io-thread-alive={len(alive)}", flush=True)

        atexit.register(check)
        import gannet

        srv = gannet.Socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        srv.settimeout(10)
        cli = gannet.Socket()
        cli.settimeout(10)
        cli.connect(srv.getsockname())
        conn, _ = srv.accept()
        cli.sendall(b"x" * 1000)
        got = b""
        while len(got) < 1000:
            got += conn.recv(1000)
        cli.close(); conn.close(); srv.close()
        print("echoed", len(got), flush=True)
    ''')
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "echoed 1000" in res.stdout
    assert "io-thread-alive=0" in res.stdout, res.stdout
