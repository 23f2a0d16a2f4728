"""Pinned server keys, trusted on first use, like ssh's known_hosts.

`$XDG_CONFIG_HOME/gannet/known_hosts` holds one line per server: the names
it is known by, comma-separated, and its key in base64. A name is
`host:port` (`[v6]:port`): the host as the user typed it, and the address
it resolved to, as ssh records `name,address` (CheckHostIP). The first
connection under a name and an address that have no line pins the key it
was shown, and says so with the fingerprint; later connections must present
the same key:

- under a pinned name, the key pinned for that name, wherever the name now
  points (a server that moved keeps its pin: its new address is added);
- under a new name at a pinned address, the key pinned for that address (a
  different server at a reused address, or an attacker there, is refused;
  the same server under another name gets that name added).

A different key is refused with an error naming both fingerprints and the
command that removes the old pin (after checking with the server's owner).
Files written before names were recorded (one address per line) are read
as they are; their lines gain the names used from then on.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .identity import KeyFormatError, config_dir, decode_key, encode_key, fingerprint

KNOWN_HOSTS_FILE = "known_hosts"

# The pins of a file as last parsed, by path, with the file's identity
# (device, inode, size, mtime) when it was read and, per name, the index
# of the first line naming it and how many lines do: a tunnel client
# checks the same server's key once per connection it opens, and parsing
# the whole file under the lock each time cost milliseconds per connection
# once the file had a thousand lines (every port a server was reached on
# is a name). A file that changed (a pin added: a new inode; an edit: a
# new mtime or size) is parsed again.
_parsed: dict[Path, tuple[tuple[int, int, int, int], list[Pin], dict[str, list[int]]]] = {}

# Pins are read, changed and written back under an flock of a file beside
# them: each change opens it anew, so threads of one process exclude each
# other as processes do, and two first uses at once (fifty clients of one
# program, two commands) both keep their pin.


class KeyChangedError(Exception):
    """The server presented another key than the one pinned for it: for its
    name, or (`address`) for the address a new name led to."""

    def __init__(self, name: str, pinned: bytes, presented: bytes, path: Path,
                 address: str | None = None) -> None:
        if address is None:
            what, remove = f"the key of {name} changed", name
            why = "Someone may be intercepting the connection."
        else:
            what, remove = (f"{name} is at {address}, which is pinned to another key"), address
            why = ("Someone may be intercepting the connection, or the address now belongs to "
                   "another server.")
        super().__init__(
            f"{what}: pinned {fingerprint(pinned)}, presented {fingerprint(presented)}. {why} If the "
            f"server's key was changed on purpose, run `gannet trust remove {remove}` (pins in {path})"
        )
        self.name, self.pinned, self.presented, self.address = name, pinned, presented, address


@dataclass(frozen=True)
class Pin:
    names: tuple[str, ...]
    key: bytes

    @property
    def name(self) -> str:
        """The first name (what `gannet trust list` shows first)."""
        return self.names[0]


def host_name(host: str, port: int) -> str:
    """The name a server is pinned under ([v6]:port for IPv6 addresses).
    Host names are compared without case, as DNS compares them."""
    host = host.lower()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_name(name: str) -> str:
    """`name` as pins keep it (lower case); ValueError if it cannot be one."""
    if not name or any(c.isspace() or c == "," for c in name):
        raise ValueError(f"a pinned name has no spaces or commas: {name!r}")
    return name.lower()


class KnownHosts:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or config_dir() / KNOWN_HOSTS_FILE

    def entries(self) -> list[Pin]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return self._parse(text)

    def _parse(self, text: str) -> list[Pin]:
        pins = []
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            names = tuple(n for n in parts[0].lower().split(",") if n) if len(parts) == 2 else ()
            if not names:
                raise KeyFormatError(f"{self.path}:{number}: expected `NAME[,NAME...] KEY`")
            try:
                pins.append(Pin(names, decode_key(parts[1])))
            except KeyFormatError as exc:
                raise KeyFormatError(f"{self.path}:{number}: {exc}") from None
        return pins

    def find(self, name: str, pins: list[Pin] | None = None) -> Pin | None:
        """The pin that has `name` among its names (names are compared
        without case)."""
        name = name.lower()
        for pin in self.entries() if pins is None else pins:
            if name in pin.names:
                return pin
        return None

    def lookup(self, name: str) -> bytes | None:
        pin = self.find(name)
        return pin.key if pin is not None else None

    @contextlib.contextmanager
    def _changing(self) -> Iterator[list[Pin]]:
        """The pins, read under the lock; what the caller leaves in the list
        is written back if it changed."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            pins = self.entries()
            before = list(pins)
            yield pins
            if pins != before:
                self._write(pins)
        finally:
            os.close(fd)  # (the lock goes with it)

    def _known(self, name: str, key: bytes, address: str) -> bool:
        """Whether `check` would find `key` pinned for `name`, with
        `address` on that line and on no other, and so change nothing:
        answered from the file's last parse while the file is the same,
        without the lock (a check that would change the file, or refuse,
        takes the locked path)."""
        try:
            with open(self.path, encoding="utf-8") as f:
                st = os.fstat(f.fileno())
                stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
                parsed = _parsed.get(self.path)
                if parsed is None or parsed[0] != stamp:
                    pins = self._parse(f.read())
                    index: dict[str, list[int]] = {}
                    for i, pin in enumerate(pins):
                        for n in pin.names:
                            seen = index.get(n)
                            if seen is None:
                                index[n] = [i, 1]
                            else:
                                seen[1] += 1
                    parsed = _parsed[self.path] = (stamp, pins, index)
        except (OSError, KeyFormatError):
            return False  # (the locked path reads it again and says what is wrong)
        _, pins, index = parsed
        by_name = index.get(name)
        if by_name is None or pins[by_name[0]].key != key:
            return False
        at = index.get(address)
        return at is not None and at[0] == by_name[0] and at[1] == 1

    def _write(self, pins: list[Pin]) -> None:
        body = "".join(f"{','.join(p.names)} {encode_key(p.key)}\n" for p in pins)
        import tempfile  # (only to write: not on a client's way to its SYN)

        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:  # mkstemp made it 0600
                f.write(body)
            os.replace(tmp, self.path)  # a reader never sees half a file
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @staticmethod
    def _with_name(pins: list[Pin], name: str, key: bytes, beside: str | None) -> list[Pin]:
        """`pins` with `name` pinned to `key`: on the line of `beside` (a
        name pinned to that key), else on a line of its own; taken off any
        other line (a line left with no name goes). Every name is on one
        line at most."""
        out, placed = [], False
        for pin in pins:
            if not placed and beside is not None and beside in pin.names and pin.key == key:
                names = pin.names if name in pin.names else pin.names + (name,)
                placed = True
            else:
                names = tuple(n for n in pin.names if n != name)
            if names:
                out.append(Pin(names, pin.key))
        if not placed:
            out.append(Pin((name,), key))
        return out

    def add(self, name: str, key: bytes, *, replace: bool = False) -> None:
        name = _check_name(name)
        if len(key) != 32:
            raise ValueError("a key is 32 bytes")
        with self._changing() as pins:
            existing = self.find(name, pins)
            if existing is not None and existing.key == key:
                return
            if existing is not None and not replace:
                raise KeyChangedError(name, existing.key, key, self.path)
            pins[:] = self._with_name(pins, name, key, None)

    def remove(self, name: str) -> Pin | None:
        """Forget the pin that has `name`, with all its names (as
        `ssh-keygen -R` forgets a host); the pin removed, or None."""
        with self._changing() as pins:
            pin = self.find(name, pins)
            if pin is not None:
                pins.remove(pin)
            return pin

    def check(self, name: str, key: bytes, address: str | None = None) -> bool:
        """Trust on first use of the server the user called `name`, reached
        at `address` (both `host:port`; the address may be the name): True
        when `key` was already pinned for one of them, False when it was new
        and is now pinned. KeyChangedError when another key is pinned for the
        name, or - for a name not pinned yet - for the address. A known key
        seen under a new name or at a new address is recorded under it."""
        name = _check_name(name)
        address = _check_name(address or name)
        if self._known(name, key, address):
            return True
        with self._changing() as pins:
            by_name = self.find(name, pins)
            if by_name is not None:
                if by_name.key != key:
                    raise KeyChangedError(name, by_name.key, key, self.path)
                # Known by name: wherever it is now, that address is its own.
                pins[:] = self._with_name(pins, address, key, name)
                return True
            by_address = self.find(address, pins)
            if by_address is not None:
                if by_address.key != key:
                    raise KeyChangedError(name, by_address.key, key, self.path, address=address)
                pins[:] = self._with_name(pins, name, key, address)  # the same server, another name
                return True
            pins[:] = self._with_name(pins, name, key, None)
            pins[:] = self._with_name(pins, address, key, name)
            return False
