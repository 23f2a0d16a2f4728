"""`gannet demo`: a verified transfer across the simulator, and what it reports."""

import hashlib
import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(120)

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}


def demo(*args):
    return subprocess.run([sys.executable, "-m", "gannet", "demo", *args], capture_output=True,
                          text=True, timeout=100, env=ENV)


def test_demo_transfers_verifies_and_reports():
    done = demo("--size", "300KB")
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert re.search(r"bytes delivered\s*│\s*300,000 of 300,000", out), out
    assert "verified" in out and "MISMATCH" not in out
    assert re.search(r"transfer time\s*│\s*\d+\.\d+ s simulated", out), out
    assert re.search(r"retransmissions\s*│\s*\d+ \(\d+ fast recoveries, \d+ timeouts\)", out), out
    assert re.search(r"smoothed RTT\s*│\s*\d+\.\d ms", out), out
    assert "clean four-way close on both sides" in out
    # Encrypted by default, as every Gannet connection is; it says so.
    assert re.search(r"security: encrypted \((AES-128-GCM|ChaCha20-Poly1305)\) and authenticated: the "
                     r"server's key SHA256:[A-Za-z0-9+/]{43} \(made for this demo\) is pinned", out), out
    sealed = re.search(r"encryption\s*│\s*([\d,]+) datagrams sealed; dropped: \d+ failed authentication",
                       out)
    assert sealed and int(sealed.group(1).replace(",", "")) > 200, out
    assert "caught by the AEAD tag" in out and "WARNING" not in out


def test_demo_insecure_runs_in_clear_and_says_so_loudly():
    done = demo("--size", "100KB", "--insecure")
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert done.stderr.startswith("gannet demo: WARNING: --insecure: no encryption, no authentication")
    assert "security: none (--insecure)" in out and "caught by CRC32C" in out
    assert re.search(r"encryption\s*│\s*none \(--insecure\)", out), out
    assert "verified" in out


def test_demo_sends_a_given_file_over_bursty_loss(tmp_path):
    path = tmp_path / "payload.bin"
    data = os.urandom(200_000)
    path.write_bytes(data)
    done = demo(str(path), "--loss", "10%", "--burst-loss", "--seed", "3")
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "200,000 of 200,000" in out
    assert hashlib.sha256(data).hexdigest()[:16] in out
    assert "bursty loss" in out


@pytest.mark.parametrize("args, message", [
    (["/no/such/file"], "no such file"),
    (["--loss", "lots"], "--loss: not a probability"),
    (["--loss", "150%"], "--loss: not a probability"),
    (["--delay", "soon"], "--delay: not a duration"),
    (["--rate", "fast"], "--rate: not a rate"),
    (["--size", "big"], "--size"),
    (["--cc", "vegas"], "--cc: unknown congestion_control"),
])
def test_demo_bad_input_is_one_clear_line(args, message):
    done = demo(*args)
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr
