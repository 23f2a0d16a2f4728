"""Start-up: importing Gannet, or parsing a command line, loads none of the
heavy modules (asyncio, numpy, cryptography, rich, zstandard, spake2) until a
command uses them.

Each check runs in a fresh interpreter: in this one they are loaded already.
"""

import argparse
import json
import subprocess
import sys

import pytest

from gannet.cli import main as cli_main

HEAVY = ("asyncio", "numpy", "cryptography", "rich", "zstandard", "spake2", "uvloop",
         "importlib.metadata")


def loaded_after(code: str) -> list[str]:
    probe = (
        "import sys\n"
        f"{code}\n"
        f"import json; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("code", [
    "import gannet",
    "import gannet.cli.main",
    "import gannet.io",
    "import gannet.apps.transfer",
    "import gannet.apps.messages.codec, gannet.apps.messages.transport",
    # the command lines' parsers: --help, and each command's own
    "from gannet.cli.main import COMMANDS, build_parser\n"
    "for argv in (['--help'], *([name, '--help'] for name in COMMANDS)):\n"
    "    build_parser(argv)",
    # every command's parser at once (every cli module imported)
    "from gannet.cli.main import build_parser\nbuild_parser()",
], ids=["gannet", "cli.main", "io", "apps.transfer", "apps.messages", "parsers", "all-parsers"])
def test_nothing_heavy_is_loaded(code):
    assert loaded_after(code) == []


def test_the_public_names_still_load_on_use():
    assert loaded_after("import gannet; gannet.Socket; gannet.open_connection") != []
    import gannet

    assert {"Socket", "Config", "open_connection", "start_server"} <= set(dir(gannet))
    with pytest.raises(AttributeError):
        gannet.no_such_name  # noqa: B018


def test_gannet_help_lists_every_command_without_importing_them():
    out = subprocess.run(
        [sys.executable, "-c",
         "import sys\n"
         "from gannet.cli.main import main\n"
         "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
         "print([m for m in sys.modules if m.startswith('gannet.cli.') and m != 'gannet.cli.main'])"],
        capture_output=True, text=True, timeout=60, check=True)
    for name in cli_main.COMMANDS:
        assert f"    {name}" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_help_lines_have_one_home():
    """Each command's parser (registered by its module) carries the help line
    that `gannet --help` shows without importing the module."""
    parser = cli_main.build_parser()  # every module imported
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in sub._choices_actions}
    assert helps == {name: line for name, (_, line) in cli_main.COMMANDS.items()}


@pytest.mark.parametrize("argv", [["--help"], ["send", "--help"], ["receive", "--help"]],
                         ids=["help", "send-help", "receive-help"])
