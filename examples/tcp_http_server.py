"""A small HTTP/1.1 responder on Gannet's TCP wire: curl and browsers talk
to Gannet's engine, not the kernel's TCP. Needs root (raw sockets).

    sudo python examples/tcp_http_server.py [host] [port]
    curl http://127.0.0.1:8080/hello

Answers GET with a text body naming the path, `/bytes/N` with N bytes of a
repeating pattern, POST with the SHA-256 of the body it received.
"""

import asyncio
import hashlib
import sys

import gannet

MAX_BODY = 64 * 1024 * 1024


def response(status: str, body: bytes, keep_alive: bool) -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n")
    return head.encode() + body


async def handle(reader, writer):
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3:
                writer.write(response("400 Bad Request", b"bad request line\n", False))
                break
            method, path, version = parts
            headers = {k.strip().lower(): v.strip()
                       for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
            length = int(headers.get("content-length", "0") or 0)
            if not 0 <= length <= MAX_BODY:
                writer.write(response("413 Payload Too Large", b"too large\n", False))
                break
            body = await reader.readexactly(length) if length else b""
            if method == "POST":
                out = hashlib.sha256(body).hexdigest().encode() + b"\n"
            elif path.startswith("/bytes/") and path[7:].isdigit() and int(path[7:]) <= MAX_BODY:
                n = int(path[7:])
                out = (b"0123456789abcdef" * (n // 16 + 1))[:n]
            else:
                out = f"Hello from Gannet over TCP: {method} {path}\n".encode()
            writer.write(response("200 OK", out, keep))
            await writer.drain()
            if not keep:
                break
    except ConnectionError:
        pass
    finally:
        writer.close()


async def main():
    host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 8080
    server = await gannet.start_server(handle, host, port, wire="tcp")
    print(f"Listening on {server.addresses[0][0]}:{server.addresses[0][1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
