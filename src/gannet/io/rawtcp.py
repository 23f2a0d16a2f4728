"""The raw-IP carrier: Gannet's TCP segments on the host's own IPv4 addresses.

Three things let a user-space TCP share the host with the kernel's:

- a raw IPv4 socket (IPPROTO_TCP, IP_HDRINCL) that sends the packets
  `TcpEndpoint` builds and receives a copy of every TCP packet the host
  gets, narrowed in the kernel by a classic BPF filter to Gannet's port;
- a kernel TCP socket bound to the same port and never listening, which
  reserves the port, so the kernel gives it to no one else;
- the firewall rule of `gannet.io.firewall`, which drops the RSTs the
  kernel sends for the segments it sees arrive at that port.

`create_tcp_endpoint` puts them together behind an `AioEndpoint` (the same
driver as for UDP, without GSO/GRO), so every API on top of it - streams,
servers, the blocking Socket - works on TCP unchanged.

Everything here needs root (CAP_NET_RAW for the socket, CAP_NET_ADMIN for
the rule); without it, `NeedsPrivilegeError` says so in one line.
"""

from __future__ import annotations

import asyncio
import ctypes
import ipaddress
import os
import socket
import struct
import subprocess

from ..config import Config
from ..core.tcp_endpoint import ETHERNET_MTU, LOOPBACK_MTU, TcpEndpoint
from .endpoint import SO_RCVBUFFORCE, SO_SNDBUFFORCE, _SYSTEM_RANDOM, AioEndpoint, _keep_until_loop_ends
from .firewall import MARK, FirewallError, RstGuard
from .security import check_tcp_wire

SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
SO_MARK = getattr(socket, "SO_MARK", 36)
RAW_BUFFER = 16 * 1024 * 1024

NEEDS = ("Gannet's TCP on raw sockets needs root (CAP_NET_RAW for the raw socket and "
         "CAP_NET_ADMIN for the firewall rule that keeps the kernel from resetting its port)")


class NeedsPrivilegeError(PermissionError):
    """Raw sockets or the firewall rule were refused: not root."""

    def __str__(self) -> str:
        return NEEDS


def port_filter(port: int) -> bytes:
    """A classic BPF program accepting IPv4 packets whose TCP destination
    port is `port` (the socket is IPPROTO_TCP, so every packet is TCP)."""
    insns = [
        (0xB1, 0, 0, 0),  # ldxb 4*([0]&0xf): X = IP header length
        (0x48, 0, 0, 2),  # ldh [x+2]: the TCP destination port
        (0x15, 0, 1, port),  # jeq #port, accept, drop
        (0x06, 0, 0, 0x40000),  # ret: the whole packet
        (0x06, 0, 0, 0),  # ret 0: drop
    ]
    return b"".join(struct.pack("HBBI", *i) for i in insns)


