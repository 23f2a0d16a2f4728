"""The first endpoint raises glibc's trim threshold: bursts of 64 KB buffers stop faulting."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

# A 64 MB loopback transfer in 65,000-byte datagrams, both ends in one
# process: print whether the threshold was raised and the page faults taken
# after the first megabyte.
SCRIPT = textwrap.dedent("""
    import asyncio, resource
    import gannet
    from gannet.io import memory

    async def main():
        done = asyncio.get_running_loop().create_future()

        async def handle(r, w):
            got = 0
            while chunk := await r.read(1 << 20):
                got += len(chunk)
            done.set_result(got)
            w.close()

        opts = dict(pmtud=False, max_datagram_size=65000)
        server = await gannet.start_server(handle, "127.0.0.1", 0, **opts)
        port = server.sockets[0].getsockname()[1]
        r, w = await gannet.open_connection("127.0.0.1", port, **opts)
        data = bytes(1 << 20)
        w.write(data)
        await w.drain()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(63):
            w.write(data)
            await w.drain()
        w.write_eof()
        assert await asyncio.wait_for(done, 60) == 64 << 20
        transfer = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        w.close()
        server.close()
        # An application copying 6 MB per write: glibc's own mmap threshold
        # adjustment must not have been lost with the setting.
        source = bytearray(6 << 20)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(20):
            copy = bytes(source)
            del copy
        copies = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        print(memory.applied, transfer, copies)

    asyncio.run(main())
""")


def _run(**env_extra):
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_TRIM_THRESHOLD_", "GANNET_NO_MALLOPT")}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    return out[0] == "True", int(out[1]), int(out[2])


def _glibc() -> bool:
    import platform
    return platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not _glibc(), reason="mallopt is glibc's; elsewhere there is nothing to tune")
def test_endpoint_keeps_freed_memory_and_bursts_stop_faulting():
    applied, faults, copies = _run()
    assert applied
    off_applied, off_faults, off_copies = _run(GANNET_NO_MALLOPT="1")
    assert not off_applied
    # 63 MB received: without the setting about two pages in three were
    # faulted in anew (10,500 here); with it, 1,800-2,400.
    assert off_faults > 4000
    assert faults < off_faults / 2
    # 20 copies of 6 MB: 30,720 pages if each copy were a fresh mmap.
    assert copies < 3000


def test_a_user_setting_wins():
    applied, _, _ = _run(MALLOC_TRIM_THRESHOLD_="131072")
    assert not applied
