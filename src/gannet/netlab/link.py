"""The impairment engine of one link direction: pure code, no I/O, no clock.

`Link.submit(packet, now)` decides what happens to one IP packet entering the
link at time `now` and returns the deliveries it causes as a list of
(deliver_at, packet) pairs (empty when dropped; two when duplicated). The
forwarder puts them on its timer heap. Everything random comes from
`random.Random` instances seeded from (seed, direction, impairment), one per
impairment, so e.g. the loss pattern of a run depends only on the seed and
the order of packets, not on which other impairments are on.

Order of the pipeline: down -> mtu -> random loss -> bursty loss ->
duplicate -> corrupt -> rate queue (drop-tail) -> delay + jitter -> reorder.
"""

from __future__ import annotations

import random
from collections import deque

from .config import LinkConfig

DROP_REASONS = ("down", "mtu", "loss", "burst_loss", "queue", "write_error")


class Link:
    """One direction. Not thread-safe; the forwarder owns it."""

    def __init__(self, config: LinkConfig, seed: int, name: str = "a->b"):
        self.name = name
        self.seed = seed
        self._rng = {k: random.Random(f"gannet-netlab:{seed}:{name}:{k}")
                     for k in ("loss", "burst", "dup", "corrupt", "jitter", "reorder")}
        self._bad = False  # Gilbert-Elliott state
        self._busy_until = 0.0  # rate limiter: when the wire is free again
        self._queue: deque[tuple[float, int]] = deque()  # (leaves queue at, size)
        self._q_bytes = 0
        self._last_deliver = 0.0  # keeps jittered packets in order
        self.config = config
        self.reset_stats()

    # -- configuration -------------------------------------------------------

    @property
    def config(self) -> LinkConfig:
        return self._config

    @config.setter
    def config(self, cfg: LinkConfig) -> None:
        self._config = cfg
        self.transparent = cfg.transparent
        if not cfg.burst_p:
            self._bad = False

    # -- statistics ----------------------------------------------------------

    def reset_stats(self) -> None:
        self.rx_packets = self.rx_bytes = 0
        self.tx_packets = self.tx_bytes = 0
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self.corrupted = self.duplicated = self.reordered = 0
        self.q_max_bytes = self.q_max_packets = 0
        self.qdelay_n = 0
        self.qdelay_sum = self.qdelay_max = 0.0
        self.lat_n = 0
        self.lat_sum = self.lat_max = 0.0
        self.lat_min = float("inf")

    def stats(self, now: float | None = None) -> dict:
        if now is not None:
            self._expire(now)
        return {
            "rx_packets": self.rx_packets, "rx_bytes": self.rx_bytes,
            "tx_packets": self.tx_packets, "tx_bytes": self.tx_bytes,
            "dropped": dict(self.dropped), "dropped_total": sum(self.dropped.values()),
            "corrupted": self.corrupted, "duplicated": self.duplicated,
            "reordered": self.reordered,
            "queue": {"bytes": self._q_bytes, "packets": len(self._queue),
                      "max_bytes": self.q_max_bytes, "max_packets": self.q_max_packets},
            "queue_delay": {"count": self.qdelay_n,
                            "mean": self.qdelay_sum / self.qdelay_n if self.qdelay_n else 0.0,
                            "max": self.qdelay_max},
            "latency": {"count": self.lat_n,
                        "mean": self.lat_sum / self.lat_n if self.lat_n else 0.0,
                        "min": self.lat_min if self.lat_n else 0.0, "max": self.lat_max},
        }

    # -- the pipeline --------------------------------------------------------

    def _expire(self, now: float) -> None:
        q = self._queue
        while q and q[0][0] <= now:
            self._q_bytes -= q.popleft()[1]

    def submit(self, packet: bytes, now: float) -> list[tuple[float, bytes]]:
        size = len(packet)
        self.rx_packets += 1
        self.rx_bytes += size
        if self.transparent:
            self.tx_packets += 1
            self.tx_bytes += size
            return [(now, packet)]
        cfg = self._config
        if cfg.down:
            self.dropped["down"] += 1
            return []
        if cfg.mtu and size > cfg.mtu:
            self.dropped["mtu"] += 1
            return []
        if cfg.loss and self._rng["loss"].random() < cfg.loss:
            self.dropped["loss"] += 1
            return []
        if cfg.burst_p:
            r = self._rng["burst"]
            if self._bad:
                if r.random() < cfg.burst_r:
                    self._bad = False
            elif r.random() < cfg.burst_p:
                self._bad = True
            p = cfg.burst_loss_bad if self._bad else cfg.burst_loss_good
            if p and r.random() < p:
                self.dropped["burst_loss"] += 1
                return []
        copies = 1
        if cfg.duplicate and self._rng["dup"].random() < cfg.duplicate:
            copies = 2
        if cfg.corrupt and self._rng["corrupt"].random() < cfg.corrupt:
            packet = self._corrupt(packet, cfg)

        # rate limiter: a virtual drop-tail FIFO in front of a wire of `rate` bit/s
        t = now
        if cfg.rate:
            self._expire(now)
            q = self._queue
            if ((cfg.queue_packets is not None and len(q) + copies > cfg.queue_packets)
                    or (cfg.queue_bytes is not None
                        and self._q_bytes + size * copies > cfg.queue_bytes)):
                self.dropped["queue"] += 1
                return []
            start = self._busy_until if self._busy_until > now else now
            wait = start - now
            self.qdelay_n += 1
            self.qdelay_sum += wait
            if wait > self.qdelay_max:
                self.qdelay_max = wait
            t = start + size * 8.0 / cfg.rate
            q.append((t, size))
            self._q_bytes += size
            if copies == 2:
                t2 = t + size * 8.0 / cfg.rate
                q.append((t2, size))
                self._q_bytes += size
                self._busy_until = t2
            else:
                self._busy_until = t
            if len(q) > self.q_max_packets:
                self.q_max_packets = len(q)
            if self._q_bytes > self.q_max_bytes:
                self.q_max_bytes = self._q_bytes

        t += cfg.delay
        if cfg.jitter:
            t += self._rng["jitter"].uniform(-cfg.jitter, cfg.jitter)
            if t < now:
                t = now
        if cfg.reorder and self._rng["reorder"].random() < cfg.reorder:
            t += cfg.reorder_gap  # held back; does not move _last_deliver, so others pass it
            self.reordered += 1
        else:
            if t < self._last_deliver:
                t = self._last_deliver
            self._last_deliver = t

        lat = t - now
        self.lat_n += 1
        self.lat_sum += lat
        if lat > self.lat_max:
            self.lat_max = lat
        if lat < self.lat_min:
            self.lat_min = lat
        self.tx_packets += copies
        self.tx_bytes += size * copies
        if copies == 2:
            self.duplicated += 1
            return [(t, packet), (t, packet)]
        return [(t, packet)]

    def _corrupt(self, packet: bytes, cfg: LinkConfig) -> bytes:
        r = self._rng["corrupt"]
        start = 0
        if not cfg.corrupt_ip_header and packet:
            if packet[0] >> 4 == 4:
                start = (packet[0] & 0x0F) * 4
            elif packet[0] >> 4 == 6:
                start = 40
        if start >= len(packet):
            start = 0
        if not packet:
            return packet
        buf = bytearray(packet)
        for _ in range(cfg.corrupt_bits):
            i = r.randrange(start, len(buf))
            buf[i] ^= 1 << r.randrange(8)
        self.corrupted += 1
        return bytes(buf)
