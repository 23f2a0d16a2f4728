"""`gannet chat` driven like a person would: two processes in tmux panes.

Each side runs in its own tmux session (a real terminal, so the interactive
line editor and progress bars are in use); keys are typed with send-keys and
the screens are read with capture-pane, polling with a deadline.
"""

import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import gannet

pytestmark = pytest.mark.timeout(180)

# The panes run the gannet under test (a tmux server keeps the environment it
# was started with, and the panes change directory, so a relative PYTHONPATH
# or an older tmux server would otherwise pick up another copy).
SRC = Path(gannet.__file__).resolve().parents[1]


def _tmux() -> str | None:
    path = shutil.which("tmux")
    if path is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "tmux"], capture_output=True, timeout=120)
        path = shutil.which("tmux")
    return path


TMUX = _tmux()
if TMUX is None and os.environ.get("CI"):
    # .ci/run installs tmux: in CI its absence is a failure, not a skip
    raise RuntimeError("tmux is not installed in CI")
if TMUX is None:
    pytest.skip("tmux is not installed and could not be installed with apt-get", allow_module_level=True)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CODE = "4-tmux-test"  # both sides given the same code (docs/security.md)


class Pane:
    """One chat process in its own tmux session (and tmux server socket)."""

    def __init__(self, sock: str, cwd, name: str, listen: int, peer: int, code: str | None = CODE):
        self.sock = sock
        self.session = f"chat-{name}-{uuid.uuid4().hex[:6]}"
        cmd = (f"cd {cwd} && unset COLUMNS LINES && PYTHONUNBUFFERED=1 PYTHONPATH={SRC} "
               f"exec {sys.executable} -m gannet chat "
               f"--listen {listen} --peer 127.0.0.1:{peer} --name {name} --dir downloads"
               + (f" --code {code}" if code else ""))
        self.tmux("new-session", "-d", "-s", self.session, "-x", "200", "-y", "50", cmd)
        self.tmux("set-option", "-t", self.session, "remain-on-exit", "on")

    def tmux(self, *args: str) -> str:
        res = subprocess.run([TMUX, "-L", self.sock, *args], capture_output=True, text=True, timeout=10)
        return res.stdout

    def send(self, text: str) -> None:
        self.tmux("send-keys", "-t", self.session, "-l", text)
        self.tmux("send-keys", "-t", self.session, "Enter")

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-J", "-S", "-200", "-t", self.session)

    def wait(self, pattern: str, timeout: float = 20.0, count: int = 1) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if len(re.findall(pattern, screen)) >= count:
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} (x{count}) not on {self.session}'s screen:\n{screen}")
            time.sleep(0.1)

    def pid(self) -> int:
        return int(self.tmux("list-panes", "-t", self.session, "-F", "#{pane_pid}").split()[0])

    def dead(self) -> bool:
        return self.tmux("list-panes", "-t", self.session, "-F", "#{pane_dead}").strip() == "1"

    def kill(self) -> None:
        self.tmux("kill-session", "-t", self.session)


@pytest.fixture
def tmux_server():
    sock = f"gannet-test-{uuid.uuid4().hex[:8]}"
    yield sock
    subprocess.run([TMUX, "-L", sock, "kill-server"], capture_output=True, timeout=10)


