"""Packetdrill-style conformance scripts (scripts/*.pkt, format in drill.py),
run against Gannet's TCP wire (sans I/O, deterministic) and, as root in a
namespace the test makes, against the Linux kernel: the scripts themselves
are checked against Linux."""

import os
import pathlib
import re
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


HANDSHAKE = """
0      listen
+0     < S 0:0(0) win 65535 <mss 1460,sackOK,TS val 100 ecr 0,nop,wscale 7>
"""


@pytest.mark.parametrize("tail, message", [
    ("+0 > S. 0:0(0) ack 2", "ack: want 2, got 1"),
    ("+0 > S. 0:0(0) ack 1 <mss 1400>", "mss: want 1400, got 1460"),
    ("+0 > . 0:0(0) ack 1", "flags: want ."),
    ("0.5 > S. 0:0(0) ack 1", "before 0.498"),
    ("+0.5 listen", "unexpected segment at 0.000"),
    ("+0 > S. 0:0(0) ack 1\n+0.5 > . 1:1(0) ack 1", "no segment by 0.502"),
])
def test_the_runner_reports_each_difference_with_its_line(tail, message):
    from drill import DrillError

    with pytest.raises(DrillError, match=r"line \d+ .*" + re.escape(message)):
        Runner(GannetBackend(), tolerance=0.002).run(HANDSHAKE + tail)


def test_an_unexpected_segment_after_the_script_fails():
    from drill import DrillError

    with pytest.raises(DrillError, match="unexpected segment after the script"):
        Runner(GannetBackend(), tolerance=0.002).run(HANDSHAKE)
