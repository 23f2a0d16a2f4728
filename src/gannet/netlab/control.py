"""Client side of the forwarder's control socket: one JSON request, one JSON reply."""

from __future__ import annotations

import json
import socket
from pathlib import Path


class ControlError(RuntimeError):
    pass


def request(sdir: Path, msg: dict, timeout: float = 5.0) -> dict:
    path = str(Path(sdir) / "control.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(json.dumps(msg).encode() + b"\n")
        buf = bytearray()
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    if not buf:
        raise ControlError("forwarder closed the control connection")
    reply = json.loads(buf)
    if not reply.get("ok"):
        raise ControlError(reply.get("error", "forwarder error"))
    return reply
