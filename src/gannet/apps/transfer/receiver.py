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

Limits against a hostile sender (`gannet.apps.limits.TransferLimits`): a
header timeout and a cap on connections; an offer larger than the free space
is refused; no file grows beyond its announced size and no zstd frame beyond
CHUNK; one connection per file at a time (a live transfer is never taken
over, so nobody learns its partial state or truncates it); modes are applied
under the umask; directories a failed transfer made are removed again.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..limits import TransferLimits
from .progress import Reporter, human_size
from .protocol import (
    ABANDON, CHUNK, CODEC_ZSTD, DATA, END, FRAME_HEAD, MAX_COMPONENT, START, FileEntry, Header,
    ProtocolError, decode_line, encode_line, fit_bytes, parse_frame_head, parse_header,
    parse_start, part_name,
)
from ...io.reader import ChunkReader
from .stream import read_line

HASH_BLOCK = 4 * 1024 * 1024
O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
O_BINARY = getattr(os, "O_BINARY", 0)
DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def current_umask() -> int:
    """The process umask (os.umask can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class _Active:
    """One connection's claim on the files it receives, and when it last heard from its sender."""

    def __init__(self, task: asyncio.Task | None, now: float) -> None:
        self.task = task
        self.last_rx = now
        self.reserved = 0  # bytes of free space this transfer counts on


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
                 reporter: Reporter | None = None, limits: TransferLimits | None = None) -> None:
        self.root = Path(os.path.realpath(directory))
        self.overwrite = overwrite
        self.rep = reporter or Reporter("receive", bars=False)
        self.limits = limits or TransferLimits()
        self.umask = current_umask()
        self._owners: dict[str, _Active] = {}
        self._active = 0  # connections being handled
        self._reserved = 0  # bytes announced by running transfers and not yet written

    # ---------------------------------------------------------- paths
    def _parent(self, rel: str, create: bool, made: list[Path] | None = None) -> Path | None:
        """The directory that holds `rel`, below the root, without following symlinks.

        None if it does not exist and `create` is False; directories it creates
        are appended to `made` (removed again if the transfer fails)."""
        cur = self.root
        for comp in rel.split("/")[:-1]:
            cur = cur / comp
            try:
                st = os.lstat(cur)
            except FileNotFoundError:
                if not create:
                    return None
                os.mkdir(cur, 0o755)
                if made is not None:
                    made.append(cur)
                continue
            if stat.S_ISLNK(st.st_mode):
                raise ProtocolError(f"{rel!r}: {cur.relative_to(self.root)} is a symlink here")
            if not stat.S_ISDIR(st.st_mode):
                raise ProtocolError(f"{rel!r}: {cur.relative_to(self.root)} is not a directory here")
        return cur

    def _make_dir(self, rel: str, made: list[Path]) -> None:
        parent = self._parent(rel, create=True, made=made)
        assert parent is not None
        target = parent / rel.rsplit("/", 1)[-1]
        try:
            os.mkdir(target, 0o755)
            made.append(target)
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
            candidate = name if n == 0 else _numbered(stem, f" ({n}){dot}{ext}")
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
    async def handle(self, reader: asyncio.StreamReader | ChunkReader, writer) -> Outcome:
        out = Outcome(peer=writer.get_extra_info("peername"))
        peer = _fmt_peer(out.peer)
        loop = asyncio.get_running_loop()
        me = _Active(asyncio.current_task(), loop.time())
        keys: list[str] = []
        made: list[Path] = []  # directories this transfer created
        current: list[Path] = []  # the part file being written, if any
        if self._active >= self.limits.max_connections:
            out.error = f"busy: {self._active} transfers in progress, try again later"
            self.rep.log(f"refused a connection from {peer}: {out.error}")
            writer.write(encode_line({"ok": False, "error": out.error}))
            writer.close()
            return out
        self._active += 1
        try:
            try:
                async with asyncio.timeout(self.limits.header_timeout):
                    line = await read_line(reader)
            except TimeoutError:
                out.error = f"no header within {self.limits.header_timeout:g} s"
                self.rep.log(f"dropped connection from {peer}: {out.error}")
                writer.abort()
                return out
            try:
                header = parse_header(decode_line(line))
                total = sum(f.size for f in header.files)
                self.rep.log(f"transfer from {peer}: {len(header.files)} file(s), {human_size(total)}")
                keys = [f.path for f in header.files]
                await self._take_over(keys, me)
                for d in header.dirs:
                    self._make_dir(d, made)
                have, hashes = await self._partials(header)
                self._reserve(me, header, hashes)
            except (ProtocolError, OSError) as exc:
                out.error = _describe(exc) if isinstance(exc, OSError) else str(exc)
                self.rep.log(f"rejected transfer from {peer}: {out.error}")
                writer.write(encode_line({"ok": False, "error": out.error}))
                await writer.drain()
                return out
            codec = "zstd" if "zstd" in header.compression else "none"
            writer.write(encode_line({"ok": True, "compression": codec, "have": have}))
            await writer.drain()
            await self._receive_files(header, hashes, reader, writer, out, me, made, current)
            out.complete = True
            await reader.read()  # the sender's FIN
        except (ConnectionError, TimeoutError, OSError, asyncio.IncompleteReadError,
                ProtocolError) as exc:
            out.error = _describe(exc)
            discard = isinstance(exc, ProtocolError) or (
                isinstance(exc, OSError) and exc.errno in DISK_FULL)
            if discard and current:
                # A sender that broke the protocol gets nothing kept for resume,
                # and a partial file that filled the disk would keep it full.
                _unlink(current[0])
            kept = ("partial file removed" if discard and current
                    else "partial files kept for resume")
            self.rep.log(f"transfer from {peer} interrupted: {out.error} ({kept})")
            if isinstance(exc, ProtocolError):
                writer.write(encode_line({"ok": False, "error": str(exc)}))
            else:
                writer.abort()
        except asyncio.CancelledError:
            out.error = "taken over by a new connection"
            self.rep.log(f"transfer from {peer} superseded by a newer connection for the same files")
            writer.abort()
            raise
        except Exception as exc:  # noqa: BLE001 - one bad connection must not escape to the server
            out.error = f"internal error: {type(exc).__name__}: {exc}"
            self.rep.log(f"transfer from {peer} failed: {out.error}")
            writer.abort()
        finally:
            self._active -= 1
            self._reserved -= me.reserved
            me.reserved = 0
            for k in keys:
                if self._owners.get(k) is me:
                    del self._owners[k]
            if not out.complete:
                _remove_empty(made)
            writer.close()
        return out

    async def _take_over(self, keys: list[str], me: _Active) -> None:
        """Claim `keys` for this connection.

        A file another connection is receiving is taken over only once that
        connection has been silent for `stale_after` seconds (its sender was
        killed and came back): then the old one is ended at once instead of
        after its keep-alive gives up. A live transfer is never taken over,
        and its partial length and hash are never shown to anyone else: the
        newcomer is refused with "busy"."""
        loop = asyncio.get_running_loop()
        stale = self.limits.stale_after
        deadline = loop.time() + stale + 1.0
        while True:
            old = {self._owners[k] for k in keys if k in self._owners} - {me}
            old = {o for o in old if o.task is not None and not o.task.done()}
            if not old:
                break
            now = loop.time()
            if all(now - o.last_rx >= stale for o in old):
                tasks = [o.task for o in old if o.task is not None]
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    try:
                        await task
                    except BaseException:  # noqa: BLE001 - it was cancelled on purpose
                        pass
                continue
            if now >= deadline:
                busy = sorted(k for k in keys if self._owners.get(k) in old)
                raise ProtocolError(f"busy: {busy[0]!r} is being received from another "
                                    "connection right now")
            await asyncio.sleep(min(0.1, max(0.0, deadline - now)))
        for k in keys:
            self._owners[k] = me

    def _reserve(self, me: _Active, header: Header, hashes: dict) -> None:
        """Refuse an offer that does not fit the free space (after what the
        other running transfers still need); otherwise count it as needed."""
        need = sum(f.size - hashes.get(i, (0,))[0] for i, f in enumerate(header.files))
        try:
            st = os.statvfs(self.root)
        except (AttributeError, OSError):  # no statvfs here: the writes will tell
            return
        free = st.f_bavail * st.f_frsize - self.limits.min_free_bytes - self._reserved
        if need > free:
            raise ProtocolError(f"not enough free space: the transfer needs {human_size(need)}, "
                                f"{human_size(max(free, 0))} available")
        me.reserved = need
        self._reserved += need

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

    async def _receive_files(self, header: Header, hashes: dict, reader, writer, out: Outcome,
                             me: _Active, made: list[Path], current: list[Path]) -> None:
        import zstandard  # (here, not at import: `gannet send` need not load it)

        dz = zstandard.ZstdDecompressor()
        for index, entry in enumerate(header.files):
            kind, length = parse_frame_head(await reader.readexactly(FRAME_HEAD.size))
            if kind != START:
                raise ProtocolError("expected a START frame")
            i, offset, codec = parse_start(await reader.readexactly(length))
            if i != index:
                raise ProtocolError(f"START for file {i}, expected {index}")
            ok, name, reason = await self._receive_one(entry, index, offset, codec, hashes, reader,
                                                       dz, me, made, current)
            if ok:
                out.ok.append(name)
                writer.write(encode_line({"index": index, "ok": True, "name": name}))
            else:
                out.failed[entry.path] = reason
                writer.write(encode_line({"index": index, "ok": False, "error": reason}))
            await writer.drain()

    async def _receive_one(self, entry: FileEntry, index: int, offset: int, codec: int,
                           hashes: dict, reader, dz, me: _Active, made: list[Path],
                           current: list[Path]) -> tuple[bool, str, str]:
        loop = asyncio.get_running_loop()
        parent = self._parent(entry.path, create=True, made=made)
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
        current[:] = [part]
        fp = self.rep.start_file(entry.path, entry.size, offset)
        written = offset
        try:
            while True:
                kind, length = parse_frame_head(await reader.readexactly(FRAME_HEAD.size))
                payload = await reader.readexactly(length)
                me.last_rx = loop.time()
                if kind == DATA:
                    data = _decode_data(entry, payload, codec, dz, entry.size - written)
                    h.update(data)
                    view = memoryview(data)
                    while view:
                        n = os.write(fd, view)
                        view = view[n:]
                    written += len(data)
                    self._written(me, len(data))
                    fp.advance(len(data), len(payload))
                elif kind == END:
                    break
                elif kind == ABANDON:
                    reason = "sender could not read it: " + payload.decode("utf-8", "replace")
                    os.close(fd)
                    fd = -1
                    _unlink(part)
                    current.clear()
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
                current.clear()
                self.rep.finish_file(fp, f"FAILED: {reason}")
                return False, entry.path, reason
            os.fchmod(fd, entry.mode & ~self.umask)
            os.close(fd)
            fd = -1
            name = self._place(part, parent, base)
            current.clear()
            rel = entry.path.rsplit("/", 1)[0] + "/" + name if "/" in entry.path else name
            codec_name = "zstd" if codec == CODEC_ZSTD else "raw"
            saved = f" as {rel}" if rel != entry.path else ""
            self.rep.finish_file(fp, f"verified sha256 {h.hexdigest()[:16]}... ({codec_name}), saved{saved}")
            return True, rel, ""
        finally:
            if fd >= 0:
                os.close(fd)

    def _written(self, me: _Active, n: int) -> None:
        """Bytes now on disk no longer need to be reserved."""
        n = min(n, me.reserved)
        me.reserved -= n
        self._reserved -= n


