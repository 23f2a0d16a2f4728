"""The first endpoint tunes glibc's malloc so that bursts of freed buffers are reused, not faulted in again."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

# Open an endpoint, then (1) free and reallocate bursts of 160 buffers of
# 65,000 bytes (10 MB: a window's worth of 64 KB payloads, received, read and
# freed), (2) copy a 6 MB buffer 20 times (an application writing large
# chunks). Print whether Gannet tuned malloc and the page faults each took.
SCRIPT = textwrap.dedent("""
    import asyncio, resource
    import gannet
    from gannet.io import memory

    async def main():
        server = await gannet.start_server(lambda r, w: None, "127.0.0.1", 0)
        server.close()

    asyncio.run(main())

    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    def burst():
        chunks = [bytes(bytearray(65000)) for _ in range(160)]
        del chunks

    burst()
    before = faults()
    for _ in range(20):
        burst()
    bursts = faults() - before

    source = bytearray(6 << 20)
    before = faults()
    for _ in range(20):
        copy = bytes(source)
        del copy
    copies = faults() - before
    print(memory.applied, bursts, copies)
""")


def _run(**env_extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GANNET_NO_MALLOPT")}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    return out[0] == "True", int(out[1]), int(out[2])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc",
                    reason="mallopt is glibc's; elsewhere there is nothing to tune")
def test_bursts_of_freed_buffers_are_reused_and_large_copies_do_not_fault():
    applied, bursts, copies = _run()
    assert applied
    off_applied, off_bursts, _ = _run(GANNET_NO_MALLOPT="1")
    assert not off_applied
    # 20 bursts of 10 MB: glibc alone gives the heap's top back after each
    # and faults every page in again (47,640 here); tuned, the pages stay.
    assert off_bursts > 20000
    assert bursts < 1000
    # 20 copies of 6 MB: 30,720 pages if each copy were a fresh mmap (what
    # setting the trim threshold alone does: it turns off glibc's own
    # adjustment of the mmap threshold).
    assert copies < 3000


def test_a_user_setting_wins():
    for var in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_"):
        applied, _, _ = _run(**{var: "131072"})
        assert not applied
