"""gannet.netlab: a real emulated network for end-to-end tests (root, Linux).

Two network namespaces joined by TUN devices and a user-space forwarder that
applies per-direction delay, jitter, loss (random and Gilbert-Elliott bursts),
rate limiting with a drop-tail queue, reordering, duplication, corruption and
an MTU, seeded and changeable while running. See docs/netlab.md.
"""

from .capacity import measure_capacity
from .config import DIRECTIONS, LinkConfig
from .lab import Netlab, NetlabError
from .link import Link
from .units import parse_percent, parse_queue, parse_rate, parse_size, parse_time

__all__ = ["DIRECTIONS", "Link", "LinkConfig", "Netlab", "NetlabError", "measure_capacity",
           "parse_percent", "parse_queue", "parse_rate", "parse_size", "parse_time"]
