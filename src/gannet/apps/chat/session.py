"""The chat without a terminal: a session over one link, and the app around it.

`ChatSession` speaks the frame protocol over one greeted connection (text
messages, file transfers interleaved with them, clean quit). `ChatApp` keeps
meeting the peer through a `Rendezvous`, runs a session each time, and
interprets input lines (`help`, `/send`, `/quit`, text). Both report what
happens as `Event` objects to one callback, which the terminal UI renders
and tests collect.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..limits import ChatLimits
from . import framing
from .framing import Frame, FrameType, FramingError
from .rendezvous import Link, Rendezvous, _fmt
from .transfer import CHUNK_SIZE, Incoming, Transfer, safe_name

log = logging.getLogger("gannet.chat")

QUIT_LINGER = 3.0  # longest /quit waits for the peer to acknowledge our FIN
REFUSAL_LINE_INTERVAL = 1.0  # refused offers beyond one a second are counted, not each shown

HELP = """commands:
  TEXT          send a message (start it with // to send a line beginning with /)
  /send PATH    send a file (any type and size; chat continues meanwhile)
  help, /help   show this list
  /quit         leave (the peer sees "peer disconnected"); Ctrl-D does the same"""


# ------------------------------------------------------------------ events
@dataclass(frozen=True)
class Event:
    pass


@dataclass(frozen=True)
class Info(Event):
    text: str
    kind: str = "info"  # info, connecting, help, error


@dataclass(frozen=True)
class PeerConnected(Event):
    name: str
    address: str


@dataclass(frozen=True)
class PeerDisconnected(Event):
    name: str
    how: str  # "clean", "unreachable", "reset", "error"
    detail: str = ""


@dataclass(frozen=True)
class Message(Event):
    name: str
    text: str
    time: datetime
    own: bool = False


@dataclass(frozen=True)
class TransferStarted(Event):
    transfer: Transfer


@dataclass(frozen=True)
class TransferFinished(Event):
    transfer: Transfer


@dataclass(frozen=True)
class TransferFailed(Event):
    transfer: Transfer
    reason: str


Emit = Callable[[Event], None]


# ----------------------------------------------------------------- session
class ChatSession:
    """One conversation over one link; `run()` returns how it ended."""

    def __init__(self, link: Link, name: str, downloads: Path, emit: Emit,
                 limits: ChatLimits | None = None) -> None:
        self.link = link
        self.name = name
        self.downloads = downloads
        self.emit = emit
        self.limits = limits or ChatLimits()
        self._refused_shown_at = -REFUSAL_LINE_INTERVAL
        self._refused_unshown = 0
        self.writer = link.writer
        self.outgoing: dict[int, Transfer] = {}
        self.incoming: dict[int, Incoming] = {}
        self._results: dict[int, asyncio.Future] = {}
        self._tasks: set[asyncio.Task] = set()
        self._ids = itertools.count(1)
        self._closing = False
        self.bye_received = False

    @property
    def peer(self) -> str:
        return self.link.peer_name

    # -------------------------------------------------------- outgoing
    def _write(self, data: bytes) -> None:
        if self._closing:
            raise ConnectionError("session is closing")
        self.writer.write(data)

    def send_text(self, text: str) -> None:
        self._write(framing.encode_json(FrameType.MESSAGE, {"text": text, "time": time.time()}))
        self.emit(Message(self.name, text, datetime.now(), own=True))

    def send_file(self, path: Path) -> Transfer:
        """Start sending `path`; raises OSError at once if it cannot be read."""
        path = Path(path).expanduser()
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a directory")
        f = open(path, "rb")  # noqa: SIM115 - the transfer task closes it
        size = path.stat().st_size
        t = Transfer(next(self._ids), path.name, size, "out", path)
        self.outgoing[t.id] = t
        self._results[t.id] = asyncio.get_running_loop().create_future()
        task = asyncio.get_running_loop().create_task(self._send_file(t, f))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return t

    async def _send_file(self, t: Transfer, f) -> None:
        writer = self.writer
        digest = hashlib.sha256()
        try:
            with f:
                self._write(framing.encode_json(
                    FrameType.OFFER, {"id": t.id, "name": t.name, "size": t.size}))
                self.emit(TransferStarted(t))
                while True:
                    chunk = f.read(CHUNK_SIZE)
                    if not chunk:
                        break
                    if t.done + len(chunk) > t.size:
                        raise OSError(f"{t.name} grew while being sent")
                    digest.update(chunk)
                    self._write(framing.encode_chunk(t.id, chunk))
                    t.done += len(chunk)
                    await writer.drain()
                    await asyncio.sleep(0)  # let chat frames and the reader in
                    if self._results[t.id].done():
                        break  # the receiver rejected it already
                if self._results[t.id].done():
                    ok, reason = self._results[t.id].result()
                    self._fail(t, f"peer rejected it: {reason}")
                    return
                if t.done != t.size:
                    raise OSError(f"{t.name} shrank while being sent")
            t.sha256 = digest.hexdigest()
            self._write(framing.encode_json(FrameType.END, {"id": t.id, "sha256": t.sha256}))
            t.state = "verifying"
            ok, reason = await self._results[t.id]
        except asyncio.CancelledError:
            self._fail(t, "connection closed")
            raise
        except Exception as exc:  # noqa: BLE001 - reported as a failed transfer
            reason = _describe(exc)
            with contextlib.suppress(Exception):
                self._write(framing.encode_json(FrameType.ABORT, {"id": t.id, "reason": reason}))
            self._fail(t, reason)
            return
        finally:
            self._results.pop(t.id, None)
        if ok:
            t.finish("finished")
            self.outgoing.pop(t.id, None)
            self.emit(TransferFinished(t))
        else:
            self._fail(t, f"peer rejected it: {reason}")

    def _fail(self, t: Transfer, reason: str) -> None:
        if not t.active:
            return
        t.finish("failed", reason)
        self.outgoing.pop(t.id, None)
        self.emit(TransferFailed(t, reason))

    @property
    def sending(self) -> bool:
        return bool(self.outgoing)

    async def quit(self) -> None:
        """Say goodbye and close; waits briefly for the peer to acknowledge."""
        if self._closing:
            return
        with contextlib.suppress(Exception):
            self._write(framing.encode_json(FrameType.BYE, {}))
        self._closing = True
        self._teardown(PeerDisconnected(self.peer, "clean"))
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), QUIT_LINGER)

    # -------------------------------------------------------- incoming
    async def run(self) -> PeerDisconnected:
        """Read frames until the connection ends; returns the disconnect event
        (also emitted unless we quit ourselves)."""
        reader = self.link.reader
        ended: PeerDisconnected
        try:
            while True:
                frame = await framing.read_frame(reader)
                if frame is None:
                    ended = PeerDisconnected(self.peer, "clean")
                    break
                self._dispatch(frame)
        except TimeoutError as exc:
            ended = PeerDisconnected(self.peer, "unreachable", str(exc))
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            ended = PeerDisconnected(self.peer, "reset", _describe(exc))
        except (FramingError, ValueError, KeyError, TypeError) as exc:
            ended = PeerDisconnected(self.peer, "error", f"protocol error: {exc}")
            self.writer.abort()
        self._teardown(ended)
        if not self._closing:
            self._closing = True
            self.writer.close()
            self.emit(ended)
        return ended

    def _teardown(self, ended: PeerDisconnected) -> None:
        if self._closing:
            reason = "cancelled: you quit"
        elif ended.how == "clean":
            reason = "peer disconnected"
        else:
            reason = f"connection lost ({ended.how})"
        for inc in list(self.incoming.values()):
            inc.discard()
            inc.transfer.finish("failed", reason)
            self.emit(TransferFailed(inc.transfer, reason))
        self.incoming.clear()
        for task in list(self._tasks):
            task.cancel()
        for t in list(self.outgoing.values()):
            self._fail(t, reason)
        for fut in self._results.values():
            if not fut.done():
                fut.cancel()

    def _dispatch(self, frame: Frame) -> None:
        kind = frame.type
        if kind == FrameType.CHUNK:
            tid, data = frame.chunk()
            inc = self.incoming.get(tid)
            if inc is None:
                return  # a transfer we already failed: drop the rest
            try:
                inc.write(data)
            except (OSError, ValueError) as exc:
                self._reject(inc, _describe(exc))
            return
        obj = frame.json()
        if kind == FrameType.MESSAGE:
            self.emit(Message(self.peer, str(obj.get("text", "")), datetime.now()))
        elif kind == FrameType.OFFER:
            self._on_offer(obj)
        elif kind == FrameType.END:
            inc = self.incoming.pop(int(obj["id"]), None)
            if inc is None:
                return
            try:
                inc.complete(str(obj.get("sha256", "")))
            except (OSError, ValueError) as exc:
                self._reject(inc, _describe(exc), popped=True)
                return
            inc.transfer.finish("finished")
            self._write(framing.encode_json(FrameType.RESULT, {"id": inc.transfer.id, "ok": True}))
            self.emit(TransferFinished(inc.transfer))
        elif kind == FrameType.RESULT:
            fut = self._results.get(int(obj["id"]))
            if fut is not None and not fut.done():
                fut.set_result((bool(obj.get("ok")), str(obj.get("reason", ""))))
        elif kind == FrameType.ABORT:
            inc = self.incoming.pop(int(obj["id"]), None)
            if inc is not None:
                inc.discard()
                reason = f"sender gave up: {obj.get('reason', '')}"
                inc.transfer.finish("failed", reason)
                self.emit(TransferFailed(inc.transfer, reason))
        elif kind == FrameType.BYE:
            self.bye_received = True
        elif kind in (FrameType.HELLO, FrameType.SELECT):
            pass  # late duplicates of the greeting
        else:
            raise FramingError(f"unexpected {kind.name} frame")

    def _on_offer(self, obj: dict) -> None:
        tid, size = int(obj["id"]), int(obj["size"])
        if size < 0:
            raise ValueError("negative file size")
        if tid in self.incoming:
            raise FramingError(f"OFFER reuses the id {tid} of a transfer in progress")
        t = Transfer(tid, safe_name(str(obj.get("name", ""))), size, "in")
        if len(self.incoming) >= self.limits.max_incoming:
            self._refuse(t, f"too many transfers at once (at most {self.limits.max_incoming})")
            return
        free = _free_bytes(self.downloads)
        if free is not None:  # what the transfers under way still need is taken already
            free -= sum(i.transfer.size - i.transfer.done for i in self.incoming.values())
        if free is not None and size > free - self.limits.min_free_bytes:
            self._refuse(t, f"not enough free space (the file needs {size} bytes, "
                            f"{max(free - self.limits.min_free_bytes, 0)} available)")
            return
        try:
            inc = Incoming(t, self.downloads)
        except OSError as exc:
            self._refuse(t, _describe(exc))
            return
        self.incoming[tid] = inc
        self.emit(TransferStarted(t))

    def _refuse(self, t: Transfer, reason: str) -> None:
        """Refuse an offer: the peer gets a RESULT at once; the user sees a line,
        unless refusals come faster than one a second (a flood of offers then
        costs one line a second, saying how many were refused meanwhile)."""
        t.finish("failed", reason)
        self._write(framing.encode_json(
            FrameType.RESULT, {"id": t.id, "ok": False, "reason": reason}))
        now = time.monotonic()
        if now - self._refused_shown_at < REFUSAL_LINE_INTERVAL:
            self._refused_unshown += 1
            return
        if self._refused_unshown:
            reason += f" ({self._refused_unshown} more offers refused before this one)"
        self._refused_shown_at, self._refused_unshown = now, 0
        self.emit(TransferFailed(t, reason))

    def _reject(self, inc: Incoming, reason: str, popped: bool = False) -> None:
        if not popped:
            self.incoming.pop(inc.transfer.id, None)
        inc.discard()
        inc.transfer.finish("failed", reason)
        self._write(framing.encode_json(
            FrameType.RESULT, {"id": inc.transfer.id, "ok": False, "reason": reason}))
        self.emit(TransferFailed(inc.transfer, reason))


def _free_bytes(folder: Path) -> int | None:
    """Bytes free for an unprivileged user where `folder` is (or would be made)."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        st = os.statvfs(probe)
    except (AttributeError, OSError):
        return None
    return st.f_bavail * st.f_frsize


def _describe(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"no such file: {exc.filename}"
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


# ---------------------------------------------------------------------- app
class ChatApp:
    """Meets the peer again and again, runs sessions, interprets input lines."""

    def __init__(self, rendezvous: Rendezvous, name: str, downloads: Path, emit: Emit,
                 limits: ChatLimits | None = None) -> None:
        self.rv = rendezvous
        self.limits = limits or ChatLimits()
        self.name = name
        self.downloads = downloads
        self.emit = emit
        self.session: ChatSession | None = None
        self.queued: list[str] = []  # lines typed while no peer was connected
        self.input_closed = False
        self._quit = asyncio.Event()
        self._sessions_started = 0

    @property
    def connected(self) -> bool:
        return self.session is not None and not self.session._closing

    async def run(self) -> None:
        """Until /quit (or input ended and everything was sent)."""
        quit_wait = asyncio.create_task(self._quit.wait())
        try:
            while not self._quit.is_set():
                meet = asyncio.create_task(self.rv.meet())
                await asyncio.wait({meet, quit_wait}, return_when=asyncio.FIRST_COMPLETED)
                if not meet.done():
                    meet.cancel()
                    with contextlib.suppress(BaseException):
                        await meet
                    break
                link = meet.result()
                session = ChatSession(link, self.name, self.downloads, self.emit, self.limits)
                self.session = session
                self._sessions_started += 1
                self.emit(PeerConnected(link.peer_name, _fmt(link.peer_address)))
                for line in self.queued:
                    self.handle_line(line)
                self.queued.clear()
                self._maybe_finish()
                reading = asyncio.create_task(session.run())
                await asyncio.wait({reading, quit_wait}, return_when=asyncio.FIRST_COMPLETED)
                if not reading.done():  # we quit
                    await session.quit()
                    reading.cancel()
                    with contextlib.suppress(BaseException):
                        await reading
                self.session = None
        finally:
            quit_wait.cancel()
            if self.session is not None:
                await self.session.quit()
            self.rv.close()

    def quit(self) -> None:
        self._quit.set()

    def close_input(self) -> None:
        """Input ended (Ctrl-D, end of a pipe): quit once queued work is sent."""
        self.input_closed = True
        if self.session is None and not self.queued:
            self.quit()
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        if not self.input_closed or self.session is None:
            return
        session = self.session
        if not session.sending:
            self.quit()
            return

        async def later() -> None:
            while session.sending and self.session is session:
                await asyncio.sleep(0.05)
            self.quit()

        asyncio.get_running_loop().create_task(later())

    def handle_line(self, line: str) -> None:
        line = line.rstrip("\r\n")
        stripped = line.strip()
        if not stripped:
            return
        if stripped in ("help", "/help", "/?"):
            self.emit(Info(HELP, "help"))
            return
        if stripped in ("/quit", "/exit", "/q"):
            self.quit()
            return
        if stripped.startswith("/") and not stripped.startswith("//"):
            cmd, _, arg = stripped.partition(" ")
            if cmd != "/send":
                self.emit(Info(f"unknown command {cmd}; type help for the list", "error"))
                return
            if not arg.strip():
                self.emit(Info("usage: /send PATH", "error"))
                return
            path = Path(_unquote(arg.strip())).expanduser()
            if not path.is_file():
                what = "is not a regular file" if path.exists() else "does not exist"
                self.emit(Info(f"cannot send {path}: it {what}", "error"))
                return
        if not self.connected:
            self.queued.append(line)
            self.emit(Info("not connected yet: will send when the peer connects"))
            return
        session = self.session
        assert session is not None
        if stripped.startswith("/send"):
            try:
                session.send_file(path)
            except OSError as exc:
                self.emit(Info(f"cannot send {path}: {_describe(exc)}", "error"))
            return
        text = line.lstrip()[1:] if stripped.startswith("//") else line
        try:
            session.send_text(text)
        except ConnectionError:
            self.emit(Info("not sent: the connection is closing", "error"))


def _unquote(arg: str) -> str:
    if len(arg) >= 2 and arg[0] == arg[-1] and arg[0] in "'\"":
        return arg[1:-1]
    return arg