def test_the_gannet_command_imports_nothing_heavy_for_help(argv):
    """The real process, as a user starts it: what `-X importtime` lists."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "gannet", *argv],
                         capture_output=True, text=True, timeout=60, check=True)
    assert "usage: gannet" in out.stdout
    imported = {line.rsplit("|", 1)[1].strip() for line in out.stderr.splitlines()
                if line.startswith("import time:") and "|" in line}
    assert "argparse" in imported  # (the listing is there to be read)
    heavy = {name for name in imported if name in HEAVY or name.startswith(tuple(h + "." for h in HEAVY))}
    assert not heavy, heavy


def test_a_host_name_is_looked_up_early_on_a_thread(monkeypatch):
    """`gannet send HOST:PORT` warms the resolver while it loads (the first
    lookup of a process loads the resolver's modules); an address needs none."""
    import socket
    import threading

    from gannet.cli.main import resolve_early

    asked: list[tuple[object, threading.Thread]] = []

    def getaddrinfo(host, port, *args, **kwargs):
        asked.append((host, threading.current_thread()))
        raise socket.gaierror(socket.EAI_NONAME, "not here")  # (errors are the real lookup's)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    before = set(threading.enumerate())
    for address in ("127.0.0.1", "::1", "fe80::1"):
        resolve_early(address)
    assert set(threading.enumerate()) <= before and asked == []
    resolve_early("receiver.example")
    for thread in set(threading.enumerate()) - before:
        thread.join(5)
    assert [host for host, _ in asked] == ["receiver.example"]
    assert asked[0][1] is not threading.main_thread()


def test_a_client_loads_nothing_it_needs_only_after_its_syn():
    """What `gannet send` imports on its way to the SYN (the transfer, the
    encrypted endpoint, known_hosts) leaves out what only later work uses:
    cryptography's serialization (its SSH, RSA and DSA modules; the reset key
    is read raw), ctypes (malloc's tuning runs on the loop's next pass),
    tempfile (only to write known_hosts) and the connection info's module
    (read at the connection's end), though the observer is on."""
    probe = ("import sys\n"
             "import gannet.apps.transfer.sender, gannet.io.aio, gannet.io.endpoint\n"
             "import gannet.crypto.endpoint, gannet.crypto.known_hosts, gannet.observe.trace\n"
             "print([m for m in ('cryptography.hazmat.primitives.serialization', 'ctypes', "
             "'tempfile', 'gannet.observe.info') if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


# The real `gannet send`, run to its first datagram: an audit hook marks the
# first `sendto` (the SYN, to a UDP port the test holds on loopback) on
# stderr, where -X importtime lists each import as it ends, and ends the
# process there, before the datagram leaves.
_TO_THE_SYN = (
    "import os, runpy, sys\n"
    "def hook(event, args):\n"
    "    if event == 'socket.sendto':\n"
    "        sys.stderr.write(f'-- SYN to {args[1][1]} --\\n'); sys.stderr.flush(); os._exit(0)\n"
    "sys.addaudithook(hook)\n"
    "sys.argv = ['gannet', *sys.argv[1:]]\n"
    "runpy.run_module('gannet', run_name='__main__', alter_sys=True)\n"
)


def imported_before_the_syn(tmp_path, *options: str) -> set[str]:
    import os
    import socket

    sent = tmp_path / "file.bin"
    sent.write_bytes(b"x" * 1000)
    # (as a user runs it, stats socket included, in a directory of the test's:
    # the process ends without removing its socket)
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "XDG_RUNTIME_DIR": str(tmp_path)}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        out = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", _TO_THE_SYN, "send", str(sent),
             f"127.0.0.1:{peer.getsockname()[1]}", "--connect-timeout", "5", *options],
            capture_output=True, text=True, timeout=60, env=env)
        marker = f"-- SYN to {peer.getsockname()[1]} --"
    lines = out.stderr.splitlines()
    assert marker in lines, out.stderr[-2000:]
    imported = {line.rsplit("|", 1)[1].strip() for line in lines[:lines.index(marker)]
                if line.startswith("import time:") and "|" in line}
    assert "gannet.crypto.endpoint" in imported  # (the listing is there to be read)
    return imported


@pytest.mark.parametrize("options", [["--code", "7-guitar-october"], []],
                         ids=["code", "trust-on-first-use"])
def test_a_sender_imports_before_its_syn_nothing_it_needs_only_after(tmp_path, options):
    """Left off a sender's way to its SYN: shutil (which argparse imports
    to measure the terminal whenever it makes a help formatter, also to check
    each argument's metavar; it brings bz2 and lzma), known_hosts (read
    when the SYN-ACK brings the server's key) and the pcap writer (the
    observer is on for the stats socket, but nothing is captured); with a
    code, the key files' modules (identity, PSK), as no key file is read,
    and pathlib (with urllib.parse and ipaddress: the files to send are
    collected with os.path)."""
    imported = imported_before_the_syn(tmp_path, *options)
    later = imported & {"shutil", "gannet.crypto.known_hosts", "gannet.observe.pcap"}
    assert not later, later
    if "--code" in options:  # (without one, the client's identity key is read)
        later = imported & {"gannet.crypto.identity", "gannet.crypto.psk", "pathlib"}
        assert not later, later


