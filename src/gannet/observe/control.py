"""The stats socket: what `gannet stats` asks each running process.

A process that serves stats (Gannet's commands do, unless `--no-stats` or
GANNET_NO_STATS=1; a library calls `start_server()`) listens on a Unix
socket named after its pid in a directory only its user can enter:
$XDG_RUNTIME_DIR/gannet, else /tmp/gannet-UID (made with mode 0700, and
refused if another user owns it or others may enter it). The socket itself
is mode 0600 and each client's uid is checked (SO_PEERCRED) as well. A
request is one line of JSON ({"cmd": "list"}); the answer one line: the
process and its live connections, each with its ConnectionInfo.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import socket
import stat
import struct
import sys
import threading
import time

from ..procs import pid_alive

log = logging.getLogger("gannet.observe.control")
MAX_REQUEST = 4096
_server: dict = {}


def runtime_dir() -> str:
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base):
        return os.path.join(base, "gannet")
    return os.path.join("/tmp", f"gannet-{os.getuid()}")


def _safe_dir(path: str, create: bool) -> bool:
    """Whether `path` is a directory of ours that nobody else may enter."""
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        log.warning("stats directory %s is not private to this user: not used", path)
        return False
    return True


def socket_path(pid: int | None = None, directory: str | None = None) -> str:
    return os.path.join(directory or runtime_dir(), f"{pid or os.getpid()}.sock")


def snapshot() -> dict:
    """This process and its live connections (what the socket answers)."""
    from . import info_of, observed_endpoints

    conns = []
    for aep in observed_endpoints():
        with aep.lock:
            local = aep.local_address
            for conn in aep.ep.connections:
                d = info_of(aep, conn).as_dict()
                d["local_addr"] = f"{local[0]}:{local[1]}" if isinstance(local, tuple) else str(local)
                conns.append(d)
    return {"pid": os.getpid(), "argv": sys.argv, "time": time.time(), "connections": conns}


def _peer_uid(conn: socket.socket) -> int | None:
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return None
    return struct.unpack("3i", creds)[1]


def _serve(sock: socket.socket) -> None:
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return  # closed
        with conn:
            try:
                conn.settimeout(2.0)
                uid = _peer_uid(conn)
                if uid is not None and uid != os.getuid():
                    continue
                request = conn.recv(MAX_REQUEST)
                cmd = json.loads(request.decode() or "{}").get("cmd", "list")
                if cmd != "list":
                    answer = {"error": f"unknown command {cmd!r}"}
                else:
                    answer = snapshot()
                conn.sendall(json.dumps(answer, separators=(",", ":")).encode() + b"\n")
            except (OSError, ValueError, UnicodeDecodeError) as exc:
                log.debug("stats request failed: %r", exc)


def start_server(directory: str | None = None) -> str | None:
    """Serve stats for this process (once); returns the socket's path, or
    None when no private directory could be had."""
    from . import configure

    if _server.get("pid") == os.getpid():
        return _server["path"]
    directory = directory or runtime_dir()
    if not _safe_dir(directory, create=True):
        return None
    path = socket_path(directory=directory)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a dead process with our pid left it
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        sock.listen(8)
    except OSError as exc:
        sock.close()
        log.warning("cannot open the stats socket %s: %s", path, exc)
        return None
    configure(track_limits=True)  # so that every endpoint made from now on is listed
    threading.Thread(target=_serve, args=(sock,), name="gannet-stats", daemon=True).start()
    _server.update(pid=os.getpid(), path=path, sock=sock)
    atexit.register(stop_server)
    return path


def stop_server() -> None:
    if _server.get("pid") != os.getpid():
        return
    sock, path = _server.pop("sock"), _server.pop("path")
    _server.pop("pid", None)
    with contextlib.suppress(OSError):
        os.unlink(path)
    sock.close()


def query(path: str, timeout: float = 2.0) -> dict:
    """Ask one stats socket; OSError if nobody answers."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(b'{"cmd":"list"}\n')
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            if chunk.endswith(b"\n"):
                break
    return json.loads(b"".join(chunks))


def query_all(directory: str | None = None, pid: int | None = None) -> list[dict]:
    """Every live process's answer; sockets of dead processes are removed."""
    directory = directory or runtime_dir()
    if not _safe_dir(directory, create=False):
        return []
    out = []
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".sock") or not name[:-5].isdigit():
            continue
        owner = int(name[:-5])
        if pid is not None and owner != pid:
            continue
        path = os.path.join(directory, name)
        try:
            out.append(query(path))
        except (OSError, ValueError):
            if not pid_alive(owner):
                with contextlib.suppress(OSError):
                    os.unlink(path)
    return out

