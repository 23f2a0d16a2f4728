"""QUIC runner: aioquic (pure-Python QUIC) over asyncio streams, one stream.

Tuned for throughput: 64 MiB connection and stream flow-control windows,
1400-byte datagrams like the other transports, uvloop when installed, and a
self-signed certificate generated at run time with `cryptography`.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import sys
import tempfile

import common as c
import streams

try:
    from aioquic.asyncio import connect, serve
    from aioquic.quic.configuration import QuicConfiguration
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
except ImportError as e:  # reported as "not available"
    QuicConfiguration = None
    IMPORT_ERROR = str(e)

ALPN = ["gannet-bench"]
WINDOW = 64 << 20
DATAGRAM = 1400


def self_signed(dirname: str) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = os.path.join(dirname, "cert.pem"), os.path.join(dirname, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


def config(is_client: bool) -> "QuicConfiguration":
    return QuicConfiguration(
        is_client=is_client, alpn_protocols=ALPN, max_data=WINDOW,
        max_stream_data=WINDOW, max_datagram_size=DATAGRAM, idle_timeout=30.0,
    )


async def server(args, loop_name: str) -> None:
    cfg = config(False)
    with tempfile.TemporaryDirectory() as d:
        cfg.load_cert_chain(*self_signed(d))
    done: asyncio.Future = asyncio.get_running_loop().create_future()

    def handler(reader, writer) -> None:
        async def go():
            try:
                res = await streams.serve_connection(reader, writer, args)
                if not done.done():
                    done.set_result(res)
            except Exception as e:  # surfaced in the RESULT line
                if not done.done():
                    done.set_result({"error": repr(e)})
        asyncio.ensure_future(go())

    srv = await serve(args.host, args.port, configuration=cfg, stream_handler=handler)
    c.ready(srv._transport.get_extra_info("sockname")[1])
    res = await asyncio.wait_for(done, 170)
    await asyncio.sleep(0.05)  # let the final ACKs and the confirmation go out
    srv.close()
    c.emit({**res, "loop": loop_name})


async def client(args, loop_name: str) -> None:
    cfg = config(True)
    cfg.verify_mode = __import__("ssl").CERT_NONE  # self-signed, loopback only
    async with connect(args.host, args.port, configuration=cfg,
                       wait_connected=True) as proto:
        reader, writer = await proto.create_stream()
        sid = writer.get_extra_info("stream_id")

        def backlog() -> int:  # aioquic buffers without limit: unacked bytes
            try:
                sender = proto._quic._streams[sid].sender
                return sender._buffer_stop - sender._buffer_start
            except (AttributeError, KeyError):
                return 0

        res = await streams.run_client(reader, writer, args, backlog=backlog)
    c.emit({**res, "loop": loop_name})


def main(argv=None) -> None:
    p = c.parser(__doc__)
    p.add_argument("--no-uvloop", action="store_true")
    args = p.parse_args(argv)
    if QuicConfiguration is None:
        c.unavailable(f"aioquic not installed ({IMPORT_ERROR}); "
                      "pip install -r bench/requirements.txt")
    if args.role == "probe":
        c.emit({"ok": True})
        return
    name, factory = streams.pick_loop(not args.no_uvloop)
    fn = server if args.role == "server" else client
    streams.run(lambda: fn(args, name), factory)


if __name__ == "__main__":
    main(sys.argv[1:])
