"""Pinned server keys, trusted on first use, like ssh's known_hosts.

`$XDG_CONFIG_HOME/gannet/known_hosts` holds one line per server: its name
(`host:port`, as the user typed it) and its key in base64. The first
connection to a name that has no line pins the key it was shown, and says
so with the fingerprint; later connections must present the same key, and
a different one is refused with an error naming both fingerprints and the
command that removes the old pin (after checking with the server's owner).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .identity import KeyFormatError, config_dir, decode_key, encode_key, fingerprint

KNOWN_HOSTS_FILE = "known_hosts"

# Pins are read, changed and written back: threads of one process take this
# lock, processes a lock file beside the pins, so that two first uses at
# once (fifty clients of one program, two commands) both keep their pin.
_THREADS = threading.Lock()


class KeyChangedError(Exception):
    """The server presented another key than the one pinned for it."""

    def __init__(self, name: str, pinned: bytes, presented: bytes, path: Path) -> None:
        super().__init__(
            f"the key of {name} changed: pinned {fingerprint(pinned)}, presented "
            f"{fingerprint(presented)}. Someone may be intercepting the connection. If the server's "
            f"key was changed on purpose, run `gannet trust remove {name}` (pins in {path})"
        )
        self.name, self.pinned, self.presented = name, pinned, presented


@dataclass(frozen=True)
class Pin:
    name: str
    key: bytes


def host_name(host: str, port: int) -> str:
    """The name a server is pinned under ([v6]:port for IPv6 addresses)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class KnownHosts:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or config_dir() / KNOWN_HOSTS_FILE

    def entries(self) -> list[Pin]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        pins = []
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 2:
                raise KeyFormatError(f"{self.path}:{number}: expected `NAME KEY`")
            try:
                pins.append(Pin(parts[0], decode_key(parts[1])))
            except KeyFormatError as exc:
                raise KeyFormatError(f"{self.path}:{number}: {exc}") from None
        return pins

    def lookup(self, name: str) -> bytes | None:
        for pin in self.entries():
            if pin.name == name:
                return pin.key
        return None

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with _THREADS:
            fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # (the lock goes with it)

    def _write(self, pins: list[Pin]) -> None:
        body = "".join(f"{p.name} {encode_key(p.key)}\n" for p in pins)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:  # mkstemp made it 0600
                f.write(body)
            os.replace(tmp, self.path)  # a reader never sees half a file
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def add(self, name: str, key: bytes, *, replace: bool = False) -> None:
        if not name or any(c.isspace() for c in name):
            raise ValueError(f"a pinned name has no spaces: {name!r}")
        if len(key) != 32:
            raise ValueError("a key is 32 bytes")
        with self._changing():
            pins = self.entries()
            existing = next((p for p in pins if p.name == name), None)
            if existing is not None:
                if existing.key == key:
                    return
                if not replace:
                    raise KeyChangedError(name, existing.key, key, self.path)
                pins.remove(existing)
            pins.append(Pin(name, key))
            self._write(pins)

    def remove(self, name: str) -> bool:
        with self._changing():
            pins = self.entries()
            kept = [p for p in pins if p.name != name]
            if len(kept) == len(pins):
                return False
            self._write(kept)
            return True

    def check(self, name: str, key: bytes) -> bool:
        """Trust on first use: True when `key` was already pinned for
        `name`, False when it was new and is now pinned; KeyChangedError
        when another key is pinned."""
        pinned = self.lookup(name)
        if pinned is None:
            self.add(name, key)
            return False
        if pinned != key:
            raise KeyChangedError(name, pinned, key, self.path)
        return True
