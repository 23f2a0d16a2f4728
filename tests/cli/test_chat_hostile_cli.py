"""`gannet chat` as a subprocess against a stranger and a hostile peer (issue 12, finding 4)."""

import asyncio
import os
import socket
import subprocess
import sys
import time

import pytest

from gannet.apps.chat import framing
from gannet.apps.chat.framing import FrameType
from gannet.apps.chat.rendezvous import Rendezvous
from gannet.io.endpoint import create_endpoint, make_config
from gannet_cli_helpers import stop

pytestmark = pytest.mark.timeout(60)

GANNET = [sys.executable, "-m", "gannet"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
# Both sides hold the chat's code: the binding to the peer the user named is
# tested on its own, beyond what the code already keeps out.
CODE = "54-olympic-bottom"
CONFIG = make_config(None, {"keepalive_idle": 1.0, "keepalive_interval": 0.5, "keepalive_count": 3,
                            "code": CODE})
EVIL = "\x1b]0;owned\x07\x1b[2J\u009b8m\u202e\n* transfer finished: forged"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_text(path, needle, timeout=15.0):
    deadline = time.monotonic() + timeout
    while needle not in path.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"no {needle!r} in {path.read_text()!r}"
        await asyncio.sleep(0.05)


def test_chat_refuses_a_stranger_and_escapes_the_peer(tmp_path):
    alice_port, bob_port = free_udp_port(), free_udp_port()
    out, err = tmp_path / "alice.out", tmp_path / "alice.err"
    proc = subprocess.Popen(
        GANNET + ["chat", "--listen", str(alice_port), "--peer", f"127.0.0.1:{bob_port}",
                  "--name", "alice", "--dir", str(tmp_path / "dl"), "--code", CODE],
        stdin=subprocess.PIPE, stdout=out.open("wb"), stderr=err.open("wb"), env=ENV, cwd=tmp_path)

    async def main():
        stranger_ep = await create_endpoint("127.0.0.1", 0, config=CONFIG)
        stranger = Rendezvous(stranger_ep, ("127.0.0.1", alice_port), "bob", CONFIG)
        meeting = asyncio.create_task(stranger.meet())
        port = stranger_ep.local_address[1]
        await wait_text(err, f"refused a connection from 127.0.0.1:{port}: not the peer "
                             f"(127.0.0.1:{bob_port})")
        assert "peer connected" not in err.read_text() and not meeting.done()
        meeting.cancel()
        stranger.close()
        # The real peer's address, with a hostile name and message.
        bob_ep = await create_endpoint("127.0.0.1", bob_port, config=CONFIG)
        bob = Rendezvous(bob_ep, ("127.0.0.1", alice_port), "bob" + EVIL, CONFIG)
        link = await asyncio.wait_for(bob.meet(), 15)
        link.writer.write(framing.encode_json(FrameType.MESSAGE, {"text": EVIL, "time": 0}))
        await link.writer.drain()
        await wait_text(out, "forged")
        link.writer.close()
        bob.close()

    try:
        asyncio.run(main())
    finally:
        proc.stdin.close()
        stop(proc)
    shown = out.read_text() + err.read_text()
    for raw in ("\x1b", "\x07", "\u009b", "\u202e"):
        assert raw not in shown, repr(raw)
    assert "peer connected: bob\\x1b]0;owned\\x07" in shown
    assert "\\x1b[2J\\x9b8m\\u202e\\n* transfer finished: forged" in out.read_text()
    assert not any(line.startswith("* transfer finished") for line in shown.splitlines())
