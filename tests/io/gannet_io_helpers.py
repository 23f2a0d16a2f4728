import socket

import pytest


def _has_ipv6() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


HAS_IPV6 = _has_ipv6()
needs_ipv6 = pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback")


def free_udp_port() -> int:
    """A UDP port with nothing bound to it (bound and released at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pattern(n: int, seed: int = 0) -> bytes:
    """n deterministic, non-repeating-looking bytes."""
    import random

    return random.Random(seed).randbytes(n)


def count_ioctls(monkeypatch) -> dict[int, int]:
    """The adapter's ioctl calls (its FIONREAD checks) counted by file
    descriptor, in the dict returned; each still made."""
    from gannet.io import endpoint as endpoint_mod

    real = endpoint_mod.fcntl
    by_fd: dict[int, int] = {}

    class Recording:
        @staticmethod
        def ioctl(fd, request, arg=0, mutate=True):
            by_fd[fd] = by_fd.get(fd, 0) + 1
            return real.ioctl(fd, request, arg, mutate)

    monkeypatch.setattr(endpoint_mod, "fcntl", Recording)
    return by_fd
