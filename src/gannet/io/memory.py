"""Keep freed heap memory in the process (glibc's M_TRIM_THRESHOLD).

glibc gives the top of its heap back to the kernel whenever more than 128 KB
there is free. A transfer allocates and frees 64 KB payloads and datagrams
thousands of times a second, in bursts (a window's worth arrives, the
application reads it, all of it is freed): the heap shrank after every burst
and grew again on the next, and every 4 KB page of it was faulted in anew.
A bulk receiver took one page fault per 4 KB received and spent more of its
time in the kernel than in Python; raising the threshold cut both ends' CPU
per gigabyte by about a third (docs/design.md, "Copies and memory").

Setting the trim threshold turns off glibc's own adjustment of the mmap
threshold (which otherwise rises to the size of the largest block freed, up
to 32 MB), leaving every allocation of 128 KB or more to its own mmap: an
application that copies a megabyte per write would then fault in every page
of every copy. So the mmap threshold is set too, to MMAP_THRESHOLD, and the
trim threshold above it, as glibc's adjustment keeps them (trim = 2 x mmap).

The settings are the process's, not Gannet's alone, so it is made once, when
the first endpoint opens (not on import: the sans-I/O core and the simulator
never need it), only under glibc, and never when the user chose a value
(`MALLOC_TRIM_THRESHOLD_` in the environment) or opted out
(`GANNET_NO_MALLOPT=1`). The cost is bounded: at most TRIM_THRESHOLD (16 MB)
of free memory stays mapped, as it would while a transfer runs anyway.
"""

from __future__ import annotations

import os

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 8 * 1024 * 1024
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD

_done = False
applied = False
"""Whether Gannet raised the threshold in this process."""


def keep_freed_memory() -> bool:
    """Raise glibc's trim threshold once per process; True if it was raised now or before."""
    global _done, applied
    if _done:
        return applied
    _done = True
    if "MALLOC_TRIM_THRESHOLD_" in os.environ or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    if os.environ.get("GANNET_NO_MALLOPT", "").strip().lower() not in ("", "0", "no", "false", "off"):
        return False
    import ctypes  # (here: 2 ms of import that a client's start does not wait for)

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    applied = (mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
               and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
    return applied
