"""Packetdrill-style conformance scripts (scripts/*.pkt, format in drill.py),
run against Gannet's TCP wire (sans I/O, deterministic) and, as root in a
namespace the test makes, against the Linux kernel: the scripts themselves
are checked against Linux."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from drill import GannetBackend, Runner

SCRIPTS = sorted((pathlib.Path(__file__).parent / "scripts").glob("*.pkt"))
DRILL = pathlib.Path(__file__).parent / "drill.py"
pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_gannet(script):
    Runner(GannetBackend(), tolerance=0.002).run(script.read_text())


@pytest.mark.netns
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None
                    or not os.path.exists("/dev/net/tun"), reason="needs root, ip and TUN")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_linux(script):
    ns = f"gdrill{os.getpid()}{script.stem[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, str(DRILL), "kernel", str(script)],
                           capture_output=True, text=True, timeout=50,
                           env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    finally:
        subprocess.run(["ip", "netns", "del", ns])
    assert r.returncode == 0, r.stdout + r.stderr
