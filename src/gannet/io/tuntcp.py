"""The TUN carrier: Gannet's TCP on an address of its own, with the kernel's offloads.

A TUN device is a network interface whose packets a program reads and
writes. This carrier makes one per endpoint, routes the endpoint's address
(one the host does not have) to it, and so:

- every packet for that address reaches Gannet and only Gannet: the kernel
  has no socket there, and never sees the packets as its own, so it sends
  no RSTs (no firewall rule, no port reservation);
- packets are exchanged with a virtio-net header (IFF_VNET_HDR), the one a
  virtual machine's NIC uses. Writing, Gannet hands the kernel one TCP
  segment of up to 64 KB with a header asking for TCP segmentation
  (VIRTIO_NET_HDR_GSO_TCPV4 and the MSS): the kernel cuts it into segments
  as a NIC's TSO would, so one write sends up to 45 segments (of 1,448 bytes). The checksum
  is left for the kernel to finish (VIRTIO_NET_HDR_F_NEEDS_CSUM, the
  field holding the pseudo-header sum), which it does only if the packet
  leaves on a device that needs it.
- reading, TUNSETOFFLOAD (TUN_F_CSUM | TUN_F_TSO4) tells the kernel that
  Gannet takes what a NIC with those offloads would send: the segments a
  local sender made with TSO, or that GRO merged on their way in, arrive
  as one large segment per read, and a packet whose checksum the kernel
  already verified or never computed (made on this host) says so in its
  header, so Gannet does not sum 64 KB in Python.

The endpoint's address is given by the caller (a server's host, a client's
local address). Peers in the same network namespace reach it through the
route this carrier adds; peers elsewhere need a route to it through this
host, and the host forwarding (net.ipv4.ip_forward=1), as for any router.
The device, and with it the route, goes away when the carrier's file
descriptor closes, also when the process is killed: nothing is left behind.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import ipaddress
import logging
import os
import random
import socket
import struct
import subprocess
from itertools import count
from typing import TYPE_CHECKING

from ..config import Config
from ..core.tcp_endpoint import ETHERNET_MTU, TcpEndpoint, TsoPacket
from ..wire import ipv4
from .endpoint import _SYSTEM_RANDOM, AioEndpoint, _keep_until_loop_ends

if TYPE_CHECKING:
    from .endpoint import Outgoing

log = logging.getLogger("gannet.io")

# linux/if_tun.h
TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
# linux/virtio_net.h: struct virtio_net_hdr, in the host's byte order
VNET_HDR = struct.Struct("=BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
VNET_HDR_SIZE = VNET_HDR.size  # 10
F_NEEDS_CSUM = 1
F_DATA_VALID = 2
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_ECN = 0x80
TCP_CSUM_OFFSET = 16  # where the checksum lies in the TCP header
EPHEMERAL = (32768, 60999)  # Linux's ip_local_port_range
RECV_BATCH = 256  # packets read per readiness callback before the pass that answers them

NEEDS = ("Gannet's TCP on a TUN device needs root (CAP_NET_ADMIN, to make the device "
         "and route the address to it) and /dev/net/tun")

_names = count()


class NeedsTunError(PermissionError):
    """/dev/net/tun or the privilege to configure it is missing."""

    def __str__(self) -> str:
        return NEEDS


def _ip(*args: str) -> None:
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if out.returncode:
        raise OSError(errno.EINVAL, f"ip {' '.join(args)}: {out.stderr.strip()}")


def _is_host_address(addr: str) -> bool:
    out = subprocess.run(["ip", "-o", "-4", "addr", "show", "to", f"{addr}/32"],
                         capture_output=True, text=True, timeout=10).stdout
    return bool(out.strip())


# The virtio-net header of one segment whose TCP checksum the kernel finishes.
_PLAIN = VNET_HDR.pack(F_NEEDS_CSUM, GSO_NONE, 0, 0, ipv4.HEADER_SIZE, TCP_CSUM_OFFSET)


class TunSocket:
    """The TUN device of one Gannet address, in the shape AioEndpoint drives
    (fileno, getsockname, sendto, close). `sendto` writes one packet with
    its virtio-net header: a TsoPacket asks the kernel to segment it."""

    family = socket.AF_INET

    def __init__(self, address: str, port: int, mtu: int = ETHERNET_MTU,
                 name: str | None = None) -> None:
        if os.geteuid() != 0 or not os.path.exists("/dev/net/tun"):
            raise NeedsTunError()
        addr = str(ipaddress.IPv4Address(address))
        if addr == "0.0.0.0" or ipaddress.IPv4Address(addr).is_loopback:
            raise ValueError(f"the TUN carrier needs an address of its own, not {addr}")
        if _is_host_address(addr):
            raise OSError(errno.EADDRINUSE, f"{addr} is an address of this host: the TUN carrier "
                          "needs one the kernel does not have (a server's host, a client's "
                          "local_addr or --tun-address)")
        self.address = addr
        self.port = port or random.randint(*EPHEMERAL)
        self.name = name or f"gtun{os.getpid() % 100000}x{next(_names)}"
        self._headers: dict[tuple[int, int], bytes] = {}
        self.fd = -1
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except PermissionError as exc:
            raise NeedsTunError() from exc
        self.fd = fd
        try:
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", self.name.encode(),
                                                   IFF_TUN | IFF_NO_PI | IFF_VNET_HDR))
            fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4)
            try:  # no IPv6 on the device: no router solicitations or MLD for us to read
                with open(f"/proc/sys/net/ipv6/conf/{self.name}/disable_ipv6", "w") as f:
                    f.write("1")
            except OSError:
                pass  # no IPv6 in this kernel or namespace
            _ip("link", "set", "dev", self.name, "mtu", str(mtu), "up")
            try:
                _ip("route", "add", f"{addr}/32", "dev", self.name)
            except OSError as exc:
                raise OSError(errno.EADDRINUSE, f"{addr} is routed elsewhere already "
                              f"(another Gannet TUN endpoint?): {exc.strerror}") from exc
        except PermissionError as exc:
            self.close()
            raise NeedsTunError() from exc
        except BaseException:
            self.close()
            raise

    def fileno(self) -> int:
        return self.fd

    def getsockname(self) -> tuple[str, int]:
        return (self.address, self.port)

    def sendto(self, packet: bytes | bytearray, addr: object = None) -> int:
        if type(packet) is TsoPacket:
            # hdr_len: the IPv4 and TCP headers before the data
            key = (packet.mss, ipv4.HEADER_SIZE + (packet[32] >> 4) * 4)
            head = self._headers.get(key)
            if head is None:
                if len(self._headers) > 64:
                    self._headers.clear()
                head = self._headers[key] = VNET_HDR.pack(
                    F_NEEDS_CSUM, GSO_TCPV4, key[1], packet.mss, ipv4.HEADER_SIZE, TCP_CSUM_OFFSET)
            return os.writev(self.fd, (head, packet))
        return os.writev(self.fd, (_PLAIN, packet))

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)  # the device, its address route with it, is gone


class TunAioEndpoint(AioEndpoint):
    """AioEndpoint on a TunSocket: reads packets with their virtio-net
    header (whose checksum verdict goes to TcpEndpoint.receive_offloaded)
    and writes what the core gives, TSO packets included."""

    ONE_DATAGRAM_SHORTCUT = False  # (a TUN write, not a UDP sendto: _transmit below)

    def __init__(self, sock: TunSocket, config: Config, loop: asyncio.AbstractEventLoop,
                 endpoint: TcpEndpoint) -> None:
        endpoint.offload = True
        self.tun_head = bytearray(VNET_HDR_SIZE)
        # gso=True asks the core for runs (it passes `trains` to the encoder);
        # the writes are this class's own.
        # (the TUN device stands in for the UDP socket: it has the socket
        # methods the adapter calls)
        super().__init__(sock, config, loop, gso=False, gro=False,  # type: ignore[arg-type]
                         endpoint=endpoint)
        self.gso = True

    def _receive_plain(self, buf: bytearray, view: memoryview) -> None:
        readv = os.readv
        fd = self._fd
        head = self.tun_head
        parts = [head, buf]
        time = self.now
        st = self.io_stats
        got = 0
        with self.lock:
            ep = self.ep
            assert isinstance(ep, TcpEndpoint)  # (the one __init__ took)
            feed = ep.receive_offloaded
            if self.observer is not None:
                # qlog or pcap wrap the endpoint's receive_datagram: go
                # through it (the checksum verdict is then the raw carrier's)
                receive = self.ep.receive_datagram
                feed = lambda data, now, checked: receive(data, None, now)  # noqa: E731
            while got < RECV_BATCH:
                try:
                    n = readv(fd, parts)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    if self.closed:
                        return
                    log.debug("TUN read failed: %r", exc)
                    break
                got += 1
                if n <= VNET_HDR_SIZE:
                    continue  # (a header alone: nothing for the endpoint)
                # NEEDS_CSUM: made on this host, checksum to be filled in;
                # DATA_VALID: the kernel checked it on the way in.
                feed(view[: n - VNET_HDR_SIZE], time(), bool(head[0] & (F_NEEDS_CSUM | F_DATA_VALID)))
                if head[1] != GSO_NONE:
                    st.gro_batches += 1
            st.recv_calls += got
            st.datagrams_received += got
            self._after_receive()  # the adapter's one rule for the pass after a read

    def _transmit(self, out: Outgoing) -> int:
        tun: TunSocket = self.sock  # (the device __init__ took)
        send = tun.sendto
        st = self.io_stats
        for k, (packet, _addr) in enumerate(out):
            try:
                send(packet)
            except OSError as exc:
                if self._socket_full(exc):
                    return k
                st.send_errors += 1
                st.last_send_error = f"{errno.errorcode.get(exc.errno or 0, exc.errno)} ({len(packet)} B)"
                log.debug("TUN write failed: %r", exc)
                continue
            st.send_calls += 1
            if type(packet) is TsoPacket:
                st.gso_calls += 1
                st.gso_datagrams += packet.segments
                st.datagrams_sent += packet.segments
            else:
                st.datagrams_sent += 1
        return len(out)


def create_tun_endpoint(host: str | None, port: int, *, config: Config,
                        loop: asyncio.AbstractEventLoop | None = None,
                        keep: bool = True, mtu: int = ETHERNET_MTU) -> AioEndpoint:
    """An AioEndpoint speaking TCP at `host`:`port` through a TUN device that
    owns `host` (an IPv4 address this host does not have; port 0: a random
    ephemeral one). `keep`: close it when the loop ends."""
    loop = loop or asyncio.get_event_loop()
    if host in ("", None, "0.0.0.0"):
        raise ValueError("the TUN carrier needs the address it owns: a server's host, "
                         "a client's local_addr")
    addr = str(ipaddress.IPv4Address(socket.gethostbyname(host)))
    sock = TunSocket(addr, port, mtu)
    try:
        ep = TcpEndpoint(sock.port, config, _SYSTEM_RANDOM, local_ip=addr, mtu=mtu)
        aep = TunAioEndpoint(sock, ep.config, loop, ep)
    except BaseException:
        sock.close()
        raise
    if keep:
        _keep_until_loop_ends(aep)
    return aep
