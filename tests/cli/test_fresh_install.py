"""Every tool of the issue works from a fresh install: the project is built
and installed (not in editable mode) into a new virtual environment with pip,
and the installed `gannet` script is run from an empty folder, with no
PYTHONPATH and no source tree around it."""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import gannet
from gannet_cli_helpers import stop

ROOT = Path(gannet.__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(900)  # the install compiles the core (about a minute)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    if not (ROOT / "pyproject.toml").is_file():
        pytest.skip(f"gannet is not imported from a source checkout ({ROOT})")
    base = tmp_path_factory.mktemp("fresh")
    pkg = base / "pkg"
    pkg.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, pkg / name)
    shutil.copytree(ROOT / "src", pkg / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc", "*.so"))
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    res = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", str(pkg)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"pip install failed:\n{res.stdout}\n{res.stderr}"
    work = base / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONUNBUFFERED"] = "1"
    return venv / "bin" / "gannet", work, env


def run(installed, *args, input=None, timeout=60):
    exe, work, env = installed
    return subprocess.run([str(exe), *args], cwd=work, env=env, input=input, capture_output=True,
                          text=True, timeout=timeout)


def start(installed, *args, name):
    exe, work, env = installed
    err = work / f"{name}.err"
    proc = subprocess.Popen([str(exe), *args], cwd=work, env=env, stdout=subprocess.PIPE,
                            stderr=err.open("w"), text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        m = re.search(r"listening on [\d.]+:(\d+)", err.read_text())
        if m:
            return proc, int(m.group(1)), err
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"{args} did not start: {err.read_text()}")


def test_installed_from_the_package_not_the_source_tree(installed):
    exe, work, env = installed
    out = subprocess.run([str(exe.parent / "python"), "-c", "import gannet; print(gannet.__file__)"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "site-packages" in out.stdout and str(ROOT) not in out.stdout


def test_the_install_compiled_the_core_where_it_could(installed):
    """`pip install .` builds the compiled core when a C compiler is there
    (setup.py); the pure core stays selectable with GANNET_PURE=1."""
    exe, work, env = installed
    probe = "import gannet._build as b; print(b.build())"
    py = str(exe.parent / "python")
    built = subprocess.run([py, "-c", probe], cwd=work, env=env, capture_output=True, text=True, timeout=30)
    assert built.returncode == 0, built.stderr
    expected = "compiled" if shutil.which(os.environ.get("CC") or "cc") else "pure"
    assert built.stdout.strip() == expected
    pure = subprocess.run([py, "-c", probe], cwd=work, env={**env, "GANNET_PURE": "1"},
                          capture_output=True, text=True, timeout=30)
    assert pure.stdout.strip() == "pure", pure.stderr


def test_every_command_has_help(installed):
    for cmd in (["chat"], ["send"], ["receive"], ["server"], ["client"], ["echo-server"],
                ["echo"], ["tunnel", "server"], ["tunnel", "client"], ["demo"]):
        out = run(installed, *cmd, "--help")
        assert out.returncode == 0 and out.stdout.startswith("usage: gannet"), (cmd, out.stderr)


def test_the_wireshark_dissector_is_installed(installed):
    out = run(installed, "wireshark", "--path")
    assert out.returncode == 0, out.stderr
    path = Path(out.stdout.strip())
    assert "site-packages" in str(path) and path.is_file() and path.name == "gannet.lua"


def test_demo(installed):
    out = run(installed, "demo", timeout=120)
    assert out.returncode == 0, out.stderr
    assert re.search(r"SHA-256\s.*verified", out.stdout + out.stderr)


def test_echo(installed):
    server, port, _ = start(installed, "echo-server", "--port", "0", name="echo")
    try:
        out = run(installed, "echo", f"127.0.0.1:{port}", input="one\ntwo\n")
        assert out.returncode == 0, out.stderr
        assert out.stdout == "one\ntwo\n"
    finally:
        stop(server)


def test_send_receive(installed):
    exe, work, env = installed
    (work / "outbox").mkdir()
    data = os.urandom(3_000_000)
    (work / "outbox" / "file.bin").write_bytes(data)
    receiver, port, _ = start(installed, "receive", "--host", "127.0.0.1", "--port", "0",
                              "--dir", "inbox", "--once", "--code", "5-fresh-send", name="receive")
    try:
        out = run(installed, "send", "outbox", f"127.0.0.1:{port}", "--code", "5-fresh-send")
        assert out.returncode == 0, out.stderr
        assert receiver.wait(20) == 0
        assert (work / "inbox" / "outbox" / "file.bin").read_bytes() == data
    finally:
        stop(receiver)


def test_server_client(installed):
    server, port, err = start(installed, "server", "--port", "0", "--max-size", "64",
                              name="server")
    try:
        out = run(installed, "client", "--server-port", str(port), "--operation-mode", "burst",
                  input="hello\nworld\n")
        assert out.returncode == 0, out.stderr
        assert "mode=burst" in out.stderr and "max_packet_size=64" in out.stderr
    finally:
        stop(server)
    assert server.stdout.read() == "hello\nworld\n"


def test_tunnel(installed):
    import socket

    target = socket.create_server(("127.0.0.1", 0))
    tserver, sport, _ = start(installed, "tunnel", "server", "--listen", "127.0.0.1:0",
                              "--target", f"127.0.0.1:{target.getsockname()[1]}", name="ts")
    tclient, cport, _ = start(installed, "tunnel", "client", "--listen", "127.0.0.1:0",
                              "--server", f"127.0.0.1:{sport}", name="tc")
    try:
        with socket.create_connection(("127.0.0.1", cport), timeout=10) as app:
            svc, _ = target.accept()
            with svc:
                app.sendall(b"through the tunnel")
                svc.settimeout(10)
                assert svc.recv(100) == b"through the tunnel"
    finally:
        stop(tclient)
        stop(tserver)
        target.close()


def test_chat_without_a_terminal(installed):
    """Two chats through pipes: alice's line reaches bob's stdout, then both quit."""
    import socket

    exe, work, env = installed
    ports = []
    for _ in range(2):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    pa, pb = ports
    bob = subprocess.Popen([str(exe), "chat", "--listen", str(pb), "--peer", f"127.0.0.1:{pa}",
                            "--name", "bob", "--dir", "bob-downloads", "--code", "3-fresh-install"],
                           cwd=work, env=env,
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        alice = run(installed, "chat", "--listen", str(pa), "--peer", f"127.0.0.1:{pb}",
                    "--name", "alice", "--code", "3-fresh-install", input="hello from a fresh install\n",
                    timeout=60)
        assert alice.returncode == 0, alice.stderr
        assert "peer connected: bob" in alice.stderr
        out, err = bob.communicate("", timeout=30)  # end of bob's input: he quits too
    finally:
        if bob.poll() is None:
            bob.kill()
    assert bob.returncode == 0, err
    assert re.search(r"alice: hello from a fresh install", out), (out, err)
