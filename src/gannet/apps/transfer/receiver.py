"""The receiving side: validate the offer, report partial files, verify and place files.

Safety rules:
- every path in the header is checked (`protocol.check_path`): relative, no
  "..", no "." or empty components, no backslashes or control characters;
- directories are created one component at a time below the target
  directory, and an existing component that is a symlink (or not a
  directory) fails the transfer, so nothing is written outside the tree;
- data goes to `.name.gannet-part` (opened with O_NOFOLLOW) and becomes
  `name` only after the SHA-256 verifies; an existing `name` is never
  replaced unless `overwrite` is set (then `name (1).ext`, `name (2).ext`...).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from .progress import Reporter, human_size
from .protocol import (
    ABANDON, CHUNK, CODEC_ZSTD, DATA, END, FRAME_HEAD, START, FileEntry, Header,
    ProtocolError, decode_line, encode_line, parse_frame_head, parse_header, parse_start, part_name,
)
from .stream import read_line

HASH_BLOCK = 4 * 1024 * 1024
O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
O_BINARY = getattr(os, "O_BINARY", 0)


@dataclass
class Outcome:
    """What one connection achieved."""

    peer: object = None
    complete: bool = False  # every file got a verdict
    ok: list[str] = field(default_factory=list)  # final relative names
    failed: dict[str, str] = field(default_factory=dict)
    error: str | None = None  # why the transfer stopped, if it did


class Receiver:
    """Handles transfer connections for one target directory (`handle(reader, writer)`)."""

    def __init__(self, directory: str | os.PathLike, *, overwrite: bool = False,
                 reporter: Reporter | None = None) -> None:
        self.root = Path(os.path.realpath(directory))
        self.overwrite = overwrite
        self.rep = reporter or Reporter("receive", bars=False)
        self._owners: dict[str, tuple[asyncio.Task, object]] = {}

    # ---------------------------------------------------------- paths
    def _parent(self, rel: str, create: bool) -> Path | None:
        """The directory that holds `rel`, below the root, without following symlinks.

        None if it does not exist and `create` is False."""
        cur = self.root
        for comp in rel.split("/")[:-1]:
            cur = cur / comp
            try:
                st = os.lstat(cur)
            except FileNotFoundError:
                if not create:
                    return None
                os.mkdir(cur, 0o755)
                continue
            if stat.S_ISLNK(st.st_mode):
                raise ProtocolError(f"{rel!r}: {cur.relative_to(self.root)} is a symlink here")
            if not stat.S_ISDIR(st.st_mode):
                raise ProtocolError(f"{rel!r}: {cur.relative_to(self.root)} is not a directory here")
        return cur

    def _make_dir(self, rel: str) -> None:
        parent = self._parent(rel, create=True)
        assert parent is not None
        target = parent / rel.rsplit("/", 1)[-1]
        try:
            os.mkdir(target, 0o755)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(target).st_mode):
                raise ProtocolError(f"{rel!r} exists here and is not a directory") from None

    def _place(self, part: Path, parent: Path, name: str) -> str:
        """Give the verified part file its final name; returns that name."""
        final = parent / name
        if self.overwrite:
            if os.path.isdir(final) and not os.path.islink(final):
                raise OSError(f"{name} exists here as a directory")
            os.replace(part, final)
            return name
        stem, dot, ext = name.rpartition(".")
        if not stem:  # no extension, or a dotfile like ".bashrc"
            stem, dot, ext = name, "", ""
        for n in range(0, 10000):
            candidate = name if n == 0 else f"{stem} ({n}){dot}{ext}"
            try:
                os.link(part, parent / candidate)  # fails if it exists: no clobbering, no race
            except FileExistsError:
                continue
            except OSError:  # no hard links here: check, then rename
                if os.path.lexists(parent / candidate):
                    continue
                os.rename(part, parent / candidate)
                return candidate
            os.unlink(part)
            return candidate
        raise OSError(f"no free name for {name}")

    # ------------------------------------------------------- handling
    async def handle(self, reader: asyncio.StreamReader, writer) -> Outcome:
        out = Outcome(peer=writer.get_extra_info("peername"))
        peer = _fmt_peer(out.peer)
        keys: list[str] = []
        try:
            try:
                header = parse_header(decode_line(await read_line(reader)))
            except ProtocolError as exc:
                self.rep.log(f"rejected transfer from {peer}: {exc}")
                out.error = str(exc)
                writer.write(encode_line({"ok": False, "error": str(exc)}))
                await writer.drain()
                return out
            total = sum(f.size for f in header.files)
            self.rep.log(f"transfer from {peer}: {len(header.files)} file(s), {human_size(total)}")
            keys = [f.path for f in header.files]
            await self._take_over(keys)
            try:
                for d in header.dirs:
                    self._make_dir(d)
                have, hashes = await self._partials(header)
            except ProtocolError as exc:
                self.rep.log(f"rejected transfer from {peer}: {exc}")
                out.error = str(exc)
                writer.write(encode_line({"ok": False, "error": str(exc)}))
                await writer.drain()
                return out
            codec = "zstd" if "zstd" in header.compression else "none"
            writer.write(encode_line({"ok": True, "compression": codec, "have": have}))
            await writer.drain()
            await self._receive_files(header, hashes, reader, writer, out)
            out.complete = True
            await reader.read()  # the sender's FIN
        except (ConnectionError, TimeoutError, OSError, asyncio.IncompleteReadError,
                ProtocolError) as exc:
            out.error = _describe(exc)
            self.rep.log(f"transfer from {peer} interrupted: {out.error} (partial files kept for resume)")
            if isinstance(exc, ProtocolError):
                writer.write(encode_line({"ok": False, "error": str(exc)}))
            else:
                writer.abort()
        except asyncio.CancelledError:
            out.error = "taken over by a new connection"
            self.rep.log(f"transfer from {peer} superseded by a newer connection for the same files")
            writer.abort()
            raise
        finally:
            me = asyncio.current_task()
            for k in keys:
                if self._owners.get(k, (None,))[0] is me:
                    del self._owners[k]
            writer.close()
        return out

    async def _take_over(self, keys: list[str]) -> None:
        """A sender that comes back (after being killed) must not wait for the old,
        silent connection to time out: end that one first."""
        me = asyncio.current_task()
        old = {self._owners[k][0] for k in keys if k in self._owners} - {me}
        for task in old:
            task.cancel()
        for task in old:
            try:
                await task
            except BaseException:  # noqa: BLE001 - it was cancelled on purpose
                pass
        for k in keys:
            self._owners[k] = (me, None)

    async def _partials(self, header: Header) -> tuple[dict, dict]:
        """For every file with a `.name.gannet-part`: its length and SHA-256."""
        have: dict[str, list] = {}
        hashes: dict[int, tuple[int, hashlib._Hash]] = {}
        for i, entry in enumerate(header.files):
            parent = self._parent(entry.path, create=False)
            if parent is None:
                continue
            part = parent / part_name(entry.path.rsplit("/", 1)[-1])
            try:
                st = os.lstat(part)
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_size == 0 or st.st_size > entry.size:
                continue  # nothing usable: the file starts from zero
            h = await asyncio.to_thread(_hash_file, part)
            hashes[i] = (st.st_size, h)
            have[str(i)] = [st.st_size, h.hexdigest()]
        return have, hashes

    async def _receive_files(self, header: Header, hashes: dict, reader, writer, out: Outcome) -> None:
        dz = zstandard.ZstdDecompressor()
        for index, entry in enumerate(header.files):
            kind, length = parse_frame_head(await reader.readexactly(FRAME_HEAD.size))
            if kind != START:
                raise ProtocolError("expected a START frame")
            i, offset, codec = parse_start(await reader.readexactly(length))
            if i != index:
                raise ProtocolError(f"START for file {i}, expected {index}")
            ok, name, reason = await self._receive_one(entry, index, offset, codec, hashes, reader, dz)
            if ok:
                out.ok.append(name)
                writer.write(encode_line({"index": index, "ok": True, "name": name}))
            else:
                out.failed[entry.path] = reason
                writer.write(encode_line({"index": index, "ok": False, "error": reason}))
            await writer.drain()

    async def _receive_one(self, entry: FileEntry, index: int, offset: int, codec: int,
                           hashes: dict, reader, dz) -> tuple[bool, str, str]:
        parent = self._parent(entry.path, create=True)
        assert parent is not None
        base = entry.path.rsplit("/", 1)[-1]
        part = parent / part_name(base)
        prior = hashes.get(index)
        if offset:
            if prior is None or prior[0] != offset:
                raise ProtocolError(f"{entry.path}: resume offset {offset} was not offered")
            h = prior[1]
            fd = os.open(part, os.O_WRONLY | O_NOFOLLOW | O_BINARY)
            os.lseek(fd, offset, os.SEEK_SET)
            os.ftruncate(fd, offset)
            self.rep.log(f"{entry.path}: resumed at offset {offset} ({human_size(offset)} already here)")
        else:
            if prior is not None:
                self.rep.log(f"{entry.path}: partial copy ({human_size(prior[0])}) does not match "
                             "the sender's file, restarting from zero")
            h = hashlib.sha256()
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | O_NOFOLLOW | O_BINARY, 0o600)
        fp = self.rep.start_file(entry.path, entry.size, offset)
        written = offset
        try:
            while True:
                kind, length = parse_frame_head(await reader.readexactly(FRAME_HEAD.size))
                payload = await reader.readexactly(length)
                if kind == DATA:
                    if codec == CODEC_ZSTD:
                        size = zstandard.frame_content_size(payload)
                        if not 0 <= size <= CHUNK:
                            raise ProtocolError("bad zstd frame")
                        data = dz.decompress(payload)
                    else:
                        data = payload
                    if written + len(data) > entry.size:
                        raise ProtocolError(f"{entry.path}: more data than announced")
                    h.update(data)
                    view = memoryview(data)
                    while view:
                        n = os.write(fd, view)
                        view = view[n:]
                    written += len(data)
                    fp.advance(len(data), len(payload))
                elif kind == END:
                    break
                elif kind == ABANDON:
                    reason = "sender could not read it: " + payload.decode("utf-8", "replace")
                    os.close(fd)
                    fd = -1
                    _unlink(part)
                    self.rep.finish_file(fp, f"FAILED: {reason}")
                    return False, entry.path, reason
                else:
                    raise ProtocolError(f"unexpected frame {kind!r}")
            if written != entry.size:
                reason = f"size mismatch: got {written} bytes, expected {entry.size}"
            elif payload != h.digest():
                reason = "SHA-256 mismatch"
            else:
                reason = ""
            if reason:
                os.close(fd)
                fd = -1
                _unlink(part)  # nothing half-written survives; a rerun starts over
                self.rep.finish_file(fp, f"FAILED: {reason}")
                return False, entry.path, reason
            os.fchmod(fd, entry.mode)
            os.close(fd)
            fd = -1
            name = self._place(part, parent, base)
            rel = entry.path.rsplit("/", 1)[0] + "/" + name if "/" in entry.path else name
            codec_name = "zstd" if codec == CODEC_ZSTD else "raw"
            saved = f" as {rel}" if rel != entry.path else ""
            self.rep.finish_file(fp, f"verified sha256 {h.hexdigest()[:16]}... ({codec_name}), saved{saved}")
            return True, rel, ""
        finally:
            if fd >= 0:
                os.close(fd)


def _hash_file(path: Path) -> hashlib._Hash:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while block := f.read(HASH_BLOCK):
            h.update(block)
    return h


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _fmt_peer(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = peer[0]
        return f"[{host}]:{peer[1]}" if ":" in str(host) else f"{host}:{peer[1]}"
    return str(peer)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.IncompleteReadError):
        return "connection closed mid-transfer"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
