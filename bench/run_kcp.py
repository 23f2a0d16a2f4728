"""KCP runner: the `kcp` package (C core of KCP) driven by a Python UDP loop.

Fast mode as KCP's own guidance recommends: nodelay on, a short internal
interval, fast resend after 2 duplicate ACKs, no congestion window, and
large send/receive windows.  KCP here runs in message mode (the binding has
no stream switch), so the bulk stream is sent as 64 KB messages; the byte
stream the receiver reassembles is hashed exactly like the other runners.
"""

from __future__ import annotations

import select
import socket
import sys
import time

import common as c

try:
    from kcp import KCP
except ImportError as e:  # reported as "not available"
    KCP = None
    IMPORT_ERROR = str(e)

CONV = 0x6A77
MTU = 1400
MSG = 64 * 1024  # < 127 fragments, the KCP per-message limit
IDLE_END = 1.0


def make_kcp(args, send) -> "KCP":
    k = KCP(CONV, max_transmission=MTU, no_delay=True, update_interval=args.interval,
            resend_count=2, no_congestion_control=True,
            send_window_size=args.window, receive_window_size=args.window)

    @k.outbound_handler
    def _out(_k, data: bytes) -> None:
        try:
            send(data)
        except (BlockingIOError, ConnectionRefusedError):
            pass  # KCP retransmits

    return k


def drain(sock: socket.socket, k) -> int:
    """Feed every datagram waiting on the socket to KCP; how many there were."""
    n = 0
    recv = sock.recv
    while True:
        try:
            data = recv(65536)
        except BlockingIOError:
            return n
        except ConnectionRefusedError:
            continue
        k.receive(data)
        n += 1


def wait(sock: socket.socket, k, cap_ms: float = 10.0) -> None:
    ms = max(0, min(cap_ms, k.update_check()))
    select.select([sock], [], [], ms / 1000.0)


def server(args) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.big_buffers(s)
    s.bind((args.host, args.port))
    c.ready(s.getsockname()[1])
    s.settimeout(30)
    first, peer = s.recvfrom(65536)  # the first datagram names the peer
    s.connect(peer)
    s.setblocking(False)
    k = make_kcp(args, s.send)
    k.receive(first)
    bulk = args.workload == "bulk"
    rx = c.BulkReceiver(args.bytes)
    echoed = 0
    last_rx = time.monotonic()
    while True:
        if drain(s, k):
            last_rx = time.monotonic()
        for msg in k.get_all_received():
            if bulk:
                rx.feed(msg)
            else:
                k.enqueue(bytes(msg))
                echoed += 1
        k.update()
        k.flush()
        if time.monotonic() - last_rx > IDLE_END:
            break  # the client has gone (it stops once everything is acked)
        wait(s, k)
    c.emit(rx.result() if bulk else {"echoed": echoed})


def client(args) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.big_buffers(s)
    s.connect((args.host, args.port))
    s.setblocking(False)
    k = make_kcp(args, s.send)
    deadline = time.monotonic() + 120
    if args.workload == "bulk":
        tx = c.BulkSender(args, chunk=MSG)
        chunks = tx.chunks()
        pending = True
        limit = args.window * 2  # segments queued in KCP before we wait for ACKs
        while time.monotonic() < deadline:
            while pending and k.get_outbound_packets() < limit:
                chunk = next(chunks, None)
                if chunk is None:
                    pending = False
                    break
                k.enqueue(bytes(chunk))
            k.update()
            k.flush()
            drain(s, k)
            if not pending and k.get_outbound_packets() == 0:
                break
            if k.get_outbound_packets() >= limit:
                select.select([s], [], [], 0.001)
        c.emit(tx.result(acked=k.get_outbound_packets() == 0))
        return
    pattern, size = c.Pattern(), args.size
    samples, bad = [], 0
    meter = c.Meter()
    meter.start()
    for i in range(args.count):
        msg = c.pingpong_message(pattern, i, size)
        t0 = time.perf_counter_ns()
        k.enqueue(bytes(msg))
        k.update()
        k.flush()
        reply = None
        while reply is None and time.monotonic() < deadline:
            wait(s, k, cap_ms=args.interval)
            drain(s, k)
            if k.next_packet_available:
                reply = k.get_received()
            k.update()
        if reply is None:
            break
        samples.append(time.perf_counter_ns() - t0)
        bad += reply != msg
    meter.stop()
    # keep acking briefly so the server's last echo is not resent forever
    end = time.monotonic() + 0.05
    while time.monotonic() < end:
        drain(s, k)
        k.update()
        k.flush()
        time.sleep(0.005)
    c.emit({"rtts": len(samples), "bad_echoes": bad, **c.percentiles(samples),
            **meter.as_dict()})


def main(argv=None) -> None:
    p = c.parser(__doc__)
    p.add_argument("--interval", type=int, default=1, help="KCP internal interval, ms")
    p.add_argument("--window", type=int, default=4096, help="send/receive window, segments")
    args = p.parse_args(argv)
    if KCP is None:
        c.unavailable(f"kcp package not installed ({IMPORT_ERROR}); "
                      "pip install -r bench/requirements.txt")
    c.dispatch(args, server, client)


if __name__ == "__main__":
    main(sys.argv[1:])