def _attach_filter(sock: socket.socket, program: bytes) -> None:
    buf = ctypes.create_string_buffer(program)
    fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def route_source(host: str) -> str:
    """The local address the kernel would send from to reach `host`."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((host, 9))
        return probe.getsockname()[0]


def is_local(addr: str) -> bool:
    """Whether `addr` is one of this host's addresses (its packets go over lo)."""
    ip = ipaddress.IPv4Address(addr)
    if ip.is_loopback:
        return True
    try:
        out = subprocess.run(["ip", "-o", "route", "get", addr], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return out.startswith("local ")


def path_mtu(local_ip: str | None) -> int:
    """The largest packet to send from `local_ip`: an IPv4 packet's limit on
    loopback, Ethernet's 1,500 bytes otherwise (or the interface's, when
    `ip` tells it)."""
    if local_ip is None or local_ip == "0.0.0.0":
        return ETHERNET_MTU
    if ipaddress.IPv4Address(local_ip).is_loopback:
        return LOOPBACK_MTU
    try:
        out = subprocess.run(["ip", "-o", "addr", "show", "to", local_ip], capture_output=True,
                             text=True, timeout=10).stdout
        dev = out.split()[1]
        with open(f"/sys/class/net/{dev}/mtu") as f:
            return min(int(f.read()), LOOPBACK_MTU)
    except (OSError, IndexError, ValueError, subprocess.SubprocessError):
        return ETHERNET_MTU


class RawTcpSocket(socket.socket):
    """The raw IPv4 socket of one Gannet TCP port, with the reserving kernel
    socket and the firewall rule it needs; `close` releases all three.
    `getsockname` answers with the Gannet address and port."""

    def __init__(self, local_ip: str | None, port: int) -> None:
        if os.geteuid() != 0:
            raise NeedsPrivilegeError()
        try:
            super().__init__(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
        except PermissionError as exc:
            raise NeedsPrivilegeError() from exc
        self._reserve: socket.socket | None = None
        self._guard: RstGuard | None = None
        try:
            self._reserve = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                self._reserve.bind((local_ip or "0.0.0.0", port))
            except OSError as exc:
                raise OSError(exc.errno, f"TCP port {port} on {local_ip or '0.0.0.0'} is taken "
                              f"({exc.strerror})") from exc
            self.port = self._reserve.getsockname()[1]
            self.local_ip = local_ip
            self._guard = RstGuard(self.port)
            try:
                self._guard.install()
            except FirewallError as exc:
                if "Permission denied" in str(exc) or "not permitted" in str(exc):
                    raise NeedsPrivilegeError() from exc
                raise
            self.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
            self.setsockopt(socket.SOL_SOCKET, SO_MARK, MARK)
            for opt, normal in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
                try:
                    self.setsockopt(socket.SOL_SOCKET, normal if opt is None else opt, RAW_BUFFER)
                except OSError:
                    self.setsockopt(socket.SOL_SOCKET, normal, RAW_BUFFER)
            _attach_filter(self, port_filter(self.port))
            # Packets that arrived before the filter was attached may be any port's.
            self.setblocking(False)
            while True:
                try:
                    self.recv(1)
                except BlockingIOError:
                    break
        except BaseException:
            self.close()
            raise

    def getsockname(self) -> tuple[str, int]:
        return (self.local_ip or "0.0.0.0", self.port)

    def close(self) -> None:
        try:
            super().close()
        finally:
            reserve, self._reserve = getattr(self, "_reserve", None), None
            if reserve is not None:
                reserve.close()
            guard, self._guard = getattr(self, "_guard", None), None
            if guard is not None:
                guard.remove()


def create_tcp_endpoint(host: str | None, port: int, *, config: Config,
                        loop: asyncio.AbstractEventLoop | None = None,
                        keep: bool = True) -> AioEndpoint:
    """An `AioEndpoint` speaking TCP on raw sockets at `host`:`port` (port 0:
    a free one; host None or "0.0.0.0": every local address, listening only).
    `keep`: close it when the loop ends (what asyncio callers want; the
    blocking Socket's loop thread closes its endpoints itself).
    `config.tcp_carrier` "tun": a TUN device instead (gannet.io.tuntcp)."""
    check_tcp_wire(config)  # no encryption here: refuse security settings, log the plain wire
    loop = loop or asyncio.get_event_loop()
    if config.tcp_carrier == "tun":
        from .tuntcp import create_tun_endpoint

        return create_tun_endpoint(host, port, config=config, loop=loop, keep=keep)
    if host in ("", None):
        host = "0.0.0.0"
    local_ip = None if host == "0.0.0.0" else str(ipaddress.IPv4Address(socket.gethostbyname(host)))
    sock = RawTcpSocket(local_ip, port)
    try:
        ep = TcpEndpoint(sock.port, config, _SYSTEM_RANDOM, local_ip=local_ip, mtu=path_mtu(local_ip))
        aep = AioEndpoint(sock, ep.config, loop, gso=False, gro=False, endpoint=ep)
    except BaseException:
        sock.close()
        raise
    if keep:
        _keep_until_loop_ends(aep)
    return aep
