"""The verdict line at the end of `gannet send` and `gannet bench`, and the
connection info in `gannet bench --json`."""

import json
import os
import re
import subprocess
import sys

import pytest

from gannet.observe.info import INFO_FIELDS
from listening import start_listening

GANNET = [sys.executable, "-m", "gannet"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "GANNET_NO_STATS": "1"}
pytestmark = pytest.mark.timeout(120)


def _start(args, err):
    return start_listening(args, err, ENV)


def test_bench_json_has_sender_info_and_a_verdict(tmp_path):
    server, port = _start(["bench", "server", "--host", "127.0.0.1", "--port", "0", "--once"],
                          tmp_path / "server.err")
    try:
        out = subprocess.run(GANNET + ["bench", "client", f"127.0.0.1:{port}", "--bytes", "20M", "--json"],
                             capture_output=True, text=True, timeout=90, env=ENV)
    finally:
        server.wait(30)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert len(r["sender_info"]) == 1
    info = r["sender_info"][0]
    assert set(info) == set(INFO_FIELDS)
    # the pattern bytes and the stream's hello line before them
    assert r["bytes_sent"] < info["bytes_acked"] < r["bytes_sent"] + 200 and info["role"] == "client"
    assert info["busy_time"] > 0  # bench tracks limits on its data connections
    v = r["verdict"]
    assert v["line"].startswith("limited by ") and v["cause"] in v["line"]
    assert f"verdict   {v['line']}" in out.stderr  # the human summary's last line


def test_send_prints_what_limited_it(tmp_path):
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(2_000_000))
    recv, port = _start(["receive", "--host", "127.0.0.1", "--port", "0", "--dir", str(tmp_path / "in"),
                         "--once"], tmp_path / "recv.err")
    code = re.search(r"code: (\S+)", (tmp_path / "recv.err").read_text()).group(1)
    try:
        # --limit-rate: the sending application is the limit, and says so
        out = subprocess.run(GANNET + ["send", "--limit-rate", "16mbit", "--code", code, str(src),
                                       f"127.0.0.1:{port}"],
                             capture_output=True, text=True, timeout=90, env=ENV)
    finally:
        recv.wait(30)
    assert out.returncode == 0, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("gannet send: verdict: limited by application: nothing to send"), last
