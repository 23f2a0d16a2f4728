"""`gannet id` and `gannet trust`, run as a person would, with the config
directory in a temporary XDG_CONFIG_HOME."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys

GANNET = [sys.executable, "-m", "gannet"]


def _run(home, *args):
    env = {**os.environ, "XDG_CONFIG_HOME": str(home)}
    return subprocess.run(GANNET + list(args), capture_output=True, text=True, timeout=30, env=env,
                          stdin=subprocess.DEVNULL)


def test_id_makes_one_identity_and_shows_it(tmp_path):
    first = _run(tmp_path, "id")
    assert first.returncode == 0 and "made a new identity" in first.stderr
    key_line, fp_line = first.stdout.splitlines()
    assert key_line.startswith("key: ") and fp_line.startswith("fingerprint: SHA256:")
    assert len(base64.b64decode(key_line[5:])) == 32
    again = _run(tmp_path, "id")
    assert again.stdout == first.stdout and again.stderr == ""
    assert stat.S_IMODE((tmp_path / "gannet" / "identity").stat().st_mode) == 0o600


def test_trust_add_list_remove(tmp_path):
    key = base64.b64encode(bytes(range(32))).decode()
    other = base64.b64encode(bytes(32)).decode()
    assert _run(tmp_path, "trust").stdout == ""
    assert _run(tmp_path, "trust", "add", "srv:7000", key).returncode == 0
    listed = _run(tmp_path, "trust", "list").stdout.split()
    assert listed[0] == "srv:7000" and listed[1].startswith("SHA256:") and listed[2] == key
    changed = _run(tmp_path, "trust", "add", "srv:7000", other)
    assert changed.returncode == 1 and "--replace" in changed.stderr and len(changed.stderr.splitlines()) == 1
    assert _run(tmp_path, "trust", "add", "srv:7000", other, "--replace").returncode == 0
    assert _run(tmp_path, "trust").stdout.split()[2] == other
    assert _run(tmp_path, "trust", "remove", "srv:7000").returncode == 0
    gone = _run(tmp_path, "trust", "remove", "srv:7000")
    assert gone.returncode == 1 and "no key pinned" in gone.stderr
    bad = _run(tmp_path, "trust", "add", "srv:1", "not-a-key")
    assert bad.returncode == 1 and "base64" in bad.stderr


def test_new_psk_file(tmp_path):
    path = tmp_path / "t.psk"
    assert _run(tmp_path, "id", "--new-psk", str(path)).returncode == 0
    assert len(base64.b64decode(path.read_text())) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = _run(tmp_path, "id", "--new-psk", str(path))
    assert again.returncode == 1 and "exists" in again.stderr
