"""`gannet bench`: measure goodput between two hosts, iperf3-style.

One test is a control connection plus K data connections:

    client -> server   {"type": "hello", "version": 1, "test_id": ..., "reverse": ...,
                        "parallel": K, "bytes": N | null, "time": S, "interval": I,
                        "mtu": M | null, "cc": NAME | null}
    server -> client   {"type": "ready", "data_port": P}   (or {"type": "error", "message": ...})

The server opens a data listener for this test only (on an ephemeral port, with
the test's datagram size and congestion control, so both directions use them)
and the client opens K connections to it, each starting with one line
{"test_id": ..., "stream": i}. Then the sender (the client, or the server with
--reverse) writes a deterministic pattern on every stream until the byte count
or the duration is reached, half-closes, and waits until everything is
acknowledged. The sender samples its connections every interval (bytes
delivered, retransmissions, cwnd, srtt); a server sender sends those samples as
{"type": "interval", ...} lines so the client can print them as they happen.
The sender ends with {"type": "done", "sent": [...], ...}; the receiver answers
with {"type": "result", "received": [...], "verified": [...], ...}.

The receiver verifies each stream without looking at single bytes in Python:
a running CRC32C over what arrived must equal the CRC32C of the same number of
pattern bytes, and the count must equal what the sender says it sent (and, for
--bytes, the stream's share).
"""

from __future__ import annotations

import asyncio
import json
import random
import resource
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from gannet.wire.checksum import crc32c

import gannet
from gannet.config import Config
from gannet.core import cc as cc_registry
from gannet.io.endpoint import make_config
from gannet.observe import diagnose

PROTOCOL_VERSION = 1
PATTERN_LEN = 1024 * 1024 + 4099  # odd length: never lines up with segments or chunks
WRITE_CHUNK = 256 * 1024
READ_CHUNK = 1024 * 1024
DATA_IDLE_TIMEOUT = 10.0  # a data connection silent this long ends the test
CONTROL_TIMEOUT = 15.0  # for a control message that must come "now"
MAX_LINE = 64 * 1024


class BenchError(Exception):
    """A test could not run or was cut short; the message is one line for people."""