def _decode_data(entry: FileEntry, payload: bytes, codec: int, dz, room: int) -> bytes:
    """A DATA frame's file bytes; ProtocolError for a frame that is malformed or
    would make the file larger than announced (`room` bytes are left), checked
    before anything is decompressed."""
    if codec != CODEC_ZSTD:
        if len(payload) > room:
            raise ProtocolError(f"{entry.path}: more data than announced")
        return payload
    import zstandard  # (loaded already by _receive_files)

    try:
        size = zstandard.frame_content_size(payload)
    except zstandard.ZstdError as exc:
        raise ProtocolError(f"{entry.path}: malformed zstd frame ({exc})") from None
    if not 0 <= size <= CHUNK:
        raise ProtocolError(
            f"{entry.path}: zstd frame without a content size of at most {CHUNK} bytes")
    if size > room:
        raise ProtocolError(f"{entry.path}: more data than announced")
    try:
        data = dz.decompress(payload, max_output_size=size)
    except zstandard.ZstdError as exc:
        raise ProtocolError(f"{entry.path}: malformed zstd frame ({exc})") from None
    if len(data) != size:
        raise ProtocolError(f"{entry.path}: zstd frame does not hold the size it claims")
    return data


def _numbered(stem: str, tail: str) -> str:
    """`stem` + `tail` (" (1).ext"), the stem shortened to keep within MAX_COMPONENT."""
    return fit_bytes(stem, MAX_COMPONENT - len(tail.encode("utf-8", "surrogatepass"))) + tail


def _remove_empty(made: list[Path]) -> None:
    """Remove the directories a failed transfer created, deepest first; one that
    holds something (a partial file kept for resume) stays."""
    for d in reversed(made):
        try:
            os.rmdir(d)
        except OSError:
            pass
    made.clear()


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
