"""Chat sessions without a terminal: two ChatApps (or a scripted peer) in one loop."""

import asyncio
import hashlib
import os
import time

import pytest

from gannet.apps.chat import framing
from gannet.apps.chat.framing import FrameType
from gannet.apps.chat.rendezvous import Rendezvous
from gannet.apps.chat.session import (
    ChatApp, Info, Message, PeerConnected, PeerDisconnected, TransferFailed, TransferFinished,
    TransferStarted,
)
from gannet.io.endpoint import create_endpoint, make_config

pytestmark = pytest.mark.timeout(60)

CONFIG = make_config(None, {"keepalive_idle": 1.0, "keepalive_interval": 0.5, "keepalive_count": 3,
                            "idle_timeout": 4.0, "send_buffer_size": 256 * 1024})


class Side:
    """One chat participant: a ChatApp whose events are collected."""

    def __init__(self, name, aep, peer_port, downloads):
        self.name = name
        self.events = []
        self.changed = asyncio.Event()
        self.rv = Rendezvous(aep, ("127.0.0.1", peer_port), name, CONFIG,
                             status=lambda text: self.emit(Info(text, "connecting")))
        self.port = aep.local_address[1]
        self.app = ChatApp(self.rv, name, downloads, self.emit)
        self.task = asyncio.get_running_loop().create_task(self.app.run())

    def emit(self, ev):
        self.events.append(ev)
        self.changed.set()

    def of(self, kind):
        return [e for e in self.events if isinstance(e, kind)]

    async def wait_for(self, pred, timeout=10.0, what="event"):
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.events:
                if pred(ev):
                    return ev
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name}: no {what} in {self.events!r}")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def stop(self):
        self.app.quit()
        await asyncio.wait_for(self.task, 10)


async def endpoint(port=0):
    return await create_endpoint("127.0.0.1", port, config=CONFIG)


async def pair(tmp_path, delay=0.0):
    ea, eb = await endpoint(), await endpoint()
    a = Side("alice", ea, eb.local_address[1], tmp_path / "a")
    if delay:
        await asyncio.sleep(delay)
    b = Side("bob", eb, ea.local_address[1], tmp_path / "b")
    for side, other in ((a, "bob"), (b, "alice")):
        await side.wait_for(lambda e, o=other: isinstance(e, PeerConnected) and e.name == o,
                            what="peer connected")
    return a, b


def run(coro):
    asyncio.run(coro)


@pytest.mark.parametrize("delay", [0.0, 0.001, 0.7])
def test_meet_and_talk(tmp_path, delay):
    async def main():
        a, b = await pair(tmp_path, delay)
        # One connection per side, whatever the timing.
        assert len(a.rv.aep.ep.connections) == 1 and len(b.rv.aep.ep.connections) == 1
        # Each side showed the handshake and the sync; how the kept connection
        # was opened reads consistently from both ends.
        for side in (a, b):
            texts = [e.text for e in side.of(Info)]
            assert any(t.startswith("handshake done: ") for t in texts), texts
            assert sum(t.startswith("synced: greetings exchanged with ") for t in texts) == 1
        ways = {side.name: [e.text for e in side.of(Info) if "handshake done" in e.text]
                for side in (a, b)}
        if delay == 0.0:
            # Both connect in the same loop iteration: the SYNs cross.
            assert all(any("simultaneous open: both SYNs crossed" in t for t in ways[n])
                       for n in ways), ways
        elif any("simultaneous open" in t for t in ways["alice"] + ways["bob"]):
            assert all(any("simultaneous open" in t for t in ways[n]) for n in ways), ways
        else:
            assert any("accepted" in t for t in ways["alice"] + ways["bob"]), ways
        a.app.handle_line("hello bob")
        b.app.handle_line("hi alice ✓")
        m = await b.wait_for(lambda e: isinstance(e, Message) and not e.own, what="message")
        assert (m.name, m.text) == ("alice", "hello bob")
        m = await a.wait_for(lambda e: isinstance(e, Message) and not e.own, what="message")
        assert (m.name, m.text) == ("bob", "hi alice ✓")
        assert [e.text for e in a.of(Message) if e.own] == ["hello bob"]
        a.app.handle_line("//send is just text")
        m = await b.wait_for(lambda e: isinstance(e, Message) and e.text.startswith("/"))
        assert m.text == "/send is just text"
        await a.stop()
        await b.stop()

    run(main())


