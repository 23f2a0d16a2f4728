"""The sending side: collect files, offer them, stream what the receiver lacks."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import time
from typing import Any
from dataclasses import dataclass, field

import gannet

from ..._lazy import load_on_thread
from ..display import safe_text
from .progress import Reporter, human_size
from .protocol import (
    COMPRESS_MODES,
    ABANDON, CHUNK, CODEC_NAMES, CODEC_RAW, CODEC_ZSTD, DATA, END, START, FileEntry,
    ProtocolError, check_path, decode_line, encode_header, frame_head, start_payload,
)
from .stream import read_line

COMPRESS_THRESHOLD = 0.95  # auto: send raw when the sample compresses to more than this
ZSTD_LEVEL = 3
HASH_BLOCK = 4 * 1024 * 1024


class TransferError(Exception):
    """The transfer as a whole failed (rejected, or the peer broke the protocol)."""


@dataclass
class Source:
    """A file to send, as `collect` found it."""

    path: str  # the name on the wire (relative, "/"-separated)
    local: str  # where it is read, as named on the command line or found below a directory
    size: int
    mode: int


@dataclass
class SendResult:
    """What a `send_files` run did."""

    ok: list[str] = field(default_factory=list)  # wire paths verified by the receiver
    failed: dict[str, str] = field(default_factory=dict)  # wire path -> reason
    sent_bytes: int = 0  # file bytes streamed in this run
    wire_bytes: int = 0  # payload bytes after compression
    seconds: float = 0.0
    info: dict | None = None  # the connection's ConnectionInfo at the end (gannet.observe)
    cpu_seconds: float = 0.0  # this process's CPU time during the transfer


# ------------------------------------------------------------ collecting
def collect(args: list[str], warn=lambda msg: None) -> tuple[list[Source], list[str]]:
    """Files and directories named on the command line -> (files, directories).

    A file is sent under its base name, a directory under its own name with
    relative paths below it preserved. Inside a directory, symlinks to regular
    files within the tree are sent as files; symlinks leading out of the tree,
    symlinked directories and special files are skipped (with a warning).
    Raises FileNotFoundError / ValueError for arguments that cannot be sent.

    (With os.path rather than pathlib: `gannet send` collects before its
    SYN, and pathlib, with urllib.parse and ipaddress, is a few milliseconds
    to import that nothing else there needs.)
    """
    files: list[Source] = []
    dirs: list[str] = []
    for arg in args:
        top = os.fspath(arg)
        st = os.stat(top)  # follows a symlink named explicitly; FileNotFoundError if missing
        name = os.path.basename(os.path.realpath(top))
        if stat.S_ISREG(st.st_mode):
            files.append(Source(check_wire(name), top, st.st_size, stat.S_IMODE(st.st_mode)))
        elif stat.S_ISDIR(st.st_mode):
            _collect_dir(top, check_wire(name), files, dirs, warn)
        else:
            raise ValueError(f"not a regular file or directory: {arg}")
    seen: set[str] = set()
    for p in [f.path for f in files] + dirs:
        if p in seen:
            raise ValueError(f"two arguments would both be sent as {p!r}")
        seen.add(p)
    return files, dirs


def check_wire(name: str) -> str:
    try:
        return check_path(name)
    except ProtocolError as exc:
        raise ValueError(f"cannot send {name!r}: {exc}") from None


def _collect_dir(top: str, name: str, files: list[Source], dirs: list[str], warn) -> None:
    root_real = os.path.realpath(top)
    dirs.append(name)
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        rel_dir = os.path.relpath(dirpath, top)
        prefix = name if rel_dir == "." else f"{name}/{rel_dir.replace(os.sep, '/')}"
        for d in sorted(dirnames):
            full = os.path.join(dirpath, d)
            if os.path.islink(full):
                warn(f"skipping symlinked directory {full}")
                continue
            try:
                dirs.append(check_path(f"{prefix}/{d}"))
            except ProtocolError as exc:
                warn(f"skipping {full}: {exc}")
        dirnames[:] = sorted(d for d in dirnames if not os.path.islink(os.path.join(dirpath, d)))
        for f in sorted(filenames):
            full = os.path.join(dirpath, f)
            try:
                wire = check_path(f"{prefix}/{f}")
            except ProtocolError as exc:
                warn(f"skipping {full}: {exc}")
                continue
            lst = os.lstat(full)
            if stat.S_ISLNK(lst.st_mode):
                target = os.path.realpath(full)
                if os.path.commonpath([root_real, target]) != root_real:
                    warn(f"skipping {full}: symlink leads out of {top}")
                    continue
                try:
                    lst = os.stat(full)
                except OSError:
                    warn(f"skipping {full}: dangling symlink")
                    continue
            if not stat.S_ISREG(lst.st_mode):
                warn(f"skipping {full}: not a regular file")
                continue
            files.append(Source(wire, full, lst.st_size, stat.S_IMODE(lst.st_mode)))


# --------------------------------------------------------------- helpers
def hash_prefix(path: str, length: int) -> hashlib._Hash | None:
    """SHA-256 object over the first `length` bytes, or None if the file is shorter."""
    h = hashlib.sha256()
    remaining = length
    with open(path, "rb", buffering=0) as f:
        while remaining:
            block = f.read(min(HASH_BLOCK, remaining))
            if not block:
                return None
            h.update(block)
            remaining -= len(block)
    return h


def compresses(sample: bytes, compressed: bytes) -> bool:
    """Auto mode: worth it when the sample shrinks to at most 95%."""
    return bool(sample) and len(compressed) <= COMPRESS_THRESHOLD * len(sample)


class RateLimit:
    def __init__(self, bytes_per_second: float | None) -> None:
        self.rate = bytes_per_second
        self.t0 = time.monotonic()
        self.sent = 0

    async def account(self, n: int) -> None:
        if not self.rate:
            return
        self.sent += n
        delay = self.t0 + self.sent / self.rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


# ----------------------------------------------------------------- send
async def send_files(
    host: str, port: int, files: list[Source], dirs: list[str], *, compress: str = "auto",
    reporter: Reporter | None = None, rate: float | None = None, wire: str = "udp",
    **config_overrides: Any,
) -> SendResult:
    """Send `files` (and create `dirs`) at a `gannet receive` listening on host:port.

    `rate` limits the file bytes per second (None: as fast as possible).
    Connection errors propagate (ConnectionRefusedError, TimeoutError, ...).
    """
    if compress not in COMPRESS_MODES:
        raise ValueError(f"compress must be one of {COMPRESS_MODES}")
    rep = reporter or Reporter("send", bars=False)
    result = SendResult()
    t0 = time.monotonic()
    cpu0 = time.process_time()
    if compress != "none":
        # The compressor is needed for the first chunk (compressed, or tried);
        # it is loaded on a thread while the handshake waits for the
        # receiver, once the SYN is out (the loop runs this callback when
        # the connection first waits), not on the way to the first byte.
        asyncio.get_running_loop().call_soon(load_on_thread, "zstandard")
    reader, writer = await gannet.open_connection(host, port, limit=4 * CHUNK, wire=wire,
                                                  **config_overrides)
    total = sum(f.size for f in files)
    rep.log(f"connected to {host}:{port}, offering {len(files)} file(s), {human_size(total)}")
    verdicts: dict[int, dict] = {}
    verdict_task: asyncio.Task | None = None
    all_in: asyncio.Future = asyncio.get_running_loop().create_future()  # every verdict read
    try:
        offer = [] if compress == "none" else ["zstd"]
        entries = [FileEntry(f.path, f.size, f.mode) for f in files]
        writer.write(encode_header(entries, dirs, offer))
        await writer.drain()
        reply = decode_line(await read_line(reader))
        if not reply.get("ok"):
            raise TransferError("receiver refused the transfer: "
                                + safe_text(reply.get("error", "no reason given")))
        codec_ok = reply.get("compression") == "zstd"
        have = _parse_have(reply.get("have", {}), len(files))


        async def read_verdicts() -> None:
            try:
                while len(verdicts) < len(files):
                    v = decode_line(await read_line(reader))
                    if "index" not in v:
                        raise TransferError("receiver aborted: "
                                            + safe_text(v.get("error", "unknown reason")))
                    verdicts[_verdict_index(v, len(files), verdicts)] = v
            except Exception as exc:  # noqa: BLE001 - handed to the sending loop
                if not all_in.done():
                    all_in.set_exception(exc)
            else:
                if not all_in.done():
                    all_in.set_result(None)

        verdict_task = asyncio.create_task(read_verdicts())
        limiter = RateLimit(rate)
        zc = None
        if codec_ok:
            import zstandard  # (loaded by now, or waits for the thread loading it)

            zc = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        for index, src in enumerate(files):
            if all_in.done() and all_in.exception() is not None:
                break
            await _send_one(index, src, have.get(index), writer, rep, result,
                            compress, codec_ok, zc, limiter, all_in)
        if files:
            await all_in
        writer.write_eof()
        for index, src in enumerate(files):
            v = verdicts[index]
            if v.get("ok"):
                result.ok.append(src.path)
                rep.log(f"{src.path}: verified by the receiver as {v.get('name', src.path)}")
            else:
                result.failed[src.path] = v.get("error", "failed")
                rep.log(f"{src.path}: FAILED at the receiver: {result.failed[src.path]}")
        await asyncio.wait_for(writer.wait_closed(), 10)
        info = writer.get_extra_info("gannet_info")
        result.info = info.as_dict() if info is not None else None
    except (ConnectionError, TimeoutError, asyncio.IncompleteReadError) as exc:
        writer.abort()
        why = "the receiver closed the connection" if isinstance(exc, asyncio.IncompleteReadError) \
            else f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise TransferError(f"connection lost mid-transfer ({why}); run again to resume") from exc
    except BaseException:
        writer.abort()
        raise
    finally:
        if verdict_task is not None and not verdict_task.done():
            verdict_task.cancel()
        if all_in.done():
            all_in.exception()  # retrieved: the error (if any) was raised above
        result.seconds = time.monotonic() - t0
        result.cpu_seconds = time.process_time() - cpu0
    return result


def _verdict_index(verdict: dict, count: int, seen: dict) -> int:
    """The file a verdict line is about; ProtocolError unless it is one of the
    `count` offered files and has no verdict yet."""
    index = verdict["index"]
    if type(index) is not int or not 0 <= index < count:
        raise ProtocolError(f"receiver sent a verdict for file {safe_text(index)}, "
                            f"but only files 0..{count - 1} were offered")
    if index in seen:
        raise ProtocolError(f"receiver sent a second verdict for file {index}")
    return index


def _parse_have(raw: object, count: int) -> dict[int, tuple[int, str]]:
    out: dict[int, tuple[int, str]] = {}
    if not isinstance(raw, dict):
        raise ProtocolError("bad 'have' in reply")
    for key, value in raw.items():
        try:
            index, (length, digest) = int(key), value
        except (TypeError, ValueError):
            raise ProtocolError("bad 'have' entry in reply") from None
        if not (0 <= index < count) or type(length) is not int or length < 0 or not isinstance(digest, str):
            raise ProtocolError("bad 'have' entry in reply")
        out[index] = (length, digest)
    return out


async def _send_one(index, src: Source, have, writer, rep: Reporter, result: SendResult,
                    compress: str, codec_ok: bool, zc, limiter: RateLimit, all_in) -> None:
    offset = 0
    h = hashlib.sha256()
    if have is not None and have[0] <= src.size:
        length, digest = have
        prefix = await asyncio.to_thread(hash_prefix, src.local, length)
        if prefix is not None and prefix.hexdigest() == digest:
            offset, h = length, prefix
            rep.log(f"{src.path}: resuming at {human_size(length)} ({length} bytes already at the receiver)")
        else:
            rep.log(f"{src.path}: the receiver's partial copy does not match, starting over")
    elif have is not None:
        rep.log(f"{src.path}: the receiver's partial copy is longer than the file, starting over")

    fp = rep.start_file(src.path, src.size, offset)
    try:
        f = open(src.local, "rb", buffering=0)
    except OSError as exc:
        _abandon(writer, index, offset, f"cannot read: {exc.strerror or exc}")
        rep.finish_file(fp, f"not sent: {exc}")
        return
    with f:
        f.seek(offset)
        remaining = src.size - offset
        chunk = f.read(min(CHUNK, remaining)) if remaining else b""
        codec = CODEC_RAW
        first_packed = None
        if codec_ok and chunk and compress != "none":
            first_packed = zc.compress(chunk)
            if compress == "zstd" or compresses(chunk, first_packed):
                codec = CODEC_ZSTD
        body = start_payload(index, offset, codec)
        writer.write(frame_head(START, len(body)) + body)
        short = False
        while remaining:
            if not chunk:
                short = True
                break
            h.update(chunk)
            if codec == CODEC_ZSTD:
                payload = first_packed if first_packed is not None else zc.compress(chunk)
                first_packed = None
            else:
                payload = chunk
            writer.write(frame_head(DATA, len(payload)))
            writer.write(payload)
            remaining -= len(chunk)
            fp.advance(len(chunk), len(payload))
            result.sent_bytes += len(chunk)
            result.wire_bytes += len(payload)
            await writer.drain()
            await limiter.account(len(chunk))
            if all_in.done() and all_in.exception() is not None:
                all_in.result()  # the receiver gave up: raise its reason
            chunk = f.read(min(CHUNK, remaining)) if remaining else b""
        if short:
            _abandon(writer, index, None, "the file shrank while it was being sent")
            rep.finish_file(fp, "not sent: the file shrank while it was being sent")
            return
        digest = h.digest()
        writer.write(frame_head(END, len(digest)) + digest)
        await writer.drain()
    rep.finish_file(fp, f"sent ({CODEC_NAMES[codec]}), sha256 {digest.hex()[:16]}...")


def _abandon(writer, index: int, offset: int | None, reason: str) -> None:
    if offset is not None:  # no START yet
        body = start_payload(index, offset, CODEC_RAW)
        writer.write(frame_head(START, len(body)) + body)
    msg = reason.encode()[:4000]
    writer.write(frame_head(ABANDON, len(msg)) + msg)