def test_a_receiver_loads_what_its_first_transfer_needs_while_it_waits(tmp_path):
    """A `gannet receive` with a code that no sender has reached yet has
    loaded, while it waited, what its first transfer's critical path would
    otherwise wait for: spake2 and its SPAKE2 message, its static key (with
    cryptography's OpenSSL backend module, which the first X25519 key
    loads) and zstandard (every transfer's decompressor, loaded on a
    thread). (The `import` audit events, not -X importtime: its listing
    loses imports made on another thread.)"""
    import os
    import signal
    import time

    probe = ("import os, runpy, sys\n"
             "def hook(event, args):\n"
             "    if event == 'import':\n"
             "        os.write(2, f'-- import {args[0]} --\\n'.encode())\n"
             "sys.addaudithook(hook)\n"
             "sys.argv = ['gannet', *sys.argv[1:]]\n"
             "runpy.run_module('gannet', run_name='__main__', alter_sys=True)\n")
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_RUNTIME_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", probe, "receive", "--host", "127.0.0.1", "--port", "0",
         "--dir", str(tmp_path / "in")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    import queue
    import threading

    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stderr], daemon=True).start()
    wanted = {"spake2", "cryptography.hazmat.backends.openssl.backend", "zstandard"}
    imported: set[str] = set()
    listening = False
    deadline = time.monotonic() + 60
    try:
        while not (listening and wanted <= imported) and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                break
            if line.startswith("-- import "):
                name = line.split()[2]
                # (importlib.import_module, which the loading thread calls,
                # raises no audit event: the package's own imports show it)
                imported.add("zstandard" if name.startswith("zstandard.") else name)
            listening = listening or "listening on" in line
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
    assert listening
    assert wanted <= imported, wanted - imported


def test_a_sender_with_a_code_leaves_spake2_to_a_child_on_another_core(tmp_path):
    """spake2 (its import and the first SPAKE2 message, about a third of the
    way to the SYN) runs in a child that `gannet send --code` forks once it
    has parsed its command line (gannet.io.spake_child): the sender's own
    process reaches its SYN without importing it, and the child has. The
    fork comes before what only the sender needs (the transfer protocol's
    module with dataclasses, asyncio, `secrets`), so that the child starts
    early, and after what both need (hashlib, json, cryptography's
    bindings), so that it is done once. A sender without a code forks
    nothing. (The `import` and `os.fork` audit events, each with its
    process's id; GANNET_SPAKE_CHILD=1, as the child is otherwise started
    only where a CPU is likely idle.)"""
    import os
    import socket

    probe = ("import os, runpy, sys\n"
             "def hook(event, args):\n"
             "    if event == 'import':\n"
             "        os.write(2, f'-- {os.getpid()} import {args[0]} --\\n'.encode())\n"
             "    elif event == 'os.fork':\n"
             "        os.write(2, f'-- {os.getpid()} fork --\\n'.encode())\n"
             "    elif event == 'socket.sendto':\n"
             "        os.write(2, f'-- {os.getpid()} SYN --\\n'.encode()); os._exit(0)\n"
             "sys.addaudithook(hook)\n"
             "sys.argv = ['gannet', *sys.argv[1:]]\n"
             "runpy.run_module('gannet', run_name='__main__', alter_sys=True)\n")
    sent = tmp_path / "file.bin"
    sent.write_bytes(b"x" * 1000)
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_RUNTIME_DIR": str(tmp_path),
           "GANNET_SPAKE_CHILD": "1"}  # (whatever this machine's load)
    for options in (["--code", "7-guitar-october"], []):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.bind(("127.0.0.1", 0))
            proc = subprocess.run(
                [sys.executable, "-c", probe, "send", str(sent),
                 f"127.0.0.1:{peer.getsockname()[1]}", "--connect-timeout", "5", *options],
                capture_output=True, text=True, timeout=60, env=env)
        lines = [line.split() for line in proc.stderr.splitlines() if line.startswith("-- ")]
        syn = next(i for i, words in enumerate(lines) if words[2] == "SYN")
        sender = lines[syn][1]
        imported: dict[str, set[str]] = {}
        for words in lines[:syn]:
            if words[2] == "import":
                imported.setdefault(words[1], set()).add(words[3])
        assert "gannet.crypto.endpoint" in imported[sender]  # (the listing is there to be read)
        assert "spake2" not in imported[sender]
        children = set(imported) - {sender}
        forks = [i for i, words in enumerate(lines) if words[2] == "fork"]
        if options:
            assert len(children) == 1, imported.keys()
            assert "spake2" in imported[next(iter(children))]
            assert len(forks) == 1 and lines[forks[0]][1] == sender
            before = {words[3] for words in lines[:forks[0]] if words[2] == "import"}
            assert "gannet.apps.transfer" in before  # (the command's parser: the listing is there to be read)
            early = before & {"gannet.apps.transfer.protocol", "dataclasses", "asyncio", "secrets"}
            assert not early, early
            assert {"hashlib", "json", "cryptography.hazmat.primitives.kdf.hkdf"} <= before
            assert not {"hashlib", "json", "cryptography"} & imported[children.pop()]
        else:
            assert not children and not forks