def test_help_and_bad_commands(tmp_path):
    async def main():
        ep = await endpoint()
        a = Side("alice", ep, 9, tmp_path / "a")  # nobody there: stays connecting
        for line in ("help", "/help"):
            a.app.handle_line(line)
        helps = [e for e in a.events if isinstance(e, Info) and e.kind == "help"]
        assert len(helps) == 2 and "/send PATH" in helps[0].text and "/quit" in helps[0].text
        a.app.handle_line("/frobnicate")
        a.app.handle_line("/send")
        a.app.handle_line(f"/send {tmp_path / 'missing.bin'}")
        errors = [e.text for e in a.events if isinstance(e, Info) and e.kind == "error"]
        assert "unknown command /frobnicate" in errors[0]
        assert "usage: /send PATH" in errors[1]
        assert "does not exist" in errors[2]
        a.app.handle_line("early bird")
        assert a.app.queued == ["early bird"]
        a.app.handle_line("/quit")
        await asyncio.wait_for(a.task, 5)

    run(main())


def test_file_transfer_interleaved_with_chat(tmp_path):
    async def main():
        a, b = await pair(tmp_path)
        src = tmp_path / "blob.bin"
        data = os.urandom(3_000_000) + bytes(range(256)) * 100
        src.write_bytes(data)
        a.app.handle_line(f"/send {src}")
        a.app.handle_line("this overtakes the file")
        m = await b.wait_for(lambda e: isinstance(e, Message) and not e.own)
        incoming = b.of(TransferStarted)[0].transfer
        assert incoming.done < incoming.size, "the chat message waited for the whole file"
        assert m.text == "this overtakes the file"
        done = await b.wait_for(lambda e: isinstance(e, TransferFinished), what="received")
        assert done.transfer.path == tmp_path / "b" / "blob.bin"
        assert hashlib.sha256(done.transfer.path.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
        assert done.transfer.sha256 == hashlib.sha256(data).hexdigest()
        sent = await a.wait_for(lambda e: isinstance(e, TransferFinished), what="sent")
        assert sent.transfer.direction == "out"
        # The same name again never overwrites; an empty file works too.
        a.app.handle_line(f"/send {src}")
        (tmp_path / "empty").write_bytes(b"")
        a.app.handle_line(f"/send {tmp_path / 'empty'}")
        await b.wait_for(lambda e: isinstance(e, TransferFinished) and e.transfer.name == "empty")
        await b.wait_for(lambda e: isinstance(e, TransferFinished) and e.transfer.path.name == "blob (1).bin")
        assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["blob (1).bin", "blob.bin", "empty"]
        assert (tmp_path / "b" / "blob (1).bin").read_bytes() == data
        await a.stop()
        await b.stop()

    run(main())


def test_quit_and_reconnect_then_unreachable(tmp_path):
    async def main():
        a, b = await pair(tmp_path)
        port_b = b.port
        b.app.handle_line("/quit")
        await asyncio.wait_for(b.task, 10)
        ev = await a.wait_for(lambda e: isinstance(e, PeerDisconnected), what="disconnect")
        assert ev.how == "clean"
        # Bob comes back on the same port: alice was waiting for him.
        b2 = Side("bob", await endpoint(port_b), a.port, tmp_path / "b")
        await a.wait_for(lambda e: len(a.of(PeerConnected)) == 2, what="second peer connected")
        await b2.wait_for(lambda e: isinstance(e, PeerConnected))
        # Alice's greeting is acknowledged before bob vanishes: a peer gone
        # silent while data of ours is in flight is found by the
        # retransmissions giving up, not by the keep-alive this test is
        # about (bob's ACK of it waits up to ack_delay when his own greeting
        # left before hers was read).
        deadline = time.monotonic() + 5
        while any(c.bytes_in_flight for c in a.rv.aep.ep.connections):
            assert time.monotonic() < deadline, "alice's greeting never acknowledged"
            await asyncio.sleep(0.005)
        # Now bob vanishes without a word (socket closed, no FIN).
        b2.task.cancel()
        b2.rv.aep.close()
        ev = await a.wait_for(lambda e: isinstance(e, PeerDisconnected) and e.how != "clean",
                              timeout=15, what="unreachable")
        assert ev.how == "unreachable", ev
        # Found by the keep-alive configured here (3 probes), not by a later
        # fallback (the 4 s idle timeout, or retransmissions giving up).
        assert ev.detail.startswith("peer unreachable: 3 keep-alive probes unanswered"), ev.detail
        await a.stop()

    run(main())


def test_checksum_mismatch_fails_transfer(tmp_path):
    async def main():
        ea, eb = await endpoint(), await endpoint()
        a = Side("alice", ea, eb.local_address[1], tmp_path / "a")
        fake = Rendezvous(eb, ("127.0.0.1", a.port), "mallory", CONFIG)
        link = await asyncio.wait_for(fake.meet(), 10)
        w = link.writer
        payload = b"genuine bytes" * 1000
        w.write(framing.encode_json(FrameType.OFFER, {"id": 1, "name": "x.bin", "size": len(payload)}))
        w.write(framing.encode_chunk(1, payload))
        w.write(framing.encode_json(FrameType.END, {"id": 1, "sha256": hashlib.sha256(b"other").hexdigest()}))
        # An oversized one is refused as soon as it overflows.
        w.write(framing.encode_json(FrameType.OFFER, {"id": 2, "name": "y.bin", "size": 3}))
        w.write(framing.encode_chunk(2, b"four"))
        ev = await a.wait_for(lambda e: isinstance(e, TransferFailed) and e.transfer.id == 1)
        assert "checksum mismatch" in ev.reason
        ev = await a.wait_for(lambda e: isinstance(e, TransferFailed) and e.transfer.id == 2)
        assert "more data" in ev.reason
        verdicts = []
        while len(verdicts) < 2:
            frame = await asyncio.wait_for(framing.read_frame(link.reader), 5)
            if frame.type == FrameType.RESULT:
                verdicts.append(frame.json())
        assert [v["ok"] for v in verdicts] == [False, False]
        assert list((tmp_path / "a").iterdir()) == []  # nothing announced, no .part left
        assert not a.of(TransferFinished)
        w.close()
        await a.wait_for(lambda e: isinstance(e, PeerDisconnected))
        await a.stop()
        fake.close()

    run(main())


def test_input_end_sends_queued_lines_then_quits(tmp_path):
    async def main():
        ea, eb = await endpoint(), await endpoint()
        a = Side("alice", ea, eb.local_address[1], tmp_path / "a")
        src = tmp_path / "f.txt"
        src.write_text("piped file\n")
        a.app.handle_line("queued before the peer came")
        a.app.handle_line(f"/send {src}")
        a.app.close_input()
        b = Side("bob", eb, a.port, tmp_path / "b")
        await b.wait_for(lambda e: isinstance(e, Message) and e.text == "queued before the peer came")
        await b.wait_for(lambda e: isinstance(e, TransferFinished))
        await asyncio.wait_for(a.task, 10)  # alice left by herself
        ev = await b.wait_for(lambda e: isinstance(e, PeerDisconnected))
        assert ev.how == "clean"
        assert (tmp_path / "b" / "f.txt").read_text() == "piped file\n"
        await b.stop()

    run(main())


def test_wrong_code_ends_both_chats_at_once(tmp_path):
    """Each side was given another code: both rendezvous fail with the
    reason within a second, instead of retrying for ever."""
    from gannet.crypto.endpoint import HandshakeFailed

    async def main():
        ca, cb = CONFIG.with_(code="2-alpha-beta"), CONFIG.with_(code="2-alpha-gamma")
        ea = await create_endpoint("127.0.0.1", 0, config=ca)
        eb = await create_endpoint("127.0.0.1", 0, config=cb)
        ra = Rendezvous(ea, ("127.0.0.1", eb.local_address[1]), "alice", ca)
        rb = Rendezvous(eb, ("127.0.0.1", ea.local_address[1]), "bob", cb)
        start = time.monotonic()
        results = await asyncio.wait_for(asyncio.gather(ra.meet(), rb.meet(), return_exceptions=True), 10)
        assert time.monotonic() - start < 3
        for res in results:
            assert isinstance(res, HandshakeFailed) and "wrong code" in str(res), results
        ra.close()
        rb.close()

    run(main())
