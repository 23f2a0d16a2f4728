"""File transfers of the chat: progress state, safe names, verified arrival.

An incoming file is written to a hidden `.part` file in the downloads
folder while its SHA-256 is computed; only when the sender's digest matches
is it moved to its final name, which never replaces an existing file
(`photo.jpg` becomes `photo (1).jpg`, ...).
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..display import has_unsafe
from ..transfer.protocol import fit_bytes

CHUNK_SIZE = 32 * 1024
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:]")
NAME_BYTES = 200  # a name's UTF-8 bytes: room for ".NAME.ID.part" and " (N)" within NAME_MAX


@dataclass(eq=False)
class Transfer:
    """One file on its way, in either direction (the UI draws its progress)."""

    id: int
    name: str
    size: int
    direction: str  # "out" or "in"
    path: Path | None = None  # source (out) or final destination (in)
    done: int = 0
    state: str = "active"  # active, verifying, finished, failed
    reason: str = ""
    sha256: str = ""
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None

    @property
    def active(self) -> bool:
        return self.state in ("active", "verifying")

    @property
    def elapsed(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def finish(self, state: str, reason: str = "") -> None:
        self.state = state
        self.reason = reason
        self.ended = time.monotonic()


def safe_name(name: str) -> str:
    """A file name from the peer, reduced to one harmless path component."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("_", name)
    # C1 controls, bidi overrides and invisible format characters: a name must
    # read as what it is (see gannet.apps.display).
    name = "".join("_" if has_unsafe(ch) else ch for ch in name).strip().lstrip(".")
    return fit_bytes(name, NAME_BYTES) or "file"


def unique_path(folder: Path, name: str) -> Path:
    """`folder/name`, or `folder/stem (N)suffix` for the first N that is free."""
    # lexists, not exists: a dangling symlink is taken (O_EXCL refuses it), so
    # it must count as taken here too, or claim() would retry it forever.
    candidate = folder / name
    if not os.path.lexists(candidate):
        return candidate
    base = Path(name)
    stem, suffix = base.stem, base.suffix
    n = 1
    while True:
        candidate = folder / f"{stem} ({n}){suffix}"
        if not os.path.lexists(candidate):
            return candidate
        n += 1


def claim(folder: Path, name: str) -> Path:
    """Create (exclusively) and return a new empty file named like `name` in folder."""
    while True:
        path = unique_path(folder, name)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue  # lost a race with another writer: next name
        os.close(fd)
        return path


class Incoming:
    """The receiving end of one transfer: a .part file and a running hash."""

    def __init__(self, transfer: Transfer, folder: Path) -> None:
        self.transfer = transfer
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        # Created exclusively: a file already there under this name (a user's,
        # or another chat's part file) is never truncated.
        self.part = claim(folder, f".{transfer.name}.{transfer.id}.part")
        self.file = open(self.part, "wb")  # noqa: SIM115 - closed in finish/discard
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> None:
        t = self.transfer
        if t.done + len(data) > t.size:
            raise ValueError(f"more data than the announced {t.size} bytes")
        self.file.write(data)
        self.hash.update(data)
        t.done += len(data)

    def complete(self, sha256: str) -> Path:
        """Verify and move into place; raises ValueError on a mismatch (file removed)."""
        t = self.transfer
        self.file.close()
        digest = self.hash.hexdigest()
        t.sha256 = digest
        if t.done != t.size:
            self.discard()
            raise ValueError(f"size mismatch: got {t.done} of {t.size} bytes")
        if digest != sha256.lower():
            self.discard()
            raise ValueError("checksum mismatch (SHA-256 differs)")
        final = claim(self.folder, t.name)
        os.replace(self.part, final)
        t.path = final
        return final

    def discard(self) -> None:
        if not self.file.closed:
            self.file.close()
        try:
            self.part.unlink()
        except FileNotFoundError:
            pass
