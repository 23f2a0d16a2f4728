"""`gannet tunnel` as real subprocesses, carrying real programs: redis and curl.

redis-server / redis-benchmark / redis-cli (Debian: redis-server, redis-tools)
and curl (Debian: curl) are used when installed; otherwise those tests skip
(and fail under CI, whose .ci/run installs them).
"""

import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from programs import require

GANNET = [sys.executable, "-m", "gannet"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
HOST = "127.0.0.1"


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_for(pred, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def tcp_ready(port):
    try:
        socket.create_connection((HOST, port), timeout=0.5).close()
        return True
    except OSError:
        return False


def stop(proc, timeout=5):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


class Proc:
    """A `gannet tunnel ...` subprocess; stderr to a file; `.port` from its banner."""

    def __init__(self, path: Path, *args: str):
        self.err_path = path
        self.proc = subprocess.Popen(GANNET + ["tunnel", *args], stdout=subprocess.DEVNULL,
                                     stderr=path.open("wb"), env=ENV)
        try:
            wait_for(lambda: re.search(r"listening on [\d.]+:(\d+)", self.stderr)
                     or self.proc.poll() is not None, what="tunnel banner")
        except AssertionError:
            stop(self.proc)
            raise
        m = re.search(r"listening on [\d.]+:(\d+)", self.stderr)
        if not m:
            raise AssertionError(f"tunnel did not start: {self.stderr}")
        self.port = int(m.group(1))

    @property
    def stderr(self):
        return self.err_path.read_text()


@pytest.fixture
def tunnel(tmp_path):
    """tunnel(target_port, *extra, mode=None) -> TCP port of a client/server pair
    forwarding to target (`extra` for both, `mode` the client's --mode)."""
    procs = []

    def make(target_port, *extra, mode=None):
        server = Proc(tmp_path / "tunnel-server.err", "server", "--listen", f"{HOST}:0",
                      "--target", f"{HOST}:{target_port}", *extra)
        procs.append(server)
        client = Proc(tmp_path / "tunnel-client.err", "client", "--listen", f"{HOST}:0",
                      "--server", f"{HOST}:{server.port}", *extra,
                      *(("--mode", mode) if mode else ()))
        procs.append(client)
        make.server, make.client = server, client
        return client.port

    yield make
    for p in procs:
        stop(p.proc)


def need(*programs):
    require(*programs)


@pytest.fixture
def redis_port(tmp_path):
    need("redis-server")
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
         "--protected-mode", "no", "--dir", str(tmp_path), "--proto-max-bulk-len", "64mb"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: tcp_ready(port) or proc.poll() is not None, what="redis-server")
        if proc.poll() is not None:
            pytest.fail("redis-server exited at start")
        yield port
    finally:
        stop(proc)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["mux", "stream"])
