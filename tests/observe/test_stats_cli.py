"""`gannet stats` lists the live connections of running Gannet processes
through their private stats sockets; `gannet wireshark` says where the
dissector is; every command takes --qlog/--pcap/--no-stats."""

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time

import pytest

from gannet.cli.main import build_parser
from listening import as_foreground, start_listening

GANNET = [sys.executable, "-m", "gannet"]
pytestmark = pytest.mark.timeout(90)


def _env(tmp_path, **extra):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "XDG_RUNTIME_DIR": str(tmp_path)}
    env.pop("GANNET_NO_STATS", None)
    return {**env, **extra}


def _start(args, env, err):
    return start_listening(args, err, env, wait=10)


def test_stats_lists_live_connections_of_other_processes(tmp_path):
    env = _env(tmp_path)
    server, port = _start(["bench", "server", "--host", "127.0.0.1", "--port", "0", "--once"], env,
                          tmp_path / "server.err")
    client = subprocess.Popen(GANNET + ["bench", "client", f"127.0.0.1:{port}", "--time", "60"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                              preexec_fn=as_foreground)
    try:
        sockdir = tmp_path / "gannet"
        found = None
        deadline = time.monotonic() + 30
        while found is None and time.monotonic() < deadline:
            out = subprocess.run(GANNET + ["stats", "--json"], capture_output=True, text=True, env=env,
                                 timeout=20)
            assert out.returncode == 0, out.stderr
            procs = [json.loads(line) for line in out.stdout.splitlines()]
            for p in procs:
                for c in p["connections"]:
                    if c["bytes_acked"] > 100_000 and c["busy_time"]:
                        found = (p, c, procs)
            time.sleep(0.1)
        assert found, "no sending connection listed"
        p, c, procs = found
        assert p["pid"] == client.pid  # the client sends
        assert {q["pid"] for q in procs} == {client.pid, server.pid}
        assert c["srtt"] > 0 and c["cwnd"] > 0 and c["state"] == "ESTABLISHED"
        # only this user may look: a private directory, a private socket
        assert stat.S_IMODE(os.stat(sockdir).st_mode) == 0o700
        for name in os.listdir(sockdir):
            assert stat.S_IMODE(os.stat(sockdir / name).st_mode) == 0o600
        text = subprocess.run(GANNET + ["stats", "--pid", str(client.pid)], capture_output=True,
                              text=True, env=env, timeout=20).stdout
        assert f"pid {client.pid}" in text and "rtt:" in text and "cwnd:" in text and "busy:" in text
        for proc in (client, server):
            proc.send_signal(signal.SIGINT)  # as a person stops them
        client.wait(30)
        server.wait(30)
        # a process that ended took its socket with it
        assert not [n for n in os.listdir(sockdir) if n in (f"{client.pid}.sock", f"{server.pid}.sock")]
    finally:
        for proc in (client, server):
            if proc.poll() is None:
                proc.kill()


def test_no_stats_opens_no_socket(tmp_path):
    for env, args in ((_env(tmp_path), ["--no-stats"]), (_env(tmp_path, GANNET_NO_STATS="1"), [])):
        proc, _ = _start(["echo-server", "--host", "127.0.0.1", "--port", "0", *args], env,
                         tmp_path / "echo.err")
        try:
            time.sleep(0.3)
            sockdir = tmp_path / "gannet"
            assert not sockdir.exists() or f"{proc.pid}.sock" not in os.listdir(sockdir)
        finally:
            proc.terminate()
            proc.wait(10)


def test_stats_refuses_a_directory_others_may_enter(tmp_path):
    sockdir = tmp_path / "gannet"
    sockdir.mkdir(mode=0o755)
    os.chmod(sockdir, 0o755)
    out = subprocess.run(GANNET + ["stats", "--json"], capture_output=True, text=True,
                         env=_env(tmp_path), timeout=20)
    assert out.returncode == 0 and out.stdout == ""


def test_every_command_takes_the_observing_options():
    parser = build_parser()
    for argv in (["send", "f", "h:1"], ["receive", "--port", "1", "--dir", "d"], ["demo"],
                 ["bench", "client", "h:1"], ["echo-server"]):
        args = parser.parse_args([*argv[:1], "--qlog", "q", "--pcap", "p.pcap", *argv[1:]]
                                 if argv[0] != "bench" else ["bench", "client", "--qlog", "q", "h:1"])
        assert args.qlog == "q"
    args = parser.parse_args(["--qlog", "top", "demo"])
    assert args.qlog == "top"  # before the command too, and a subcommand does not reset it


def test_wireshark_command_prints_the_dissector(tmp_path):
    out = subprocess.run(GANNET + ["wireshark"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0
    path = re.search(r"dissector: (\S+)", out.stdout).group(1)
    assert os.path.isfile(path) and path.endswith("gannet.lua")
    assert 'Proto("gannet"' in open(path).read()
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path)}
    out = subprocess.run(GANNET + ["wireshark", "--install"], capture_output=True, text=True, env=env,
                         timeout=20)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "wireshark" / "plugins" / "gannet.lua").read_text() == open(path).read()
