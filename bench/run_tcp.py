"""Kernel TCP runner: plain blocking sockets, large sendall / recv_into."""

from __future__ import annotations

import socket
import sys
import time

import common as c

RECV_BUF = 1 << 20


def _tune(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _recv_into(sock):
    """``recv_into`` when the socket has it, else ``recv`` copied into place."""
    if hasattr(sock, "recv_into"):
        return sock.recv_into

    def recv_into(view) -> int:
        data = sock.recv(len(view))
        view[: len(data)] = data
        return len(data)

    return recv_into


def serve_blocking(conn, args) -> dict:
    """Server side of one connection on a socket-module-shaped object."""
    recv_into = _recv_into(conn)
    if args.workload == "bulk":
        rx = c.BulkReceiver(args.bytes)
        buf = bytearray(RECV_BUF)
        view = memoryview(buf)
        while True:
            n = recv_into(view)
            if not n:
                break
            rx.feed(view[:n])
        res = rx.result()
        conn.sendall(b"k")  # lets the client close only after we have everything
        return res
    size, echoed = args.size, 0
    buf = bytearray(size)
    view = memoryview(buf)
    while True:
        got = 0
        while got < size:
            n = recv_into(view[got:])
            if not n:
                break
            got += n
        if got < size:
            break
        conn.sendall(buf)
        echoed += 1
    return {"echoed": echoed}


def client_blocking(sock, args) -> dict:
    """Client side on a connected socket-module-shaped object."""
    recv_into = _recv_into(sock)
    if args.workload == "bulk":
        tx = c.BulkSender(args)
        for chunk in tx.chunks():
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)  # the server's confirmation that it has everything
        return tx.result()
    pattern, size = c.Pattern(), args.size
    buf = bytearray(size)
    view = memoryview(buf)
    samples, bad = [], 0
    meter = c.Meter()
    meter.start()
    for i in range(args.count):
        msg = c.pingpong_message(pattern, i, size)
        t0 = time.perf_counter_ns()
        sock.sendall(msg)
        got = 0
        while got < size:
            n = recv_into(view[got:])
            if not n:
                raise ConnectionError("server closed during ping-pong")
            got += n
        samples.append(time.perf_counter_ns() - t0)
        bad += buf != msg
    meter.stop()
    sock.shutdown(socket.SHUT_WR)
    return {"rtts": len(samples), "bad_echoes": bad, **c.percentiles(samples),
            **meter.as_dict()}


def server(args) -> None:
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((args.host, args.port))
    ls.listen(1)
    c.ready(ls.getsockname()[1])
    conn, _ = ls.accept()
    _tune(conn)
    res = serve_blocking(conn, args)
    conn.close()
    c.emit(res)


def client(args) -> None:
    sock = socket.create_connection((args.host, args.port), timeout=30)
    _tune(sock)
    res = client_blocking(sock, args)
    sock.close()
    c.emit(res)


def main(argv=None) -> None:
    args = c.parser(__doc__).parse_args(argv)
    c.dispatch(args, server, client)


if __name__ == "__main__":
    main(sys.argv[1:])
