"""The chat's frame format, decoder, and file-name helpers, without any network."""

import asyncio
import json

import pytest

from gannet.apps.chat import framing
from gannet.apps.chat.framing import Decoder, Frame, FrameType, FramingError
from gannet.apps.chat.transfer import claim, safe_name, unique_path


def test_encode_layout():
    data = framing.encode(FrameType.MESSAGE, b"hi")
    assert data == bytes([3, 0, 0, 0, 2]) + b"hi"
    assert framing.encode(FrameType.BYE) == bytes([9, 0, 0, 0, 0])


def test_json_and_chunk_frames_round_trip():
    stream = (framing.encode_json(FrameType.MESSAGE, {"text": "héllo ✓", "time": 1.5})
              + framing.encode_chunk(7, b"\x00\xff" * 10)
              + framing.encode_json(FrameType.END, {"id": 7, "sha256": "ab"}))
    frames = list(Decoder().feed(stream))
    assert [f.type for f in frames] == [FrameType.MESSAGE, FrameType.CHUNK, FrameType.END]
    assert frames[0].json() == {"text": "héllo ✓", "time": 1.5}
    assert frames[1].chunk() == (7, b"\x00\xff" * 10)
    assert frames[2].json()["id"] == 7


def test_decoder_byte_by_byte():
    payloads = [b"", b"x", bytes(range(256)) * 40]
    stream = b"".join(framing.encode(FrameType.CHUNK, b"\0\0\0\1" + p) for p in payloads)
    dec = Decoder()
    got = []
    for i in range(len(stream)):
        got.extend(dec.feed(stream[i:i + 1]))
    assert [f.chunk()[1] for f in got] == payloads
    assert dec.pending == 0


def test_decoder_keeps_partial_frame():
    dec = Decoder()
    data = framing.encode(FrameType.MESSAGE, b'{"text":"a"}')
    assert list(dec.feed(data[:7])) == []
    assert dec.pending == 7
    assert list(dec.feed(data[7:])) == [Frame(FrameType.MESSAGE, b'{"text":"a"}')]


@pytest.mark.parametrize("bad", [bytes([0, 0, 0, 0, 0]), bytes([200, 0, 0, 0, 1, 0])])
def test_unknown_type_rejected(bad):
    with pytest.raises(FramingError, match="unknown frame type"):
        list(Decoder().feed(bad))


def test_oversized_frame_rejected():
    header = framing.HEADER.pack(FrameType.CHUNK, framing.MAX_PAYLOAD + 1)
    with pytest.raises(FramingError, match="exceeds"):
        list(Decoder().feed(header))
    with pytest.raises(ValueError):
        framing.encode(FrameType.CHUNK, bytes(framing.MAX_PAYLOAD + 1))


def test_bad_payloads():
    with pytest.raises(FramingError):
        Frame(FrameType.MESSAGE, b"\xff").json()
    with pytest.raises(FramingError):
        Frame(FrameType.MESSAGE, json.dumps([1]).encode()).json()
    with pytest.raises(FramingError):
        Frame(FrameType.CHUNK, b"\0\0").chunk()


def test_read_frame_from_stream():
    async def main():
        reader = asyncio.StreamReader()
        reader.feed_data(framing.encode_json(FrameType.HELLO, {"name": "a"}))
        reader.feed_data(framing.encode(FrameType.BYE)[:3])
        reader.feed_eof()
        first = await framing.read_frame(reader)
        assert first.type == FrameType.HELLO and first.json() == {"name": "a"}
        with pytest.raises(asyncio.IncompleteReadError):
            await framing.read_frame(reader)
        empty = asyncio.StreamReader()
        empty.feed_eof()
        assert await framing.read_frame(empty) is None

    asyncio.run(main())


@pytest.mark.parametrize("name,expected", [
    ("photo.jpg", "photo.jpg"),
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\x\\doc.txt", "doc.txt"),
    ("..", "file"),
    ("", "file"),
    (".hidden", "hidden"),
    ("a\nb\x00c", "a_b_c"),
])
def test_safe_name(name, expected):
    assert safe_name(name) == expected


def test_unique_names_never_overwrite(tmp_path):
    (tmp_path / "a.txt").write_text("keep")
    assert unique_path(tmp_path, "a.txt") == tmp_path / "a (1).txt"
    first = claim(tmp_path, "a.txt")
    second = claim(tmp_path, "a.txt")
    assert (first.name, second.name) == ("a (1).txt", "a (2).txt")
    assert (tmp_path / "a.txt").read_text() == "keep"
    assert claim(tmp_path, "new") == tmp_path / "new"
