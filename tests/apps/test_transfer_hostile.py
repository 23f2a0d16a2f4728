"""`gannet receive` / `gannet send` against a hostile peer (issue 12, findings 5-8, 11, 12)."""

import asyncio
import functools
import hashlib
import io
import json
import os
import threading

import pytest
import zstandard

import gannet
from gannet.apps.limits import TransferLimits
from gannet.apps.transfer import Receiver, Reporter, collect, send_files
from gannet.apps.transfer.protocol import (
    CHUNK, DATA, END, START, ProtocolError, check_path, encode_line, frame_head, part_name,
    start_payload,
)

pytestmark = pytest.mark.timeout(60)


def aio(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))
    return wrapper


def header(files, dirs=(), compression=()):
    return {"protocol": "gannet-transfer", "version": 1, "compression": list(compression),
            "dirs": list(dirs), "files": files}


def start(index=0, offset=0, codec=0):
    body = start_payload(index, offset, codec)
    return frame_head(START, len(body)) + body


def data(payload):
    return frame_head(DATA, len(payload)) + payload


def end(content):
    return frame_head(END, 32) + hashlib.sha256(content).digest()


class Served:
    """A Receiver on a loopback Gannet server, its log kept."""

    def __init__(self, tmp_path, **limits):
        self.dir = tmp_path / "out"
        self.dir.mkdir(exist_ok=True)
        self.log = io.StringIO()
        self.receiver = Receiver(self.dir, reporter=Reporter("receive", self.log, False),
                                 limits=TransferLimits(**limits))

    async def __aenter__(self):
        self.server = await gannet.start_server(self.receiver.handle, "127.0.0.1", 0, limit=4 * CHUNK)
        self.port = self.server.addresses[0][1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        self.server.abort_clients()
        await asyncio.wait_for(self.server.wait_closed(), 5)


async def exchange(port, head, frames=b"", eof=True):
    """Send a header (and frames); return the reply and every later line."""
    reader, writer = await gannet.open_connection("127.0.0.1", port)
    writer.write(encode_line(head))
    reply = json.loads(await asyncio.wait_for(reader.readline(), 10))
    lines = []
    if reply.get("ok"):
        writer.write(frames)
        if eof:
            writer.write_eof()
        while line := await asyncio.wait_for(reader.readline(), 10):
            lines.append(json.loads(line))
    writer.close()
    return reply, lines


# ----------------------------------------------------------- finding 5: disk
@aio
async def test_offer_larger_than_free_space_is_refused(tmp_path):
    async with Served(tmp_path) as srv:
        reply, _ = await exchange(srv.port, header([{"path": "huge.bin", "size": 10 * 10**12}]))
    assert reply["ok"] is False and "not enough free space" in reply["error"]
    assert list(srv.dir.iterdir()) == []


@aio
async def test_broken_sender_leaves_no_partial_file(tmp_path):
    # A sender that sends more than it announced is cut off, and what it sent
    # is not kept "for resume" (it would fill the disk for good).
    frames = start() + data(b"x" * 1000) + data(b"y" * 1000)
    async with Served(tmp_path) as srv:
        reply, lines = await exchange(srv.port, header([{"path": "f.bin", "size": 1500}]), frames)
    assert reply["ok"] and lines and lines[-1]["ok"] is False
    assert "more data than announced" in lines[-1]["error"]
    assert list(srv.dir.iterdir()) == []


@aio
async def test_zstd_frame_beyond_the_announced_size_is_not_decompressed(tmp_path):
    bomb = zstandard.ZstdCompressor().compress(b"\0" * CHUNK)  # ~40 bytes for 1 MiB
    frames = start(codec=1) + data(bomb)
    async with Served(tmp_path) as srv:
        reply, lines = await exchange(
            srv.port, header([{"path": "z.bin", "size": 10}], compression=["zstd"]), frames)
    assert lines[-1]["ok"] is False and "more data than announced" in lines[-1]["error"]
    assert list(srv.dir.iterdir()) == []


# ------------------------------------------------- finding 6: transfer takeover
@aio
async def test_live_transfer_cannot_be_taken_over(tmp_path):
    async with Served(tmp_path, stale_after=1.0) as srv:
        victim_r, victim_w = await gannet.open_connection("127.0.0.1", srv.port)
        victim_w.write(encode_line(header([{"path": "v.bin", "size": 10**6}])))
        assert json.loads(await victim_r.readline())["ok"]
        victim_w.write(start() + data(b"v" * 5000))
        part = srv.dir / part_name("v.bin")
        stop = asyncio.Event()

        async def keep_sending():  # the victim is alive and well
            while not stop.is_set():
                victim_w.write(data(b"v" * 100))
                await asyncio.sleep(0.1)

        sender = asyncio.create_task(keep_sending())
        while not (part.exists() and part.stat().st_size >= 5000):
            await asyncio.sleep(0.02)
        reply, _ = await exchange(srv.port, header([{"path": "v.bin", "size": 10**6}]),
                                  start() + data(b"evil"))
        stop.set()
        await sender
        size_after = part.stat().st_size
        victim_w.abort()
    assert reply["ok"] is False and "busy" in reply["error"]
    assert "have" not in reply and hashlib.sha256(b"v" * 5000).hexdigest() not in json.dumps(reply)
    assert size_after >= 5000  # not truncated by the newcomer
    with open(part, "rb") as f:
        assert f.read(4) == b"vvvv"


@aio
async def test_silent_transfer_is_taken_over_for_resume(tmp_path):
    content = os.urandom(3000)
    async with Served(tmp_path, stale_after=0.5) as srv:
        old_r, old_w = await gannet.open_connection("127.0.0.1", srv.port)
        old_w.write(encode_line(header([{"path": "r.bin", "size": 3000}])))
        assert json.loads(await old_r.readline())["ok"]
        old_w.write(start() + data(content[:1000]))
        part = srv.dir / part_name("r.bin")
        while not (part.exists() and part.stat().st_size == 1000):
            await asyncio.sleep(0.02)
        # The old sender is now silent (killed): the newcomer resumes its file.
        reader, writer = await gannet.open_connection("127.0.0.1", srv.port)
        writer.write(encode_line(header([{"path": "r.bin", "size": 3000}])))
        reply = json.loads(await asyncio.wait_for(reader.readline(), 10))
        assert reply["ok"] and reply["have"] == {"0": [1000, hashlib.sha256(content[:1000]).hexdigest()]}
        writer.write(start(offset=1000) + data(content[1000:]) + end(content))
        verdict = json.loads(await asyncio.wait_for(reader.readline(), 10))
        writer.close()
        old_w.abort()
    assert verdict == {"index": 0, "ok": True, "name": "r.bin"}
    assert (srv.dir / "r.bin").read_bytes() == content


# ------------------------------------------------ finding 7: malformed zstd frames
GOOD = zstandard.ZstdCompressor().compress(b"a" * 100)


@pytest.mark.parametrize("frame", [
    b"this is no zstd frame", b"", GOOD[:-4],
    GOOD[:5] + bytes([GOOD[5] ^ 0x7f]) + GOOD[6:],  # the content size field lies
], ids=["garbage", "empty", "truncated", "lying-size"])
@aio
async def test_malformed_zstd_frame_is_a_clear_error(tmp_path, frame):
    errors = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: errors.append(ctx))
    async with Served(tmp_path) as srv:
        reply, lines = await exchange(
            srv.port, header([{"path": "z.bin", "size": 100}], compression=["zstd"]),
            start(codec=1) + data(frame) + end(b"a" * 100))
    assert reply["ok"] and lines, lines
    assert lines[-1]["ok"] is False and "zstd" in lines[-1]["error"], lines
    assert "interrupted" in srv.log.getvalue() and errors == []
    assert list(srv.dir.iterdir()) == []