def test_redis_benchmark_through_tunnel(tunnel, redis_port, mode):
    need("redis-benchmark")
    port = tunnel(redis_port, mode=mode)
    out = subprocess.run(
        ["redis-benchmark", "-h", HOST, "-p", str(port), "-n", "2000", "-c", "10",
         "-t", "set,get", "-q"],
        capture_output=True, timeout=90, text=True,
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert re.search(r"^SET: .*requests per second", text, re.M), text
    assert re.search(r"^GET: .*requests per second", text, re.M), text
    assert "error" not in text.lower(), text
    # every benchmark connection went through (and was logged by) the tunnel
    wait_for(lambda: tunnel.client.stderr.count("close:") >= 20, what="connection logs")
    assert "open" in tunnel.server.stderr
    assert f"(udp, {mode} mode)" in tunnel.client.stderr
    # mux: one Gannet connection carried them all; stream: none
    assert tunnel.client.stderr.count("mux open") == (1 if mode == "mux" else 0)


@pytest.mark.timeout(60)
def test_one_server_takes_clients_of_both_modes(tunnel, tmp_path):
    """A stream-mode client and a mux-mode client talk to the same server,
    which tells them apart by their first bytes."""
    target = socket.create_server((HOST, 0))
    stream_client = None
    try:
        port = tunnel(target.getsockname()[1], mode="mux")
        stream_client = Proc(tmp_path / "stream-client.err", "client", "--listen", f"{HOST}:0",
                             "--server", f"{HOST}:{tunnel.server.port}", "--mode", "stream")
        for p in (port, stream_client.port):
            with socket.create_connection((HOST, p), timeout=5) as app:
                svc, _ = target.accept()
                with svc:
                    app.sendall(b"hello %d" % p)
                    svc.settimeout(5)
                    assert svc.recv(100) == b"hello %d" % p
                    svc.sendall(b"world")
                    app.settimeout(5)
                    assert app.recv(100) == b"world"
        wait_for(lambda: tunnel.server.stderr.count("close:") >= 2, what="server close logs")
        assert tunnel.server.stderr.count("mux open") == 1
        assert "refused" not in tunnel.server.stderr
    finally:
        target.close()
        if stream_client is not None:
            stop(stream_client.proc)


@pytest.mark.timeout(120)
def test_redis_cli_1mb_value(tunnel, redis_port, tmp_path):
    need("redis-cli")
    port = tunnel(redis_port)
    value = os.urandom(512 * 1024).hex().encode()  # 1 MiB of text, no newline
    cli = ["redis-cli", "-h", HOST, "-p", str(port)]
    out = subprocess.run(cli + ["-x", "SET", "big"], input=value, capture_output=True,
                         timeout=60)
    assert out.stdout.strip() == b"OK", out
    out = subprocess.run(cli + ["--no-raw", "STRLEN", "big"], capture_output=True, timeout=60)
    assert out.stdout.strip().endswith(str(len(value)).encode()), out
    out = subprocess.run(cli + ["--raw", "GET", "big"], capture_output=True, timeout=60)
    assert out.returncode == 0, out
    got = out.stdout[:-1] if out.stdout.endswith(b"\n") else out.stdout
    assert len(got) == len(value)
    assert got == value


@pytest.fixture
def http_dir(tmp_path):
    """python -m http.server on a loopback port, serving a 20 MB random file."""
    root = tmp_path / "www"
    root.mkdir()
    data = os.urandom(20 * 1000 * 1000)
    (root / "big.bin").write_bytes(data)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", HOST, "--directory", str(root)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: tcp_ready(port) or proc.poll() is not None, what="http.server")
        yield port, hashlib.sha256(data).hexdigest()
    finally:
        stop(proc)


@pytest.mark.timeout(180)
def test_curl_20mb_through_tunnel(tunnel, http_dir, tmp_path):
    need("curl")
    http_port, digest = http_dir
    port = tunnel(http_port)
    dest = tmp_path / "downloaded.bin"
    out = subprocess.run(
        ["curl", "-sS", "--fail", "--max-time", "150", "-o", str(dest),
         f"http://{HOST}:{port}/big.bin"],
        capture_output=True, timeout=160, text=True,
    )
    assert out.returncode == 0, out.stderr
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == digest
    wait_for(lambda: "close:" in tunnel.client.stderr, what="close log")
    assert re.search(r"down 20\d{6} B", tunnel.client.stderr), tunnel.client.stderr


@pytest.mark.timeout(60)
def test_cli_refused_target_resets_client(tunnel):
    port = tunnel(free_port())  # nothing listens on the target
    with socket.create_connection((HOST, port), timeout=5) as s:
        s.settimeout(5)
        s.sendall(b"hello")
        start = time.monotonic()
        try:
            data = s.recv(100)
        except ConnectionResetError:
            data = b""
        assert data == b""
        assert time.monotonic() - start < 3
    wait_for(lambda: "target refused" in tunnel.server.stderr, what="refusal log")


@pytest.mark.timeout(60)
def test_cli_quiet_and_errors(tmp_path):
    out = subprocess.run(GANNET + ["tunnel", "client", "--listen", f"{HOST}:0", "--server", ":7000"],
                         capture_output=True, timeout=20, text=True, env=ENV)
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "--server" in out.stderr
    out = subprocess.run(GANNET + ["tunnel", "server", "--listen", "x:y", "--target", "a:1"],
                         capture_output=True, timeout=20, text=True, env=ENV)
    assert out.returncode == 1 and "--listen" in out.stderr
    out = subprocess.run(GANNET + ["tunnel", "--help"], capture_output=True, timeout=20,
                         text=True, env=ENV)
    assert out.returncode == 0 and "server" in out.stdout and "client" in out.stdout

    # --quiet: the banner only, no per-connection lines
    target = socket.create_server((HOST, 0))
    server = client = None
    try:
        server = Proc(tmp_path / "s.err", "server", "--listen", f"{HOST}:0", "--target",
                      f"{HOST}:{target.getsockname()[1]}", "--quiet")
        client = Proc(tmp_path / "c.err", "client", "--listen", f"{HOST}:0", "--server",
                      f"{HOST}:{server.port}", "--quiet")
        with socket.create_connection((HOST, client.port), timeout=5) as s:
            conn, _ = target.accept()
            s.sendall(b"ping")
            conn.settimeout(5)
            assert conn.recv(4) == b"ping"
            conn.close()
            s.settimeout(5)
            assert s.recv(10) == b""
        time.sleep(0.3)
        assert "open" not in client.stderr and "close" not in client.stderr
        stop(client.proc)
        stop(server.proc)
        assert client.proc.returncode == 0 and server.proc.returncode == 0
    finally:
        target.close()
        for p in (server, client):
            if p is not None:
                stop(p.proc)


def _read_all(sock, timeout=10):
    sock.settimeout(timeout)
    out = bytearray()
    while chunk := sock.recv(65536):
        out += chunk
    return bytes(out)


LINGER_0 = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # struct linger {on, 0 s}: close sends RST


@pytest.mark.timeout(60)
def test_cli_half_close_both_ways(tunnel):
    """Each side's FIN crosses the tunnel on its own while the other direction
    keeps flowing, through the real `gannet tunnel` processes."""
    target = socket.create_server((HOST, 0))
    try:
        port = tunnel(target.getsockname()[1])

        # 1. The application half-closes first: the service reads to EOF, then replies.
        request = os.urandom(1_500_000)
        with socket.create_connection((HOST, port), timeout=5) as app:
            svc, _ = target.accept()
            with svc:
                app.sendall(request)
                app.shutdown(socket.SHUT_WR)
                got = _read_all(svc)  # ends only when the app's FIN arrived
                assert got == request
                svc.sendall(hashlib.sha256(got).hexdigest().encode())
                svc.shutdown(socket.SHUT_WR)
                assert _read_all(app) == hashlib.sha256(request).hexdigest().encode()

        # 2. The service half-closes first: the application sees EOF and can
        #    still send; the service receives all of it.
        upload = os.urandom(800_000)
        with socket.create_connection((HOST, port), timeout=5) as app:
            svc, _ = target.accept()
            with svc:
                svc.sendall(b"banner, then I only listen")
                svc.shutdown(socket.SHUT_WR)
                assert _read_all(app) == b"banner, then I only listen"
                app.sendall(upload)
                app.shutdown(socket.SHUT_WR)
                assert _read_all(svc) == upload
        wait_for(lambda: tunnel.client.stderr.count("close:") >= 2, what="close logs")
        closes = [ln for ln in tunnel.client.stderr.splitlines() if "close:" in ln]
        assert all(ln.endswith("closed") for ln in closes), closes
    finally:
        target.close()


@pytest.mark.timeout(60)
def test_cli_resets_propagate_both_ways(tunnel):
    """An RST on either end reaches the other end as an RST, not a clean EOF."""
    target = socket.create_server((HOST, 0))
    try:
        port = tunnel(target.getsockname()[1])

        # The service resets: the application's recv fails with a reset.
        with socket.create_connection((HOST, port), timeout=5) as app:
            svc, _ = target.accept()
            app.sendall(b"ping")
            svc.settimeout(5)
            assert svc.recv(4) == b"ping"
            svc.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_0)
            svc.close()
            app.settimeout(5)
            with pytest.raises(ConnectionResetError):
                while app.recv(100):
                    pass
        wait_for(lambda: "target reset" in tunnel.server.stderr, what="server reset log")

        # The application resets: the service's recv fails with a reset.
        app = socket.create_connection((HOST, port), timeout=5)
        svc, _ = target.accept()
        with svc:
            svc.sendall(b"ready")
            app.settimeout(5)
            assert app.recv(5) == b"ready"
            app.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_0)
            app.close()
            svc.settimeout(10)
            with pytest.raises(ConnectionResetError):
                while svc.recv(100):
                    pass
        wait_for(lambda: "client reset" in tunnel.client.stderr, what="client reset log")
    finally:
        target.close()


