"""The transfer protocol and both sides in one process, over loopback Gannet."""

import asyncio
import functools
import hashlib
import io
import json
import os

import pytest

import gannet
from gannet.apps.transfer import Receiver, Reporter, collect, send_files
from gannet.apps.transfer.protocol import (
    CHUNK, END, FRAME_HEAD, START, ProtocolError, check_path, encode_line, frame_head,
    parse_header, start_payload,
)

pytestmark = pytest.mark.timeout(60)


def aio(fn):
    """Run an async test function with asyncio.run (no plugin needed)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))
    return wrapper


@pytest.mark.parametrize("bad", [
    "../x", "/etc/passwd", "a/../b", "a//b", "./a", "a/.", "a\\b", "", "a\x00b", "a\nb",
    "..", "a/..", "x" * 300, None, 3,
])
def test_check_path_rejects(bad):
    with pytest.raises(ProtocolError):
        check_path(bad)


@pytest.mark.parametrize("good", ["a", "a/b.c", "..foo", "a b/c (1).txt", ".hidden/x", "é/ü"])
def test_check_path_accepts(good):
    assert check_path(good) == good


def header(files, dirs=(), **extra):
    return {"protocol": "gannet-transfer", "version": 1, "compression": [], "dirs": list(dirs),
            "files": files, **extra}


def test_header_rejects_duplicates_and_clashes():
    with pytest.raises(ProtocolError):
        parse_header(header([{"path": "a", "size": 1}, {"path": "a", "size": 2}]))
    with pytest.raises(ProtocolError):
        parse_header(header([{"path": "a", "size": 1}, {"path": "a/b", "size": 2}]))
    with pytest.raises(ProtocolError):
        parse_header(header([{"path": "a", "size": 1}], dirs=["a"]))
    with pytest.raises(ProtocolError):
        parse_header(header([{"path": "a", "size": -1}]))
    with pytest.raises(ProtocolError):
        parse_header(header([{"path": "a", "size": 1}], version=99))
    h = parse_header(header([{"path": "d/a", "size": 5, "mode": 0o104755}], dirs=["d"]))
    assert h.files[0].mode == 0o755  # setuid and file-type bits dropped


def test_collect_tree_and_symlinks(tmp_path):
    root = tmp_path / "tree"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "a.txt").write_text("a")
    (root / "sub" / "deeper" / "b.bin").write_bytes(b"\0" * 10)
    (tmp_path / "outside").write_text("secret")
    (root / "out").symlink_to(tmp_path / "outside")
    (root / "in").symlink_to("a.txt")
    (root / "dirlink").symlink_to(tmp_path)
    warnings = []
    files, dirs = collect([str(root)], warn=warnings.append)
    assert sorted(f.path for f in files) == ["tree/a.txt", "tree/in", "tree/sub/deeper/b.bin"]
    assert set(dirs) == {"tree", "tree/empty", "tree/sub", "tree/sub/deeper"}
    assert any("out" in w for w in warnings) and any("dirlink" in w for w in warnings)
    files, _ = collect([str(root / "a.txt")])
    assert files[0].path == "a.txt"
    with pytest.raises(ValueError):
        collect([str(root / "a.txt"), str(root / "a.txt")])


# ------------------------------------------------------------ end to end
class Pair:
    """A Receiver on a loopback server; send() runs a sender against it."""

    def __init__(self, tmp_path, overwrite=False):
        self.dir = tmp_path / "out"
        self.dir.mkdir(exist_ok=True)
        self.rlog = io.StringIO()
        self.slog = io.StringIO()
        self.receiver = Receiver(self.dir, overwrite=overwrite, reporter=Reporter("receive", self.rlog, False))

    async def __aenter__(self):
        self.server = await gannet.start_server(self.receiver.handle, "127.0.0.1", 0, limit=4 * CHUNK)
        self.port = self.server.addresses[0][1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        self.server.abort_clients()
        await asyncio.wait_for(self.server.wait_closed(), 5)

    async def send(self, *paths, **kw):
        files, dirs = collect([str(p) for p in paths])
        return await send_files("127.0.0.1", self.port, files, dirs,
                                reporter=Reporter("send", self.slog, False), **kw)


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@aio
async def test_tree_no_overwrite_and_overwrite(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "a.txt").write_text("hello\n")
    (src / ".rc").write_text("rc")
    (src / "sub" / "z.bin").write_bytes(os.urandom(3 * CHUNK + 17))
    os.chmod(src / "a.txt", 0o640)
    async with Pair(tmp_path) as pair:
        res = await pair.send(src)
        assert not res.failed and len(res.ok) == 3
        out = pair.dir / "src"
        assert (out / "a.txt").read_text() == "hello\n"
        assert os.stat(out / "a.txt").st_mode & 0o777 == 0o640
        assert sha(out / "sub" / "z.bin") == sha(src / "sub" / "z.bin")
        assert (out / "empty").is_dir()
        res = await pair.send(src)  # again: nothing replaced
        assert not res.failed
        assert (out / "a (1).txt").read_text() == "hello\n"
        assert (out / ".rc (1)").read_text() == "rc"
        assert (out / "sub" / "z (1).bin").exists()
        assert not list(out.rglob("*.gannet-part"))
    (src / "a.txt").write_text("new\n")
    async with Pair(tmp_path, overwrite=True) as pair:
        res = await pair.send(src / "a.txt")
        assert (pair.dir / "a.txt").read_text() == "new\n"


@aio
async def test_compression_auto(tmp_path):
    text = tmp_path / "text.txt"
    text.write_bytes(b"".join(b"line %d of some very compressible text\n" % i for i in range(100000)))
    rnd = tmp_path / "random.bin"
    rnd.write_bytes(os.urandom(2 * CHUNK))
    async with Pair(tmp_path) as pair:
        res = await pair.send(text)
        assert res.wire_bytes < res.sent_bytes / 5
        res = await pair.send(rnd)
        assert res.wire_bytes == res.sent_bytes  # sampled, sent raw
        res = await pair.send(text, compress="none")
        assert res.wire_bytes == res.sent_bytes
        assert sha(pair.dir / "text (1).txt") == sha(text)
    assert "(zstd)" in pair.rlog.getvalue() and "(raw)" in pair.rlog.getvalue()


@aio
async def test_resume_and_corrupt_partial(tmp_path):
    data = os.urandom(5 * CHUNK + 123)
    f = tmp_path / "f.bin"
    f.write_bytes(data)
    async with Pair(tmp_path) as pair:
        part = pair.dir / ".f.bin.gannet-part"
        part.write_bytes(data[: 2 * CHUNK + 5])
        res = await pair.send(f)
        assert res.ok == ["f.bin"] and res.sent_bytes == len(data) - (2 * CHUNK + 5)
        assert "resumed at offset" in pair.rlog.getvalue()
        assert (pair.dir / "f.bin").read_bytes() == data and not part.exists()

        bad = bytearray(data[: 3 * CHUNK])
        bad[1000] ^= 1
        part.write_bytes(bad)
        res = await pair.send(f)
        assert res.ok == ["f.bin"] and res.sent_bytes == len(data)
        assert "restarting from zero" in pair.rlog.getvalue()
        assert (pair.dir / "f (1).bin").read_bytes() == data

        part.write_bytes(data + b"longer than the file")
        res = await pair.send(f)
        assert res.ok and res.sent_bytes == len(data)
        assert (pair.dir / "f (2).bin").read_bytes() == data


async def forged(port, head: dict, frames: bytes = b""):
    reader, writer = await gannet.open_connection("127.0.0.1", port)
    writer.write(encode_line(head))
    reply = json.loads(await reader.readline())
    lines = []
    if reply.get("ok"):
        writer.write(frames)
        writer.write_eof()
        while line := await reader.readline():
            lines.append(json.loads(line))
    writer.close()
    await writer.wait_closed()
    return reply, lines


@pytest.mark.parametrize("path", ["../escape.txt", "/tmp/abs.txt", "ok/../../escape.txt"])
@aio
async def test_forged_traversal_rejected(tmp_path, path):
    async with Pair(tmp_path) as pair:
        reply, _ = await forged(pair.port, header([{"path": path, "size": 1}]))
    assert reply["ok"] is False and "rejected" in reply["error"]
    assert not (tmp_path / "escape.txt").exists() and list(pair.dir.iterdir()) == []


@aio
async def test_symlink_in_target_dir_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    async with Pair(tmp_path) as pair:
        (pair.dir / "d").symlink_to(outside)
        reply, _ = await forged(pair.port, header([{"path": "d/x", "size": 1}]))
        assert reply["ok"] is False and "symlink" in reply["error"]
        (pair.dir / "x").symlink_to(outside / "target")  # final name is a symlink
        body = start_payload(0, 0, 0)
        data = b"z"
        frames = (frame_head(START, len(body)) + body + frame_head(b"D", 1) + data
                  + frame_head(END, 32) + hashlib.sha256(data).digest())
        reply, verdicts = await forged(pair.port, header([{"path": "x", "size": 1}]), frames)
        assert verdicts[0]["ok"] and verdicts[0]["name"] == "x (1)"
    assert list(outside.iterdir()) == []


@aio
async def test_hash_mismatch_keeps_nothing(tmp_path):
    body = start_payload(0, 0, 0)
    frames = (frame_head(START, len(body)) + body + frame_head(b"D", 4) + b"data"
              + frame_head(END, 32) + hashlib.sha256(b"other").digest())
    async with Pair(tmp_path) as pair:
        reply, verdicts = await forged(pair.port, header([{"path": "f", "size": 4}]), frames)
    assert reply["ok"] and verdicts == [{"index": 0, "ok": False, "error": "SHA-256 mismatch"}]
    assert list(pair.dir.iterdir()) == []
    assert FRAME_HEAD.size == 5
