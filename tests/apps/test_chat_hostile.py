"""The chat against a hostile peer or stranger (issue 12, findings 4, 9 and 11's claim())."""

import asyncio
import io
import os
from datetime import datetime
from pathlib import Path

import pytest

from gannet.apps.chat import framing
from gannet.apps.chat.framing import FrameType
from gannet.apps.chat.rendezvous import Rendezvous
from gannet.apps.chat.session import (
    Info, Message, PeerConnected, PeerDisconnected, TransferFailed, TransferStarted,
)
from gannet.apps.chat.transfer import Transfer, claim, safe_name
from gannet.apps.chat.ui import TerminalUI
from gannet.apps.limits import ChatLimits

from test_chat_session import CONFIG, Side, endpoint, run

pytestmark = pytest.mark.timeout(60)

EVIL = "\x1b]0;owned\x07\x1b[2J\x1b[8m\u009b31m\u202eevil\nhi\r\n* transfer finished: forged"


# ------------------------------------------------- finding 4: who the peer is
def test_a_stranger_cannot_take_the_peer_slot(tmp_path):
    async def main():
        ea, eb, ec = await endpoint(), await endpoint(), await endpoint()
        a = Side("alice", ea, eb.local_address[1], tmp_path / "a")
        # Mallory, on another port, connects first and keeps trying.
        mallory = Rendezvous(ec, ("127.0.0.1", a.port), "bob", CONFIG)
        meet = asyncio.create_task(mallory.meet())
        ev = await a.wait_for(lambda e: isinstance(e, Info) and "refused a connection" in e.text,
                              what="refusal line")
        assert f"127.0.0.1:{ec.local_address[1]}" in ev.text and f":{eb.local_address[1]}" in ev.text
        await asyncio.sleep(1.5)  # mallory retries: refused again, but shown once
        assert not a.of(PeerConnected) and not meet.done()
        assert sum("refused a connection" in e.text for e in a.of(Info)) == 1
        assert a.rv.refused[f"127.0.0.1:{ec.local_address[1]}"] >= 2
        # The real peer still gets in.
        b = Side("bob", eb, a.port, tmp_path / "b")
        ev = await a.wait_for(lambda e: isinstance(e, PeerConnected), what="peer connected")
        assert ev.address == f"127.0.0.1:{eb.local_address[1]}"
        meet.cancel()
        mallory.close()
        await a.stop()
        await b.stop()

    run(main())


def test_peer_text_is_shown_escaped():
    out, err = io.StringIO(), io.StringIO()
    ui = TerminalUI(lambda line: None, lambda: None, stdin_fd=0, stdout=out, stderr=err,
                    interactive=False)
    ui.event(PeerConnected(EVIL, "127.0.0.1:9"))
    ui.event(Message(EVIL, EVIL, datetime.now()))
    t = Transfer(1, EVIL, 10, "in")
    ui.event(TransferStarted(t))
    ui.event(TransferFailed(t, EVIL))
    ui.event(PeerDisconnected(EVIL, "error", EVIL))
    ui.event(Info(f"handshake done: hello from {EVIL}", "connecting"))
    shown = out.getvalue() + err.getvalue()
    for raw in ("\x1b", "\x07", "\u009b", "\u202e", "\r"):
        assert raw not in shown, repr(raw)
    assert "\\x1b]0;owned\\x07\\x1b[2J" in shown and "\\u202eevil\\nhi\\r\\n" in shown
    assert "* peer connected: \\x1b]0;owned\\x07" in shown  # nothing dropped before escaping
    assert not any(line.startswith("* transfer finished") for line in shown.splitlines())
    assert len(shown.splitlines()) == 6  # one line per event


def test_progress_bar_name_is_not_markup():
    out = io.StringIO()
    ui = TerminalUI(lambda line: None, lambda: None, stdin_fd=0, stdout=out, stderr=out,
                    interactive=True)
    ui.event(TransferStarted(Transfer(1, "[link=http://x]\x1b]0;t\x07[/link][blink]b", 10, "in")))
    shown = out.getvalue()
    assert "[link=http://x]" in shown and "[blink]" in shown
    assert "\x1b]" not in shown and "\\x1b]0;t\\x07" in shown


# ------------------------------------------------------- finding 9: offer flood
def test_offer_flood_is_bounded_and_own_send_works(tmp_path):
    async def main():
        ea, eb = await endpoint(), await endpoint()
        downloads = tmp_path / "a"
        a = Side("alice", ea, eb.local_address[1], downloads)
        fake = Rendezvous(eb, ("127.0.0.1", a.port), "mallory", CONFIG)
        link = await asyncio.wait_for(fake.meet(), 10)
        await a.wait_for(lambda e: isinstance(e, PeerConnected))
        limit = ChatLimits().max_incoming
        n = 300
        for i in range(1, n + 1):
            size = 10**12 if i == 1 else 1000
            link.writer.write(framing.encode_json(FrameType.OFFER, {"id": i, "name": f"f{i}", "size": size}))
        results = {}
        while len(results) < n - limit:
            frame = await asyncio.wait_for(framing.read_frame(link.reader), 10)
            if frame.type == FrameType.RESULT:
                results[frame.json()["id"]] = frame.json()
        assert results[1]["ok"] is False and "free space" in results[1]["reason"]
        assert sum("too many transfers" in r["reason"] for r in results.values()) == n - limit - 1
        session = a.app.session
        assert len(session.incoming) == limit
        assert len(list(downloads.iterdir())) == limit  # open .part files
        assert len(a.of(TransferStarted)) == limit
        assert len(a.of(TransferFailed)) <= 3  # a line a second, not one per offer
        # The user's own /send still works.
        src = tmp_path / "mine.txt"
        src.write_text("my own file")
        a.app.handle_line(f"/send {src}")
        while True:
            frame = await asyncio.wait_for(framing.read_frame(link.reader), 10)
            if frame.type == FrameType.OFFER:
                assert frame.json()["name"] == "mine.txt"
                break
        link.writer.close()
        await a.wait_for(lambda e: isinstance(e, PeerDisconnected))
        assert list(downloads.iterdir()) == []
        await a.stop()
        fake.close()

    run(main())


# -------------------------------------------- finding 11: names and claim()
@pytest.mark.timeout(10)
def test_claim_skips_a_dangling_symlink(tmp_path):
    (tmp_path / "x.bin").symlink_to(tmp_path / "nowhere")
    got = claim(tmp_path, "x.bin")
    assert got.name == "x (1).bin" and got.is_file() and not (tmp_path / "nowhere").exists()


def test_safe_name_drops_c1_and_bidi_and_fits():
    assert safe_name("a\u202egpj.exe") == "a_gpj.exe"
    assert safe_name("a\x9bb\u2066c") == "a_b_c"
    long = safe_name("é" * 300)
    assert len(long.encode()) <= 200 and long == "é" * 100