@pytest.mark.timeout(60)
def test_cli_unresolvable_hosts_are_one_line():
    for role, args, flag in (
        ("server", ["--listen", f"{HOST}:0", "--target", "no-such-host.invalid:80"], "--target"),
        ("client", ["--listen", f"{HOST}:0", "--server", "no-such-host.invalid:7000"], "--server"),
    ):
        out = subprocess.run(GANNET + ["tunnel", role, *args], capture_output=True, timeout=20,
                             text=True, env=ENV)
        assert out.returncode == 1, out
        assert out.stderr.count("\n") == 1, out.stderr
        assert flag in out.stderr and "cannot resolve" in out.stderr, out.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_cli_a_signal_resets_every_channel(tunnel, signum):
    """SIGTERM or SIGINT to the mux client: every TCP connection it carries is
    reset on both ends (the applications' and the service's), and it exits 0."""
    target = socket.create_server((HOST, 0))
    try:
        port = tunnel(target.getsockname()[1], mode="mux")
        pairs = []
        for i in range(3):
            app = socket.create_connection((HOST, port), timeout=5)
            svc, _ = target.accept()
            app.sendall(b"hi %d" % i)
            svc.settimeout(5)
            assert svc.recv(10) == b"hi %d" % i
            pairs.append((app, svc))
        tunnel.client.proc.send_signal(signum)
        assert tunnel.client.proc.wait(15) == 0
        for app, svc in pairs:
            for s in (app, svc):
                s.settimeout(5)
                with pytest.raises(ConnectionResetError):
                    while s.recv(100):
                        pass
                s.close()
        assert "stopping (3 open connections reset" in tunnel.client.stderr
    finally:
        target.close()


