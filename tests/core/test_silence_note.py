"""A connection that gives up on its peer says what it last knew of it.

The loss2 pair of bench/lossy.py once lost a connection with only "no
acknowledgment after 15 retransmissions" on one side and "4 keep-alive probes
unanswered" on the other: neither said whether the peer had fallen silent or
was still sending segments that failed a check. Now both errors say when the
last segment from the peer arrived, how many arrived and were dropped, and
where each direction stood.
"""

import re

from gannet.core.endpoint import Endpoint
from gannet.core.events import ConnectionAvailable
from gannet.sim import LinkConfig, Simulator

A, B = ("10.0.0.1", 4000), ("10.0.0.2", 7000)


def _run_until_both_fail(cut_at: float):
    sim = Simulator(seed=3, default_link=LinkConfig(delay=0.05, bandwidth=10e6))
    client = Endpoint(rng=sim.make_rng("a"))
    server = Endpoint(rng=sim.make_rng("b"))
    sim.add_node(A, client)
    sim.add_node(B, server)
    server.listen()
    conn = client.connect(B, sim.now)
    accepted = []
    data = bytes(2_000_000)
    sent = [0]

    def feed():
        if conn.state.name == "ESTABLISHED" and sent[0] < len(data):
            sent[0] += conn.send(memoryview(data)[sent[0]:sent[0] + 65536])
        while (ev := server.next_event()) is not None:
            if isinstance(ev, ConnectionAvailable):
                accepted.append(server.accept())
        for c in accepted:
            while c.recv(1 << 20):
                pass
        sim.call_at(sim.now + 0.01, feed)

    sim.call_at(0.0, feed)
    # From cut_at on the server hears nothing; its segments still reach the client.
    sim.call_at(cut_at, sim.link(A, B).update, loss=1.0)
    sim.run(until=400, stop=lambda: conn.state.name == "CLOSED" and accepted
            and accepted[0].state.name == "CLOSED")
    return conn, accepted[0]


def test_both_ends_say_when_they_last_heard_from_the_peer():
    conn, srv = _run_until_both_fail(cut_at=0.5)
    assert isinstance(conn.error, TimeoutError) and isinstance(srv.error, TimeoutError)
    cmsg, smsg = str(conn.error), str(srv.error)
    assert cmsg.startswith("no acknowledgment after 15 retransmissions (last segment from the peer ")
    assert smsg.startswith("peer unreachable: 4 keep-alive probes unanswered (last segment from the peer ")
    # The server last heard from the client when the link was cut: 10 s of
    # idle and four 5 s probe intervals before it gave up. The client's
    # data went unacknowledged; the four probes did reach it (dropped as out
    # of window and answered, but the answers were lost with everything else).
    server_ago = float(re.search(r"peer ([\d.]+) s ago", smsg).group(1))
    assert server_ago == 30.0, smsg
    assert smsg.endswith(" received, 0 dropped)"), smsg
    assert re.search(r"; \d+ received, 4 dropped; \d+ bytes unacknowledged\)$", cmsg), cmsg
