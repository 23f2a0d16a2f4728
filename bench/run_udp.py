"""Raw UDP ceilings (unreliable: they report delivered bytes, not a verified stream).

``--mode loop``  a plain Python loop of 1400-byte ``sendto`` calls;
``--mode gso``   UDP GSO on send (UDP_SEGMENT, 64 KB buffers of 1400-byte
                 segments) and UDP GRO on receive.
``--mode aio``   ping-pong only: the same echo written the way an asyncio
                 program is (a DatagramProtocol on uvloop when installed, the
                 client awaiting a future per reply): what the event loop
                 alone adds to a round trip, with no protocol at all.

The ping-pong workload (``--mode loop``) is the raw Python UDP round trip that
the latency ratios are measured against.
"""

from __future__ import annotations

import asyncio
import select
import socket
import sys
import time

import common as c

SEG = 1400
UDP_SEGMENT = 103
UDP_GRO = 104
SOL_UDP = getattr(socket, "SOL_UDP", 17)
GSO_SEGS = 46  # 46 * 1400 = 64400 bytes per send, under the 64 KB datagram limit
IDLE_END = 0.5  # the server gives up this long after the last datagram


def _sock() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.big_buffers(s, 32 << 20)
    return s


def server(args) -> None:
    if args.mode == "aio":
        _run_aio(args, _aio_server)
        return
    s = _sock()
    s.bind((args.host, args.port))
    if args.mode == "gso":
        try:
            s.setsockopt(SOL_UDP, UDP_GRO, 1)
        except OSError as e:
            c.unavailable(f"UDP_GRO not supported: {e}")
    c.ready(s.getsockname()[1])
    if args.workload == "pingpong":
        buf = bytearray(65536)
        echoed = 0
        s.settimeout(5.0)
        while True:
            try:
                n, addr = s.recvfrom_into(buf)
            except TimeoutError:
                break
            if buf[:n] == c.END_MAGIC:
                break
            s.sendto(memoryview(buf)[:n], addr)
            echoed += 1
        c.emit({"echoed": echoed})
        return
    rx = c.BulkReceiver(args.bytes)
    buf = bytearray(1 << 16)
    view = memoryview(buf)
    datagrams = 0
    s.settimeout(30.0)  # until the first datagram
    magic_len = len(c.END_MAGIC)
    while True:
        try:
            n = s.recv_into(buf)
        except TimeoutError:
            break
        if n == magic_len and buf[:n] == c.END_MAGIC:
            break
        if not datagrams:
            s.settimeout(IDLE_END)
        datagrams += 1
        rx.feed(view[:n])
    c.emit(rx.result(datagrams=datagrams))


def _end(args) -> None:
    # From a second socket (another source port) so that GRO never merges the
    # marker into a data batch; repeated because UDP may drop it.
    e = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(5):
        e.sendto(c.END_MAGIC, (args.host, args.port))
        time.sleep(0.01)
    e.close()


def client(args) -> None:
    if args.mode == "aio":
        _run_aio(args, _aio_client)
        return
    s = _sock()
    addr = (args.host, args.port)
    s.connect(addr)
    if args.workload == "pingpong":
        pattern, size = c.Pattern(), args.size
        buf = bytearray(size)
        samples, bad, lost = [], 0, 0
        meter = c.Meter()
        meter.start()
        for i in range(args.count):
            msg = c.pingpong_message(pattern, i, size)
            while True:
                t0 = time.perf_counter_ns()
                s.send(msg)
                r, _, _ = select.select([s], [], [], 1.0)
                if r:
                    s.recv_into(buf)
                    break
                lost += 1  # unreliable: resend after a second
            samples.append(time.perf_counter_ns() - t0)
            bad += buf != msg
        meter.stop()
        _end(args)
        c.emit({"rtts": len(samples), "bad_echoes": bad, "lost": lost,
                **c.percentiles(samples), **meter.as_dict()})
        return
    if args.mode == "gso":
        try:
            s.setsockopt(SOL_UDP, UDP_SEGMENT, SEG)
        except OSError as e:
            c.unavailable(f"UDP_SEGMENT not supported: {e}")
    # Both modes hash 64400-byte chunks; loop mode then sends them 1400 at a time.
    tx = c.BulkSender(args, chunk=SEG * GSO_SEGS)
    send = s.send
    errors = 0
    for chunk in tx.chunks():
        if args.mode == "gso":
            pieces = (chunk,)
        else:
            mv = memoryview(chunk)
            pieces = [mv[i : i + SEG] for i in range(0, len(mv), SEG)]
        for piece in pieces:
            try:
                send(piece)
            except (BlockingIOError, ConnectionRefusedError):
                errors += 1  # counted as sent; the server reports what arrived
    res = tx.result(send_errors=errors)
    _end(args)
    c.emit(res)


def _run_aio(args, role) -> None:
    """Run `role` (_aio_server or _aio_client) on uvloop unless --no-uvloop."""
    import streams

    if args.workload != "pingpong":
        c.unavailable("--mode aio measures the ping-pong only")
        return
    name, factory = streams.pick_loop(not args.no_uvloop)
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(role(args))


async def _echo_endpoint(args, serve: bool):
    """A UDP socket bound (server) or connected (client) to the run's
    address, under an _Echo protocol."""
    s = _sock()
    (s.bind if serve else s.connect)((args.host, args.port))
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(lambda: _Echo(serve), sock=s)
    return s, transport, proto


class _Echo(asyncio.DatagramProtocol):
    """Server: echo every datagram; client: hand each reply to the waiting future."""

    def __init__(self, serve: bool) -> None:
        self.serve = serve
        self.waiter: asyncio.Future | None = None
        self.done = asyncio.get_running_loop().create_future()
        self.echoed = 0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        if not self.serve:
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(data)
        elif data == c.END_MAGIC:
            if not self.done.done():
                self.done.set_result(None)
        else:
            self.transport.sendto(data, addr)
            self.echoed += 1


async def _aio_server(args) -> None:
    s, transport, proto = await _echo_endpoint(args, serve=True)
    c.ready(s.getsockname()[1])
    try:
        await asyncio.wait_for(proto.done, 170)
    except TimeoutError:
        pass
    transport.close()
    c.emit({"echoed": proto.echoed})


async def _aio_client(args) -> None:
    _, transport, proto = await _echo_endpoint(args, serve=False)
    loop = asyncio.get_running_loop()
    pattern, size = c.Pattern(), args.size
    samples, bad, lost = [], 0, 0
    meter = c.Meter()
    meter.start()
    for i in range(args.count):
        msg = bytes(c.pingpong_message(pattern, i, size))
        while True:
            t0 = time.perf_counter_ns()
            proto.waiter = loop.create_future()
            transport.sendto(msg)
            try:
                reply = await asyncio.wait_for(proto.waiter, 1.0)
                break
            except TimeoutError:
                lost += 1  # unreliable: resend after a second
        samples.append(time.perf_counter_ns() - t0)
        bad += reply != msg
    meter.stop()
    transport.close()
    _end(args)
    c.emit({"rtts": len(samples), "bad_echoes": bad, "lost": lost,
            **c.percentiles(samples), **meter.as_dict()})


def main(argv=None) -> None:
    p = c.parser(__doc__)
    p.add_argument("--mode", choices=["loop", "gso", "aio"], default="loop")
    p.add_argument("--no-uvloop", action="store_true", help="--mode aio on asyncio's own loop")
    args = p.parse_args(argv)
    c.dispatch(args, server, client)


if __name__ == "__main__":
    main(sys.argv[1:])