def test_two_people_chat(tmp_path, tmux_server):
    pa, pb = free_udp_port(), free_udp_port()
    (tmp_path / "alice").mkdir()
    (tmp_path / "bob").mkdir()
    blob = os.urandom(2_000_000) + b"\x00\r\n\xff" * 1000
    (tmp_path / "alice" / "photo.bin").write_bytes(blob)
    (tmp_path / "bob" / "downloads").mkdir()
    (tmp_path / "bob" / "downloads" / "photo.bin").write_bytes(b"do not overwrite")

    # Alice starts first and keeps trying until Bob answers.
    # She gives no code, so her chat makes one; Bob passes it.
    alice = Pane(tmux_server, tmp_path / "alice", "alice", pa, pb, code=None)
    alice.wait(r"connecting to 127\.0\.0\.1:%d" % pb)
    code = re.search(r"code: (\d+-[a-z]+-[a-z]+) \(the other side passes --code", alice.screen()).group(1)
    time.sleep(1.0)
    bob = Pane(tmux_server, tmp_path / "bob", "bob", pb, pa, code=code)
    alice.wait(r"peer connected: bob")
    bob.wait(r"peer connected: alice")
    # The handshake (Gannet's SYN exchange) and the sync (greetings, one
    # connection agreed on) are shown before "peer connected". Alice's
    # retried SYN may cross Bob's (a simultaneous open, said as such).
    for pane, other in ((alice, "bob"), (bob, "alice")):
        screen = pane.screen()
        assert re.search(r"handshake done: (connected to|accepted) 127\.0\.0\.1:\d+ "
                         r"\((\w+ SYN answered|simultaneous open: both SYNs crossed), RTT [\d.]+ ms\); "
                         rf"hello from {other}; syncing", screen), screen
        assert re.search(rf"synced: greetings exchanged with {other}, one connection kept", screen)
        assert screen.index("synced:") < screen.index("peer connected:")

    alice.send("hello bob, it is alice")
    bob.wait(r"\[\d\d:\d\d:\d\d\] alice: hello bob, it is alice")
    bob.send("hi alice!")
    alice.wait(r"\[\d\d:\d\d:\d\d\] bob: hi alice!")

    bob.send("help")
    screen = bob.wait(r"/send PATH")
    assert "/quit" in screen and "/help" in screen
    alice.send("/help")
    alice.wait(r"/send PATH")

    # A binary file: both sides report it, it lands under a new name, hash checked.
    alice.send("/send photo.bin")
    alice.send("chat goes on")
    alice.wait(r"transfer started: sending photo\.bin \(2\.0 MB\) to bob")
    bob.wait(r"transfer started: receiving photo\.bin \(2\.0 MB\) from alice")
    bob.wait(r"alice: chat goes on")
    screen = bob.wait(r"transfer finished: received photo\.bin")
    digest = hashlib.sha256(blob).hexdigest()
    assert f"SHA-256 {digest[:16]} verified" in screen
    alice.wait(r"transfer finished: sent photo\.bin .*bob verified its SHA-256")
    received = tmp_path / "bob" / "downloads" / "photo (1).bin"
    assert hashlib.sha256(received.read_bytes()).hexdigest() == digest
    assert (tmp_path / "bob" / "downloads" / "photo.bin").read_bytes() == b"do not overwrite"

    # Bob leaves cleanly: Alice is told, and waits for him again.
    bob.send("/quit")
    alice.wait(r"peer disconnected: bob left")
    deadline = time.monotonic() + 10
    while not bob.dead() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert bob.dead(), "bob's chat did not exit after /quit"
    bob.kill()

    # Bob comes back; then his process is killed: Alice sees him unreachable.
    bob2 = Pane(tmux_server, tmp_path / "bob", "bob", pb, pa, code=code)
    alice.wait(r"peer connected: bob", count=2)
    bob2.wait(r"peer connected: alice")
    os.kill(bob2.pid(), signal.SIGKILL)
    t0 = time.monotonic()
    alice.wait(r"peer unreachable: bob", timeout=15)
    assert time.monotonic() - t0 < 12
    alice.send("/quit")
    deadline = time.monotonic() + 10
    while not alice.dead() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert alice.dead(), "alice's chat did not exit after /quit"


def test_simultaneous_start_and_progress_bar(tmp_path, tmux_server):
    pa, pb = free_udp_port(), free_udp_port()
    for who in ("alice", "bob"):
        (tmp_path / who).mkdir()
    # Large enough that the bar stays up for a couple of seconds even at
    # loopback speed with 64 KB datagrams.
    big = os.urandom(250_000_000)
    (tmp_path / "bob" / "big.bin").write_bytes(big)
    alice = Pane(tmux_server, tmp_path / "alice", "alice", pa, pb)
    bob = Pane(tmux_server, tmp_path / "bob", "bob", pb, pa)
    alice.wait(r"peer connected: bob")
    bob.wait(r"peer connected: alice")
    bob.send("/send big.bin")
    # A live bar (percent, rate, ETA) on both sides while it runs.
    alice.wait(r"recv big\.bin .*%.*/s ETA", timeout=30)
    bob.wait(r"send big\.bin .*%.*/s ETA", timeout=10)
    alice.send("still talking")
    bob.wait(r"alice: still talking")
    try:
        alice.wait(r"transfer finished: received big\.bin", timeout=90)
    except AssertionError as exc:  # show the sender's side too: why did it stop?
        raise AssertionError(f"{exc}\n--- bob's screen:\n{bob.screen()}") from None
    got = (tmp_path / "alice" / "downloads" / "big.bin").read_bytes()
    assert hashlib.sha256(got).digest() == hashlib.sha256(big).digest()
    assert not re.search(r"recv big\.bin .*ETA", alice.screen().split("transfer finished")[-1])


def test_sender_killed_mid_transfer(tmp_path, tmux_server):
    """The receiver sees the transfer fail and the peer become unreachable;
    nothing half-received is left in its downloads folder."""
    pa, pb = free_udp_port(), free_udp_port()
    for who in ("alice", "bob"):
        (tmp_path / who).mkdir()
    (tmp_path / "bob" / "big.bin").write_bytes(os.urandom(250_000_000))
    alice = Pane(tmux_server, tmp_path / "alice", "alice", pa, pb)
    bob = Pane(tmux_server, tmp_path / "bob", "bob", pb, pa)
    alice.wait(r"peer connected: bob")
    bob.wait(r"peer connected: alice")
    bob.send("/send big.bin")
    alice.wait(r"recv big\.bin .*%.*/s ETA", timeout=30)
    os.kill(bob.pid(), signal.SIGKILL)
    screen = alice.wait(r"transfer failed: big\.bin: connection lost", timeout=20)
    assert "peer unreachable: bob" in screen or "connection to bob lost" in screen
    assert "transfer finished" not in screen
    downloads = tmp_path / "alice" / "downloads"
    assert [p.name for p in downloads.iterdir()] == []  # the .part file was removed
    # The chat itself goes on: it waits for bob again and still takes commands.
    alice.wait(r"connecting to 127\.0\.0\.1:%d" % pb, count=2)
    alice.send("help")
    alice.wait(r"/send PATH")