# --------------------------------------------- finding 8: stalled connections
@aio
async def test_header_timeout_and_connection_cap(tmp_path):
    async with Served(tmp_path, header_timeout=1.0, max_connections=2) as srv:
        stalled = []
        for _ in range(2):
            r, w = await gannet.open_connection("127.0.0.1", srv.port)
            w.write(b'{"protocol": "gannet-tr')  # and nothing more
            stalled.append((r, w))
        await asyncio.sleep(0.3)
        reply, _ = await exchange(srv.port, header([{"path": "f", "size": 1}]))
        assert reply["ok"] is False and "busy" in reply["error"]
        for r, w in stalled:  # cut off (reset) after the header timeout
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(r.read(), 5)
            w.abort()
        # The slots are free again.
        reply, lines = await exchange(srv.port, header([{"path": "f", "size": 1}]), start() + data(b"1") + end(b"1"))
    assert reply["ok"] and lines[-1]["ok"]
    assert srv.log.getvalue().count("no header within 1 s") == 2


# --------------------------------------------------------- finding 11: names, modes, dirs
@pytest.mark.parametrize("bad", ["a\x9bb", "a\u202egpj.exe", "x\u2066y", "x\u200ey", "a\x85b"])
def test_check_path_rejects_c1_and_bidi(bad):
    with pytest.raises(ProtocolError):
        check_path(bad)