@pytest.mark.timeout(60)
def test_cli_a_server_taking_one_mode_refuses_the_other(tmp_path):
    """`tunnel server --modes mux` refuses a stream-mode client (its
    application is reset, the server says why) and serves a mux client."""
    target = socket.create_server((HOST, 0))
    procs = []
    try:
        server = Proc(tmp_path / "s.err", "server", "--listen", f"{HOST}:0", "--target",
                      f"{HOST}:{target.getsockname()[1]}", "--modes", "mux")
        procs.append(server)
        assert "(udp, mux clients)" in server.stderr
        for mode in ("stream", "mux"):
            client = Proc(tmp_path / f"{mode}.err", "client", "--listen", f"{HOST}:0", "--server",
                          f"{HOST}:{server.port}", "--mode", mode)
            procs.append(client)
            with socket.create_connection((HOST, client.port), timeout=5) as app:
                app.sendall(b"ping")
                app.settimeout(5)
                if mode == "stream":
                    with pytest.raises(ConnectionResetError):
                        while app.recv(100):
                            pass
                else:
                    svc, _ = target.accept()
                    with svc:
                        svc.settimeout(5)
                        assert svc.recv(4) == b"ping"
        wait_for(lambda: "a stream-mode client; this server takes mux" in server.stderr,
                 what="refusal line")
        out = subprocess.run(GANNET + ["tunnel", "server", "--listen", ":0", "--target", "a:1",
                                       "--modes", "udp"], capture_output=True, timeout=20,
                             text=True, env=ENV)
        assert out.returncode == 1 and "--modes" in out.stderr and out.stderr.count("\n") == 1
        out = subprocess.run(GANNET + ["tunnel", "server", "--listen", ":0", "--target", "a:1",
                                       "--max-mux", "0"], capture_output=True, timeout=20,
                             text=True, env=ENV)
        assert out.returncode == 1 and "--max-mux" in out.stderr and out.stderr.count("\n") == 1
    finally:
        target.close()
        for p in procs:
            stop(p.proc)
