"""The file-transfer protocol spoken on one Gannet connection (docs/transfer.md).

    sender   -> receiver  header line   JSON + "\\n": version, directories, files (path, size, mode)
    receiver -> sender    reply line    JSON + "\\n": accepted codec, per file the bytes it
                                        already has and the SHA-256 of those bytes
    sender   -> receiver  frames        per file, in header order: START, DATA..., END | ABANDON
    receiver -> sender    verdict lines JSON + "\\n", one per file, as each file completes

A frame is a 1-byte type, a 4-byte big-endian payload length, the payload.
Everything here is pure: encoding, decoding and validation, no I/O.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass

from ..display import has_unsafe
from . import COMPRESS_MODES  # noqa: F401 (`gannet send --compress`; defined with the package)

PROTOCOL = "gannet-transfer"
VERSION = 1

CHUNK = 1024 * 1024  # raw bytes per DATA frame
MAX_FRAME = CHUNK + 64 * 1024  # largest payload accepted (zstd can expand a chunk slightly)
MAX_LINE = 16 * 1024 * 1024  # largest header / reply line
MAX_FILES = 1_000_000
MAX_PATH = 4096
MAX_COMPONENT = 255  # bytes: NAME_MAX of the common file systems

# Frame types.
START = b"S"  # payload: index u32, offset u64, codec u8
DATA = b"D"  # payload: a chunk, raw or one zstd frame of at most CHUNK bytes
END = b"E"  # payload: SHA-256 of the whole file (32 bytes)
ABANDON = b"A"  # payload: UTF-8 reason; the sender could not read the file

FRAME_HEAD = struct.Struct(">cI")
START_BODY = struct.Struct(">IQB")

CODEC_RAW = 0
CODEC_ZSTD = 1
CODEC_NAMES = {CODEC_RAW: "none", CODEC_ZSTD: "zstd"}

PART_SUFFIX = ".gannet-part"


class ProtocolError(Exception):
    """The peer sent something this protocol does not allow."""


@dataclass(frozen=True)
class FileEntry:
    """One file of a header: where it goes, its size, its permissions."""

    path: str  # relative, "/"-separated, validated
    size: int
    mode: int  # permission bits only (0o777)


@dataclass(frozen=True)
class Header:
    """A parsed and validated header line."""

    files: list[FileEntry]
    dirs: list[str]
    compression: list[str]


# ------------------------------------------------------------------ paths
def check_path(path: object) -> str:
    """A safe relative path, or ProtocolError.

    Rejected: non-strings, empty, absolute (leading "/"), backslashes, NUL and
    other control characters (C0, DEL, C1), bidi and invisible format
    characters (a name that reads differently from what it is, see
    `gannet.apps.display`), empty, "." and ".." components, overlong names.
    The result can only name something inside the target directory (as long as
    the receiver does not follow symlinks inside it, see receiver.py).
    """
    if not isinstance(path, str) or not path:
        raise ProtocolError(f"invalid path {path!r}")
    if len(path) > MAX_PATH:
        raise ProtocolError("path too long")
    if path.startswith("/"):
        raise ProtocolError(f"absolute path rejected: {path!r}")
    try:
        raw = os.fsencode(path)  # a lone surrogate ("\\ud800" in the JSON) names no file
    except UnicodeEncodeError:
        raise ProtocolError(f"invalid character in path {path!r}") from None
    # A name read from a non-UTF-8 directory arrives surrogate-escaped
    # ("caf\udce9"): its undecodable bytes are no characters to fear, the
    # rest is checked as text.
    if "\\" in path or has_unsafe(raw.decode("utf-8", "replace")):
        raise ProtocolError(f"invalid character in path {path!r}")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise ProtocolError(f"path component {part!r} rejected in {path!r}")
        if len(part.encode("utf-8", "surrogatepass")) > MAX_COMPONENT:
            raise ProtocolError(f"path component too long in {path!r}")
    return path


def part_name(name: str) -> str:
    """The temporary name a file has while it is incomplete: `.name.gannet-part`.

    A name too long for that (the two additions cost 13 bytes of the 255 a
    component may have) keeps its first bytes and a hash of the whole name:
    `.name-start~0123456789abcdef.gannet-part`, distinct per name and always
    within MAX_COMPONENT, so such a file can be received (and resumed) too.
    """
    plain = f".{name}{PART_SUFFIX}"
    if len(plain.encode("utf-8", "surrogatepass")) <= MAX_COMPONENT:
        return plain
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    room = MAX_COMPONENT - len(f".~{digest}{PART_SUFFIX}")
    return f".{fit_bytes(name, room)}~{digest}{PART_SUFFIX}"


def fit_bytes(text: str, limit: int) -> str:
    """The longest prefix of `text` whose UTF-8 form has at most `limit` bytes."""
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", "ignore")


# ----------------------------------------------------------------- header
def encode_line(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def decode_line(line: bytes) -> dict:
    if not line.endswith(b"\n"):
        raise ProtocolError("connection closed before a complete line")
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
        raise ProtocolError(f"malformed JSON line: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("expected a JSON object")
    return obj


def encode_header(files: list[FileEntry], dirs: list[str], compression: list[str]) -> bytes:
    return encode_line({
        "protocol": PROTOCOL,
        "version": VERSION,
        "compression": compression,
        "dirs": dirs,
        "files": [{"path": f.path, "size": f.size, "mode": f.mode} for f in files],
    })


def parse_header(obj: dict) -> Header:
    """Validate a decoded header; every path is checked, duplicates and
    file/directory clashes are rejected."""
    if obj.get("protocol") != PROTOCOL:
        raise ProtocolError("not a gannet transfer header")
    if obj.get("version") != VERSION:
        raise ProtocolError(f"unsupported transfer protocol version {obj.get('version')!r}")
    raw_files = obj.get("files")
    raw_dirs = obj.get("dirs", [])
    comp = obj.get("compression", [])
    if not isinstance(raw_files, list) or not isinstance(raw_dirs, list) or not isinstance(comp, list):
        raise ProtocolError("header fields have the wrong type")
    if len(raw_files) + len(raw_dirs) > MAX_FILES:
        raise ProtocolError("too many files")
    files = []
    for item in raw_files:
        if not isinstance(item, dict):
            raise ProtocolError("file entry is not an object")
        path = check_path(item.get("path"))
        size, mode = item.get("size"), item.get("mode", 0o644)
        if type(size) is not int or size < 0 or type(mode) is not int or mode < 0:
            raise ProtocolError(f"bad size or mode for {path!r}")
        files.append(FileEntry(path, size, mode & 0o777))
    dirs = [check_path(d) for d in raw_dirs]
    file_paths = [f.path for f in files]
    if len(set(file_paths)) != len(file_paths):
        raise ProtocolError("duplicate file path in header")
    # A path used as a file must not also be a directory (explicit or as a parent).
    parents = set(dirs)
    for p in file_paths:
        parts = p.split("/")
        parents.update("/".join(parts[:i]) for i in range(1, len(parts)))
    clash = parents.intersection(file_paths)
    if clash:
        raise ProtocolError(f"path is both a file and a directory: {sorted(clash)[0]!r}")
    return Header(files, dirs, [c for c in comp if isinstance(c, str)])


# ----------------------------------------------------------------- frames
def frame_head(kind: bytes, length: int) -> bytes:
    return FRAME_HEAD.pack(kind, length)


def start_payload(index: int, offset: int, codec: int) -> bytes:
    return START_BODY.pack(index, offset, codec)


def parse_start(payload: bytes) -> tuple[int, int, int]:
    if len(payload) != START_BODY.size:
        raise ProtocolError("bad START frame")
    index, offset, codec = START_BODY.unpack(payload)
    if codec not in CODEC_NAMES:
        raise ProtocolError(f"unknown codec {codec}")
    return index, offset, codec


def parse_frame_head(head: bytes) -> tuple[bytes, int]:
    kind, length = FRAME_HEAD.unpack(head)
    if kind not in (START, DATA, END, ABANDON):
        raise ProtocolError(f"unknown frame type {kind!r}")
    if length > MAX_FRAME:
        raise ProtocolError(f"frame too large ({length} bytes)")
    return kind, length