@aio
async def test_longest_names_fit_the_file_system(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    names = ["x" * 250 + ".bin", "é" * 120 + ".txt", "y" * 255]
    for n in names:
        (src / n).write_bytes(n.encode())
    async with Served(tmp_path) as srv:
        files, dirs = collect([str(src / n) for n in names])
        res = await send_files("127.0.0.1", srv.port, files, dirs,
                               reporter=Reporter("send", io.StringIO(), False))
        assert sorted(res.ok) == sorted(names) and not res.failed
        for n in names:
            assert (srv.dir / n).read_bytes() == n.encode()
        res = await send_files("127.0.0.1", srv.port, files, dirs,  # again: numbered names fit too
                               reporter=Reporter("send", io.StringIO(), False))
        assert len(res.ok) == 3 and not res.failed
    assert all(len(p.name.encode()) <= 255 for p in srv.dir.iterdir())
    assert len(list(srv.dir.iterdir())) == 6
    assert all(len(part_name(n).encode()) <= 255 for n in names)
    assert part_name("a" * 300) != part_name("a" * 299 + "b")


@aio
async def test_mode_is_applied_under_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        async with Served(tmp_path) as srv:
            reply, lines = await exchange(srv.port, header([{"path": "m", "size": 1, "mode": 0o7777}]),
                                          start() + data(b"m") + end(b"m"))
    finally:
        os.umask(old)
    assert lines[-1]["ok"]
    assert os.stat(srv.dir / "m").st_mode & 0o7777 == 0o700


@aio
async def test_failed_transfer_removes_the_directories_it_made(tmp_path):
    async with Served(tmp_path) as srv:
        # Directories the header names, then a broken frame sequence.
        reply, lines = await exchange(
            srv.port, header([{"path": "a/b/c/f", "size": 4}], dirs=["a", "a/b", "a/b/c", "e/f"]),
            start(index=7))
        assert reply["ok"] and lines[-1]["ok"] is False
        assert list(srv.dir.iterdir()) == []
        # A tree too deep for the file system: refused with the reason, nothing left.
        deep = "/".join(["d"] * 2040)
        reply, _ = await exchange(srv.port, header([{"path": deep + "/f", "size": 1}], dirs=[deep]))
        assert reply["ok"] is False and "too long" in reply["error"].lower()
        assert list(srv.dir.iterdir()) == []
        # A directory that already existed is left alone.
        (srv.dir / "keep").mkdir()
        await exchange(srv.port, header([{"path": "keep/new/f", "size": 1}]), start(index=3))
        assert [p.name for p in srv.dir.iterdir()] == ["keep"] and list((srv.dir / "keep").iterdir()) == []


# ----------------------------------------------------- finding 12: hostile receiver
class FakeReceiver:
    """A Gannet server in its own thread that answers with scripted lines."""

    def __init__(self, lines):
        self.lines = lines
        self.ready = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    async def _main(self):
        self.stop = asyncio.Event()

        async def on_client(reader, writer):
            await reader.readline()
            for line in self.lines:
                writer.write(line)
            await writer.drain()
            try:
                await asyncio.wait_for(reader.read(), 10)
            except (ConnectionError, TimeoutError):
                pass
            finally:
                writer.close()

        server = await gannet.start_server(on_client, "127.0.0.1", 0)
        self.port = server.addresses[0][1]
        self.loop = asyncio.get_running_loop()
        self.ready.set()
        await self.stop.wait()
        server.close()
        server.abort_clients()

    def close(self):
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)


def test_out_of_range_verdict_is_a_protocol_error(tmp_path):
    f = tmp_path / "f.txt"
    f.write_text("hello")
    fake = FakeReceiver([encode_line({"ok": True, "compression": "none", "have": {}}),
                         encode_line({"index": 5, "ok": True, "name": "f.txt"})])
    try:
        files, dirs = collect([str(f)])
        with pytest.raises(ProtocolError, match="verdict for file 5"):
            asyncio.run(send_files("127.0.0.1", fake.port, files, dirs,
                                   reporter=Reporter("send", io.StringIO(), False)))
    finally:
        fake.close()


def test_send_shows_a_hostile_refusal_escaped(tmp_path, capsys):
    from gannet.cli.main import main

    f = tmp_path / "f.txt"
    f.write_text("hello")
    evil = "no\x1b]0;pwned\x07\x1b[2J\ngannet send: done: 1 verified\u202e"
    fake = FakeReceiver([encode_line({"ok": False, "error": evil})])
    try:
        # (--no-stats: run in this process, the stats socket would stay open
        # and turn limit tracking on for the tests that follow)
        code = main(["--no-stats", "send", str(f), f"127.0.0.1:{fake.port}"])
    finally:
        fake.close()
    err = capsys.readouterr().err
    assert code == 1
    assert "\x1b" not in err and "\x07" not in err and "\u202e" not in err
    assert "refused the transfer: no\\x1b]0;pwned\\x07\\x1b[2J\\ngannet send: done" in err
    assert not any(line.startswith("gannet send: done") for line in err.splitlines())  # not forged
