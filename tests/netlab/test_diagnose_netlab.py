"""Each constructed bottleneck gets its verdict, across real emulated links:
a lossy link, a slow reader, a tiny receive window, a rate-limited link.

The sender (namespace a) writes a qlog trace and judges its own
connection's info at the end (what `gannet send` and `gannet bench` print);
`gannet diagnose` then reads the trace and must say the same.
"""

import json
import os
import subprocess
import sys
import time

import pytest

from netlab_support import skip_unless_netlab_possible

skip_unless_netlab_possible()

from gannet.netlab import LinkConfig, Netlab  # noqa: E402

PY = sys.executable
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "GANNET_NO_STATS": "1"}
PORT = 7200
pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

# receiver HOST PORT SETTINGS_JSON READ_SIZE READ_GAP: reads READ_SIZE bytes
# every READ_GAP seconds (0: as fast as it can) until EOF.
RECEIVER = r"""
import json, sys, time
import gannet
host, port, settings = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
size, gap = int(sys.argv[4]), float(sys.argv[5])
lsock = gannet.Socket(**settings)
lsock.bind((host, port))
lsock.listen(1)
print("ready", flush=True)
conn, _ = lsock.accept()
n = 0
while data := conn.recv(size):
    n += len(data)
    if gap:
        time.sleep(gap)
conn.close()
print(json.dumps({"bytes": n}), flush=True)
"""

# sender HOST PORT NBYTES SETTINGS_JSON QLOG_DIR: sends NBYTES, waits for the
# receiver's close, prints its verdict.
SENDER = r"""
import json, sys, time
import gannet
from gannet.observe import diagnose
host, port, n, settings, qdir = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4]), sys.argv[5]
s = gannet.Socket(qlog_dir=qdir, **settings)
s.connect((host, port))
t0, c0 = time.monotonic(), time.process_time()
block = bytes(range(256)) * 4096
left = n
while left:
    k = min(left, len(block))
    s.sendall(block[:k])
    left -= k
s.shutdown(1)
while s.recv(65536):
    pass
seconds, cpu = time.monotonic() - t0, time.process_time() - c0
info = s.info().as_dict()
v = diagnose.judge(info, seconds=seconds, cpu_seconds=cpu)
s.close()
print(json.dumps({"cause": v.cause, "line": v.line(), "seconds": seconds, "info": info}), flush=True)
"""

CASES = {
    # loss-based congestion control on a 2% lossy link: the window after each loss
    "lossy link": dict(link=dict(delay="10ms", loss="2%", rate="40mbit", queue_bytes="200kb"),
                       sender={"congestion_control": "cubic"}, receiver={}, nbytes=3_000_000,
                       read=(1 << 20, 0.0), cause="congestion window after loss"),
    # the receiving application takes 16 KB every 20 ms (0.8 MB/s) off a fast path
    "slow reader": dict(link=dict(delay="10ms"), sender={}, receiver={}, nbytes=3_000_000,
                        read=(16384, 0.02), cause="receiver window (slow reader)"),
    # a 64 KB window on a 40 ms path: 1.6 MB/s whatever the link could do
    "tiny receive window": dict(link=dict(delay="20ms"), sender={},
                                receiver={"window_size": 65000, "autotune": False}, nbytes=3_000_000,
                                read=(1 << 20, 0.0), cause="receiver window (too small)"),
    # a 20 Mbit/s bottleneck: BBR paces at the rate it measures
    "rate-limited link": dict(link=dict(delay="10ms", rate="20mbit", queue_bytes="150kb"), sender={},
                              receiver={}, nbytes=4_000_000, read=(1 << 20, 0.0), cause="pacing"),
}


def _wait_ready(proc, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("ready"):
            return
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"receiver did not start: {proc.communicate(timeout=5)}")


@pytest.mark.parametrize("case", list(CASES))
def test_each_bottleneck_gets_its_verdict(case, tmp_path):
    c = CASES[case]
    qdir = tmp_path / "qlog"
    with Netlab(a_to_b=LinkConfig(**c["link"]), b_to_a=LinkConfig(delay=c["link"]["delay"]),
                seed=3) as lab:
        recv = lab.popen("b", [PY, "-c", RECEIVER, lab.addr("b"), str(PORT), json.dumps(c["receiver"]),
                               str(c["read"][0]), str(c["read"][1])],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        _wait_ready(recv)
        send = lab.popen("a", [PY, "-c", SENDER, lab.addr("b"), str(PORT), str(c["nbytes"]),
                               json.dumps(c["sender"]), str(qdir)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        try:
            out, err = send.communicate(timeout=90)
            rout, rerr = recv.communicate(timeout=15)
        finally:
            for p in (send, recv):
                if p.poll() is None:
                    p.kill()
        saturated = lab.saturated()
    assert send.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert json.loads(rout.strip().splitlines()[-1])["bytes"] == c["nbytes"], rerr
    assert result["cause"] == c["cause"], (result["line"], saturated)
    # the trace says the same
    diag = subprocess.run([PY, "-m", "gannet", "diagnose", "--json", str(qdir)], capture_output=True,
                          text=True, timeout=60, env=ENV)
    assert diag.returncode == 0, diag.stderr
    verdicts = [json.loads(line) for line in diag.stdout.splitlines()]
    assert len(verdicts) == 1, diag.stdout  # the sender's trace (the receiver wrote none)
    assert verdicts[0]["cause"] == c["cause"], verdicts[0]