# --------------------------------------------------------------------- params
@dataclass
class Params:
    test_id: str = field(default_factory=lambda: secrets.token_hex(4))
    reverse: bool = False
    parallel: int = 1
    bytes: int | None = None
    """Total bytes over all streams; None: run for `time` seconds."""
    time: float = 10.0
    interval: float = 1.0
    mtu: int | None = None
    cc: str | None = None

    def overrides(self) -> dict[str, Any]:
        """Connection settings for the data connections (both ends)."""
        out: dict[str, Any] = {}
        if self.mtu is not None:
            out["mtu"] = self.mtu
            names = Config.names()
            if "pmtud" in names:  # a pinned size: no path MTU discovery
                out["pmtud"] = False
            if "pmtud_max" in names and self.mtu > Config().pmtud_max:
                out["pmtud_max"] = self.mtu
        if self.cc is not None:
            out["cc"] = self.cc
        return out

    def data_settings(self) -> dict[str, Any]:
        # track_limits: the info and verdict say what held each sender back
        return {**self.overrides(), "idle_timeout": DATA_IDLE_TIMEOUT, "track_limits": True}

    def validate(self) -> None:
        """Raise BenchError for settings that cannot run."""
        if self.parallel < 1 or self.parallel > 128:
            raise BenchError("parallel must be between 1 and 128")
        if self.bytes is not None and self.bytes < 1:
            raise BenchError("bytes must be positive")
        if self.bytes is None and not 0 < self.time <= 86400:
            raise BenchError("time must be between 0 and 86400 seconds")
        if not 0 < self.interval <= 3600:
            raise BenchError("interval must be positive")
        if self.cc is not None and self.cc not in cc_registry.available():
            raise BenchError(f"unknown congestion control {self.cc!r}; "
                             f"available: {', '.join(cc_registry.available())}")
        try:
            make_config(None, self.overrides())
        except (TypeError, ValueError) as exc:
            raise BenchError(f"--mtu {self.mtu}: {exc}" if self.mtu is not None else str(exc)) from None

    def share(self, stream: int) -> int | None:
        """Bytes stream `stream` carries in a --bytes test."""
        if self.bytes is None:
            return None
        base, extra = divmod(self.bytes, self.parallel)
        return base + (1 if stream < extra else 0)

    def to_wire(self) -> dict[str, Any]:
        return {"type": "hello", "version": PROTOCOL_VERSION, **asdict(self)}

    @classmethod
    def from_wire(cls, msg: dict[str, Any]) -> Params:
        if msg.get("type") != "hello":
            raise BenchError("expected a hello message")
        if msg.get("version") != PROTOCOL_VERSION:
            raise BenchError(f"protocol version {msg.get('version')!r} is not {PROTOCOL_VERSION}")
        try:
            p = cls(
                test_id=str(msg["test_id"])[:64],
                reverse=bool(msg["reverse"]),
                parallel=int(msg["parallel"]),
                bytes=None if msg["bytes"] is None else int(msg["bytes"]),
                time=float(msg["time"]),
                interval=float(msg["interval"]),
                mtu=None if msg["mtu"] is None else int(msg["mtu"]),
                cc=None if msg["cc"] is None else str(msg["cc"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BenchError(f"malformed hello: {exc}") from None
        p.validate()
        return p


# -------------------------------------------------------------------- pattern
def pattern(test_id: str, stream: int) -> bytes:
    """The bytes stream `stream` repeats: seeded by the test and the stream, so
    streams that got crossed do not verify."""
    return random.Random(f"gannet-bench:{test_id}:{stream}").randbytes(PATTERN_LEN)


def pattern_crc(pat: bytes, n: int) -> int:
    """CRC32C of the first n bytes of `pat` repeated."""
    whole, rest = divmod(n, len(pat))
    crc = 0
    for _ in range(whole):
        crc = crc32c(pat, crc)
    return crc32c(memoryview(pat)[:rest], crc)


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# ------------------------------------------------------------------- sampling
def wire_datagram_size(writer) -> int | None:
    """The size of the connection's datagrams on the wire: what the
    connection uses plus the encryption envelope around it, if any."""
    size = getattr(writer.get_extra_info("connection"), "max_datagram_size", None)
    aep = writer.get_extra_info("endpoint")
    if size is None:
        return None
    return size + getattr(getattr(aep, "ep", None), "datagram_overhead", 0)


def _conn(writer: gannet.StreamWriter):
    return writer.get_extra_info("connection")


def _cwnd(conn) -> int | None:
    cc = getattr(conn, "cc", None)
    return getattr(cc, "cwnd", None)


def _min_rtt(conn) -> float | None:
    rtt = getattr(conn, "rtt", None)
    return getattr(rtt, "min_rtt", None)


def _delivered(conn, written: int) -> int:
    """Bytes the peer has (ACKed or SACKed); `written` bounds it from above."""
    value = getattr(conn, "delivered", None)
    if value is None:
        return written
    return min(int(value), written)


@dataclass
class Snapshot:
    delivered: int
    retransmits: int
    cwnd: int | None
    srtt: float | None


def snapshot(conns: list, written: list[int]) -> Snapshot:
    srtts = [c.srtt for c in conns if c.srtt is not None]
    cwnds = [w for w in (_cwnd(c) for c in conns) if w is not None]
    return Snapshot(
        delivered=sum(_delivered(c, w) for c, w in zip(conns, written)),
        retransmits=sum(c.stats.retransmits for c in conns),
        cwnd=sum(cwnds) if cwnds else None,
        srtt=sum(srtts) / len(srtts) if srtts else None,
    )


def interval_record(start: float, end: float, a: Snapshot, b: Snapshot) -> dict[str, Any]:
    span = max(end - start, 1e-9)
    nbytes = max(0, b.delivered - a.delivered)
    return {
        "start": round(start, 6), "end": round(end, 6), "bytes": nbytes,
        "goodput_bps": nbytes * 8 / span, "retransmits": b.retransmits - a.retransmits,
        "cwnd": b.cwnd, "srtt": b.srtt,
    }


# --------------------------------------------------------------------- sender
@dataclass
class SenderResult:
    sent: list[int]
    seconds: float
    """From the first write until every byte (and FIN) was acknowledged."""
    retransmits: int
    srtt: float | None
    min_rtt: float | None
    datagram_size: int | None
    mss: int | None
    intervals: list[dict[str, Any]]
    error: str | None = None
    info: list[dict[str, Any]] = field(default_factory=list)
    """Each data connection's ConnectionInfo (gannet.observe) once all was acknowledged."""


async def run_sender(writers: list[gannet.StreamWriter], params: Params,
                     on_interval: Callable[[dict[str, Any]], None] | None = None) -> SenderResult:
    """Write the pattern on every stream, half-close, wait until all is acknowledged."""
    conns = [_conn(w) for w in writers]
    written = [0] * len(writers)
    intervals: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = None if params.bytes is not None else start + params.time

    def emit(rec: dict[str, Any]) -> None:
        intervals.append(rec)
        if on_interval is not None:
            on_interval(rec)

    last_t, last = 0.0, snapshot(conns, written)  # the end of the last interval emitted

    async def ticker() -> None:
        nonlocal last_t, last
        prev_t, prev = 0.0, snapshot(conns, written)
        i = 1
        while True:
            due = start + i * params.interval
            if deadline is not None and due > deadline - 0.1 * params.interval:
                return  # the last interval runs until everything is acknowledged
            await asyncio.sleep(max(0.0, due - loop.time()))
            now = loop.time() - start
            cur = snapshot(conns, written)
            emit(interval_record(prev_t, now, prev, cur))
            prev_t, prev = now, cur
            i += 1
            last_t, last = prev_t, prev  # (the end of the last interval emitted)

    async def feed(i: int, writer: gannet.StreamWriter) -> None:
        pat = pattern(params.test_id, i)
        doubled = memoryview(pat + pat[:WRITE_CHUNK])
        limit = params.share(i)
        off = 0
        while True:
            if limit is not None:
                n = min(WRITE_CHUNK, limit - off)
                if n <= 0:
                    break
            else:
                assert deadline is not None  # (no byte count: a run for a time)
                if loop.time() >= deadline:
                    break
                n = WRITE_CHUNK
            pos = off % PATTERN_LEN
            writer.write(doubled[pos:pos + n])
            off += n
            written[i] = off
            await writer.drain()
        writer.write_eof()
        await writer.wait_closed()
        err = getattr(conns[i], "error", None)
        if err is not None:
            raise err

    tick = asyncio.create_task(ticker())
    error = None
    try:
        await asyncio.gather(*(feed(i, w) for i, w in enumerate(writers)))
    except (ConnectionError, OSError) as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    finally:
        tick.cancel()
        try:
            await tick
        except asyncio.CancelledError:
            pass
    end = loop.time() - start
    final = snapshot(conns, written)
    if end - last_t > 0.005 or final.delivered > last.delivered:
        emit(interval_record(last_t, end, last, final))
    mins = [m for m in (_min_rtt(c) for c in conns) if m is not None]
    infos = [w.get_extra_info("gannet_info") for w in writers]
    return SenderResult(
        sent=list(written), seconds=end, retransmits=final.retransmits, srtt=final.srtt,
        min_rtt=min(mins) if mins else None,
        datagram_size=wire_datagram_size(writers[0]),
        mss=getattr(conns[0], "mss", None), intervals=intervals, error=error,
        info=[i.as_dict() for i in infos if i is not None],
    )


# ------------------------------------------------------------------- receiver
@dataclass
class ReceiverResult:
    received: list[int]
    crcs: list[int]
    seconds: float
    """From the first byte to the end of the last stream."""
    error: str | None = None

    def verify(self, params: Params, sent: list[int] | None) -> list[bool]:
        out = []
        for i, (n, crc) in enumerate(zip(self.received, self.crcs)):
            ok = crc == pattern_crc(pattern(params.test_id, i), n)
            if sent is not None:
                ok = ok and i < len(sent) and sent[i] == n
            share = params.share(i)
            if share is not None:
                ok = ok and n == share
            out.append(ok and self.error is None)
        return out


async def run_receiver(readers: list[gannet.StreamReader]) -> ReceiverResult:
    n = len(readers)
    received = [0] * n
    crcs = [0] * n
    first: list[float] = []
    loop = asyncio.get_running_loop()

    async def drain(i: int, reader: gannet.StreamReader) -> None:
        crc = 0
        count = 0
        try:
            while True:
                data = await reader.read(READ_CHUNK)
                if not data:
                    break
                if not first:
                    first.append(loop.time())
                crc = crc32c(data, crc)
                count += len(data)
                received[i] = count
        finally:
            received[i] = count
            crcs[i] = crc

    error = None
    try:
        await asyncio.gather(*(drain(i, r) for i, r in enumerate(readers)))
    except (ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    end = loop.time()
    seconds = end - first[0] if first else 0.0
    return ReceiverResult(received=received, crcs=crcs, seconds=seconds, error=error)


# -------------------------------------------------------------------- control
async def send_msg(writer: gannet.StreamWriter, msg: dict[str, Any]) -> None:
    writer.write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")
    await writer.drain()


async def recv_msg(reader: gannet.StreamReader, timeout: float | None = CONTROL_TIMEOUT,
                   what: str = "the peer") -> dict[str, Any]:
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
    except TimeoutError:
        raise BenchError(f"no answer from {what} within {timeout:g} s") from None
    except ValueError:
        raise BenchError(f"{what} sent an overlong control line") from None
    if not line:
        raise BenchError(f"{what} closed the control connection")
    try:
        msg = json.loads(line)
    except ValueError:
        raise BenchError(f"{what} sent a malformed control line") from None
    if not isinstance(msg, dict):
        raise BenchError(f"{what} sent a malformed control line")
    if msg.get("type") == "error":
        raise BenchError(str(msg.get("message", "error")))
    return msg


async def recv_msg_while(reader: gannet.StreamReader, receiving: asyncio.Task,
                         what: str) -> dict[str, Any]:
    """The next control message, while `receiving` (run_receiver) runs: a data
    connection that fails ends the wait at once; once all streams ended, the
    message must follow within CONTROL_TIMEOUT."""
    msg_task = asyncio.ensure_future(recv_msg(reader, timeout=None, what=what))
    try:
        if not receiving.done():
            await asyncio.wait({msg_task, receiving}, return_when=asyncio.FIRST_COMPLETED)
        if receiving.done() and not msg_task.done():
            res = receiving.result()
            if res.error is not None:
                raise BenchError(f"data connection failed: {res.error}")
            await asyncio.wait({msg_task}, timeout=CONTROL_TIMEOUT)
            if not msg_task.done():
                raise BenchError(f"no answer from {what} within {CONTROL_TIMEOUT:g} s")
        return msg_task.result()
    finally:
        msg_task.cancel()


def _close_all(writers: list[gannet.StreamWriter]) -> None:
    for w in writers:
        try:
            w.close()
        except Exception:  # noqa: BLE001 - already failed: nothing more to do
            pass


def _abort_all(writers: list[gannet.StreamWriter]) -> None:
    for w in writers:
        try:
            w.abort()
        except Exception:  # noqa: BLE001
            pass


# --------------------------------------------------------------------- server
class BenchServer:
    """Runs one test at a time; a second client meanwhile gets an error message."""

    def __init__(self, host: str, port: int, *, once: bool = False,
                 log: Callable[[str], None] = print, wire: str = "udp",
                 security: dict[str, Any] | None = None) -> None:
        self.host = host
        self.port = port
        self.wire = wire
        self.security = security or {}  # insecure / psk_file: the same on both ends
        self.once = once
        self.log = log
        self.server: gannet.Server | None = None
        self.busy: str | None = None  # test id and peer of the running test
        self.done = asyncio.Event()
        self.cleanups: set[asyncio.Task] = set()

    async def start(self) -> tuple[str, int]:
        self.server = await gannet.start_server(self._control, self.host, self.port, wire=self.wire,
                                                **self.security)
        addr = self.server.addresses[0]
        return addr[0], addr[1]

    async def serve(self) -> None:
        assert self.server is not None
        try:
            await self.done.wait()
            if self.cleanups:
                await asyncio.wait(list(self.cleanups), timeout=5)
        finally:
            self.server.close()
            await self.server.wait_closed()

    async def _control(self, reader: gannet.StreamReader, writer: gannet.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        peer_s = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        try:
            msg = await recv_msg(reader, what="the client")
            params = Params.from_wire(msg)
        except BenchError as exc:
            self.log(f"{peer_s}: bad request: {exc}")
            try:
                await send_msg(writer, {"type": "error", "message": str(exc)})
            except (ConnectionError, OSError):
                pass
            writer.close()
            return
        except (ConnectionError, OSError):
            writer.abort()
            return
        if self.busy is not None:
            self.log(f"test {params.test_id} from {peer_s} rejected: test {self.busy} is running")
            try:
                await send_msg(writer, {"type": "error", "message":
                                        f"server busy: test {self.busy} is running; try again later"})
                writer.close()
                await asyncio.wait_for(writer.wait_closed(), 5)
            except (ConnectionError, OSError, TimeoutError):
                writer.abort()
            return
        self.busy = f"{params.test_id} from {peer_s}"
        try:
            await self._run_test(params, peer_s, reader, writer)
        except BenchError as exc:
            self.log(f"test {params.test_id}: aborted: {exc}")
            writer.abort()
        except (ConnectionError, OSError) as exc:
            self.log(f"test {params.test_id}: aborted: {exc or type(exc).__name__}")
            writer.abort()
        finally:
            self.busy = None
            if self.once:
                self.done.set()

    async def _run_test(self, params: Params, peer_s: str, reader: gannet.StreamReader,
                        writer: gannet.StreamWriter) -> None:
        cpu0 = cpu_seconds()
        k = params.parallel
        streams: dict[int, tuple[gannet.StreamReader, gannet.StreamWriter]] = {}
        all_in = asyncio.Event()

        async def on_data(r: gannet.StreamReader, w: gannet.StreamWriter) -> None:
            try:
                line = await asyncio.wait_for(r.readline(), CONTROL_TIMEOUT)
                hello = json.loads(line)
                i = int(hello["stream"])
                if hello.get("test_id") != params.test_id or not 0 <= i < k or i in streams:
                    raise ValueError
            except (ValueError, KeyError, TypeError, TimeoutError, ConnectionError, OSError):
                w.abort()
                return
            streams[i] = (r, w)
            if len(streams) == k:
                all_in.set()
            await test_over.wait()

        test_over = asyncio.Event()
        data_server = await gannet.start_server(on_data, self.host, 0, wire=self.wire,
                                                **params.data_settings(), **self.security)
        what = (f"{'send' if params.reverse else 'receive'} "
                f"{_fmt_amount(params)}, {k} stream{'s' if k > 1 else ''}"
                + (f", mtu {params.mtu}" if params.mtu else "")
                + (f", cc {params.cc}" if params.cc else ""))
        self.log(f"test {params.test_id} from {peer_s}: {what}")
        ok = False
        try:
            await send_msg(writer, {"type": "ready", "data_port": data_server.addresses[0][1]})
            try:
                await asyncio.wait_for(all_in.wait(), CONTROL_TIMEOUT)
            except TimeoutError:
                raise BenchError(f"only {len(streams)} of {k} data connections arrived") from None
            ordered = [streams[i] for i in range(k)]
            if params.reverse:
                result = await self._send(params, ordered, reader, writer, cpu0)
            else:
                result = await self._receive(params, ordered, reader, writer, cpu0)
            ok = True
            self.log(f"test {params.test_id} done: {result}")
        finally:
            test_over.set()
            data_writers = [w for _, w in streams.values()]
            (_close_all if ok else _abort_all)(data_writers)
            task = asyncio.create_task(self._cleanup(data_server, writer))
            self.cleanups.add(task)
            task.add_done_callback(self.cleanups.discard)

    @staticmethod
    async def _cleanup(data_server: gannet.Server, control: gannet.StreamWriter) -> None:
        """Let the last messages and FINs go out, then release the data port."""
        data_server.close()
        try:
            await asyncio.wait_for(asyncio.gather(data_server.wait_closed(),
                                                  control.wait_closed()), 3)
        except TimeoutError:
            data_server.abort_clients()
            control.abort()
            await data_server.wait_closed()

    async def _send(self, params, ordered, reader, writer, cpu0) -> str:
        def forward(rec: dict[str, Any]) -> None:
            try:
                writer.write(json.dumps({"type": "interval", **rec}).encode() + b"\n")
            except (ConnectionError, OSError):
                pass

        res = await run_sender([w for _, w in ordered], params, forward)
        await send_msg(writer, {"type": "done", **asdict(res), "cpu_seconds": cpu_seconds() - cpu0})
        if res.error is not None:
            raise BenchError(f"data connection failed: {res.error}")
        msg = await recv_msg(reader, timeout=CONTROL_TIMEOUT + params.time, what="the client")
        writer.close()
        ok = bool(msg.get("verified")) and all(msg.get("stream_verified", []))
        total = sum(res.sent)
        return (f"sent {human_bytes(total)} in {res.seconds:.2f} s "
                f"({fmt_rate(total * 8 / max(res.seconds, 1e-9))}), "
                f"{res.retransmits} retransmits, {'verified' if ok else 'FAILED'} by the client")

    async def _receive(self, params, ordered, reader, writer, cpu0) -> str:
        recv_task = asyncio.create_task(run_receiver([r for r, _ in ordered]))
        try:
            done = await recv_msg_while(reader, recv_task, "the client")
            if done.get("type") != "done":
                raise BenchError("expected the client's done message")
            res = await asyncio.wait_for(recv_task, CONTROL_TIMEOUT)
        finally:
            recv_task.cancel()
        sent = [int(x) for x in done.get("sent", [])]
        verified = res.verify(params, sent)
        await send_msg(writer, {
            "type": "result", "received": res.received, "stream_verified": verified,
            "verified": all(verified), "seconds": res.seconds, "error": res.error,
            "cpu_seconds": cpu_seconds() - cpu0,
        })
        writer.close()
        total = sum(res.received)
        return (f"received {human_bytes(total)} in {res.seconds:.2f} s "
                f"({fmt_rate(total * 8 / max(res.seconds, 1e-9))}), "
                f"{'verified' if all(verified) else 'FAILED'}")


# --------------------------------------------------------------------- client
async def run_client(host: str, port: int, params: Params, *,
                     connect_timeout: float = 10.0, wire: str = "udp",
                     on_start: Callable[[dict[str, Any]], None] | None = None,
                     on_interval: Callable[[dict[str, Any]], None] | None = None,
                     security: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one test against a bench server; returns the JSON-ready result.
    `security`: Config settings (insecure, psk_file, peer_key) for every
    connection, as the server was given them."""
    security = security or {}
    cpu0 = cpu_seconds()
    creader, cwriter = await gannet.open_connection(host, port, connect_timeout=connect_timeout,
                                                    wire=wire, **security)
    data: list[tuple[gannet.StreamReader, gannet.StreamWriter]] = []
    try:
        await send_msg(cwriter, params.to_wire())
        ready = await recv_msg(creader, what="the server")
        if ready.get("type") != "ready":
            raise BenchError("unexpected answer from the server")
        data_port = int(ready["data_port"])
        opened = await asyncio.gather(
            *(gannet.open_connection(host, data_port, connect_timeout=connect_timeout, wire=wire,
                                     **params.data_settings(), **security)
              for _ in range(params.parallel)),
            return_exceptions=True)
        for item in opened:
            if not isinstance(item, BaseException):
                data.append(item)
        for item in opened:
            if isinstance(item, BaseException):
                raise item
        for i, (_, w) in enumerate(data):
            await send_msg(w, {"test_id": params.test_id, "stream": i})
        conn0 = data[0][1].get_extra_info("connection")
        info = {
            "datagram_size": wire_datagram_size(data[0][1]),
            "mss": getattr(conn0, "mss", None),
            "cc": params.cc or getattr(getattr(conn0, "config", None), "congestion_control", None),
        }
        if on_start is not None:
            on_start(info)
        if not params.reverse:
            res = await run_sender([w for _, w in data], params, on_interval)
            if res.error is not None:
                raise BenchError(f"test interrupted: data connection failed: {res.error}")
            await send_msg(cwriter, {"type": "done", "sent": res.sent})
            result = await recv_msg(creader, timeout=CONTROL_TIMEOUT + params.time,
                                    what="the server")
            if result.get("type") != "result":
                raise BenchError("unexpected answer from the server")
            received = [int(x) for x in result.get("received", [])]
            stream_ok = [bool(x) for x in result.get("stream_verified", [])]
            sender = res
            server_cpu = float(result.get("cpu_seconds", 0.0))
            receiver_seconds = float(result.get("seconds", 0.0))
            error = res.error or result.get("error")
        else:
            recv_task = asyncio.create_task(run_receiver([r for r, _ in data]))
            try:
                while True:
                    msg = await recv_msg_while(creader, recv_task, "the server")
                    if msg.get("type") == "interval":
                        rec = {k: msg.get(k) for k in
                               ("start", "end", "bytes", "goodput_bps", "retransmits", "cwnd", "srtt")}
                        if on_interval is not None:
                            on_interval(rec)
                        continue
                    if msg.get("type") == "done":
                        break
                    raise BenchError("unexpected message from the server")
                rres = await asyncio.wait_for(recv_task, CONTROL_TIMEOUT)
            finally:
                recv_task.cancel()
            sent = [int(x) for x in msg.get("sent", [])]
            stream_ok = rres.verify(params, sent)
            received = rres.received
            await send_msg(cwriter, {"type": "result", "received": received,
                                     "stream_verified": stream_ok, "verified": all(stream_ok)})
            sender = SenderResult(
                sent=sent, seconds=float(msg.get("seconds", 0.0)),
                retransmits=int(msg.get("retransmits", 0)), srtt=msg.get("srtt"),
                min_rtt=msg.get("min_rtt"), datagram_size=msg.get("datagram_size"),
                mss=msg.get("mss"), intervals=list(msg.get("intervals", [])),
                error=msg.get("error"), info=list(msg.get("info") or []))
            server_cpu = float(msg.get("cpu_seconds", 0.0))
            receiver_seconds = rres.seconds
            error = rres.error or sender.error
        client_cpu = cpu_seconds() - cpu0
    except BaseException:
        _abort_all([w for _, w in data])
        cwriter.abort()
        raise
    _close_all([w for _, w in data])
    cwriter.close()
    try:
        await asyncio.wait_for(asyncio.gather(
            cwriter.wait_closed(), *(w.wait_closed() for _, w in data)), 3)
    except TimeoutError:
        pass

    total = sum(received)
    seconds = sender.seconds
    verified = bool(stream_ok) and all(stream_ok) and len(stream_ok) == params.parallel
    cpu_total = client_cpu + server_cpu
    return {
        "test_id": params.test_id,
        "server": f"{host}:{port}",
        "reverse": params.reverse,
        "direction": "server->client" if params.reverse else "client->server",
        "parallel": params.parallel,
        "target_bytes": params.bytes,
        "target_seconds": None if params.bytes is not None else params.time,
        "interval": params.interval,
        "mtu": params.mtu,
        "cc": info["cc"],
        "datagram_size": sender.datagram_size or info["datagram_size"],
        "mss": sender.mss or info["mss"],
        "bytes": total,
        "bytes_sent": sum(sender.sent),
        "seconds": seconds,
        "receiver_seconds": receiver_seconds,
        "goodput_bps": total * 8 / seconds if seconds > 0 else 0.0,
        "retransmits": sender.retransmits,
        "srtt": sender.srtt,
        "min_rtt": sender.min_rtt,
        "cpu_seconds": cpu_total,
        "cpu_seconds_client": client_cpu,
        "cpu_seconds_server": server_cpu,
        "cpu_seconds_per_gb": cpu_total / (total / 1e9) if total else None,
        "verified": verified,
        "error": error,
        "streams": [{"stream": i, "bytes": received[i] if i < len(received) else 0,
                     "sent": sender.sent[i] if i < len(sender.sent) else 0,
                     "verified": stream_ok[i] if i < len(stream_ok) else False}
                    for i in range(params.parallel)],
        "intervals": sender.intervals,
        "sender_info": sender.info,
        "verdict": _verdict(sender, seconds,
                            server_cpu if params.reverse else client_cpu),
    }


def _verdict(sender: SenderResult, seconds: float, cpu: float) -> dict[str, Any] | None:
    """What limited the sending side (gannet.observe.diagnose), judged on the
    stream that moved the most."""
    if not sender.info:
        return None
    info = max(sender.info, key=lambda i: i.get("bytes_acked") or 0)
    v = diagnose.judge(info, seconds=seconds, cpu_seconds=cpu)
    return {"cause": v.cause, "text": v.text, "line": v.line(), "numbers": v.numbers}


# ------------------------------------------------------------------ formatting
def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def fmt_rate(bps: float) -> str:
    if bps >= 1e9:
        return f"{bps / 1e9:.2f} Gbit/s"
    return f"{bps / 1e6:.1f} Mbit/s"


def fmt_rtt(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1e3:.2f} ms" if seconds < 0.1 else f"{seconds * 1e3:.0f} ms"


def _fmt_amount(params: Params) -> str:
    return human_bytes(params.bytes) if params.bytes is not None else f"{params.time:g} s"

