"""bench/rtt_phases.py: a round trip cut at its sends and wake-ups, from
system call traces (synthetic traces here; the tool itself needs perf)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import rtt_phases  # noqa: E402

C, S = 10, 20  # the client's and the server's main threads


def call(t, tid, name, ret="1"):
    """A system call from t to t + 1 (us): its enter and exit events."""
    return [(t, tid, name, "enter", ""), (t + 1.0, tid, name, "exit", ret)]


def round_trip(t0):
    """Client sends at t0; the server wakes at t0+10, replies at t0+30; the
    client wakes at t0+45 and reads; a timer wakes the server at t0+50."""
    c = call(t0, C, "sendto") + call(t0 + 2, C, "epoll_pwait")  # (its exit: the wake below)
    c[-1] = (t0 + 45.0, C, "epoll_pwait", "exit", "1")
    c += call(t0 + 47, C, "recvmsg")
    s = [(t0 + 10.0, S, "epoll_pwait", "exit", "1")]
    s += call(t0 + 12, S, "recvmsg") + call(t0 + 20, S, "ioctl") + call(t0 + 30, S, "sendto")
    s += [(t0 + 33.0, S, "epoll_pwait", "enter", ""), (t0 + 50.0, S, "epoll_pwait", "exit", "0"),
          (t0 + 51.0, S, "epoll_pwait", "enter", "")]
    return c, s


def traces(n):
    client, server = [], []
    for i in range(n):
        c, s = round_trip(100.0 * i)
        client += c
        server += s
    server.insert(0, (-5.0, S, "epoll_pwait", "enter", ""))
    return client, server


def test_the_four_legs_of_each_round_trip():
    client, server = traces(20)
    legs = rtt_phases.crossing(client, C, server, S)
    med = {k: sorted(v)[len(v) // 2] for k, v in legs.items()}
    assert med == {"client send -> server wake-up": 10.0, "server wake-up -> server send": 20.0,
                   "server send -> client wake-up": 15.0, "client wake-up -> client send": 55.0}
    assert len(legs["server wake-up -> server send"]) == 20


def test_a_wait_that_returned_no_event_starts_no_activation():
    _, server = traces(5)
    acts = rtt_phases.activations(server, S)
    assert len(acts) == 5  # the timer's wake-ups (return value 0) are not activations
    steps = rtt_phases.typical(acts)
    assert steps == [("epoll_pwait returns", 0.0), ("recvmsg enter", 2.0), ("recvmsg returns", 3.0),
                     ("ioctl enter", 10.0), ("ioctl returns", 11.0), ("sendto enter", 20.0),
                     ("sendto returns", 21.0), ("epoll_pwait enter", 23.0)]


def test_the_counting_window_leaves_out_the_first_and_last_tenth():
    client, _ = traces(50)
    lo, hi, n = rtt_phases.window(client, C)
    assert (lo, hi, n) == (500.0, 4400.0, 39)
    calls = [e for e in client if lo <= e[0] < hi and e[3] == "enter"]
    assert sum(1 for e in calls if e[2] == "sendto") == n
