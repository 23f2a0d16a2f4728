"""`gannet tunnel` with pre-shared keys, as a long-running service is used:
a client with another key is refused on both sides with a reason (the
server's operator reads it in its log), a client with the same key goes
through. Loopback only, bounded."""

from __future__ import annotations

import contextlib
import socket
import threading

import pytest
from test_tunnel_cli import HOST, Proc, stop, wait_for

from gannet.crypto.psk import generate_psk_file

pytestmark = pytest.mark.timeout(60)


def _echo_target() -> tuple[socket.socket, int]:
    srv = socket.create_server((HOST, 0))

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):  # (the tunnel may reset it)
                while data := conn.recv(65536):
                    conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    return srv, srv.getsockname()[1]


def _through(port: int) -> bytes:
    with socket.create_connection((HOST, port), timeout=5) as s:
        s.settimeout(10)
        s.sendall(b"ping")
        try:
            return s.recv(100)
        except ConnectionResetError:
            return b""


def test_a_client_with_another_psk_is_refused_and_the_server_says_why(tmp_path):
    good, bad = tmp_path / "good.psk", tmp_path / "bad.psk"
    generate_psk_file(good)
    generate_psk_file(bad)
    target, target_port = _echo_target()
    procs = []
    try:
        server = Proc(tmp_path / "server.err", "server", "--listen", f"{HOST}:0",
                      "--target", f"{HOST}:{target_port}", "--psk-file", str(good))
        procs.append(server)
        wrong = Proc(tmp_path / "wrong.err", "client", "--listen", f"{HOST}:0",
                     "--server", f"{HOST}:{server.port}", "--psk-file", str(bad))
        procs.append(wrong)
        assert _through(wrong.port) == b""
        wait_for(lambda: "wrong pre-shared key" in wrong.stderr, what="the client's reason")
        wait_for(lambda: "refused 127.0.0.1:" in server.stderr
                 and "wrong pre-shared key" in server.stderr, what="the server's log")
        right = Proc(tmp_path / "right.err", "client", "--listen", f"{HOST}:0",
                     "--server", f"{HOST}:{server.port}", "--psk-file", str(good))
        procs.append(right)
        assert _through(right.port) == b"ping"
    finally:
        for p in procs:
            stop(p.proc)
        target.close()
