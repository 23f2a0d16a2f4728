"""Lines of Python per 64-byte round trip over the asyncio streams API, by
function: bench/aio_cost.py's workload (client and server on one uvloop over
loopback UDP, 200 round trips to settle), with every line of the N measured
round trips counted by `sys.settrace`. Compiled modules (the core) run no
traced lines: what is counted is the Python above the core (the adapter,
the streams, the security layer) and the benchmark's own driver.

    python bench/aio_lines.py 2000 --insecure
    python bench/aio_lines.py 2000            # encrypted

Tracing slows the run about tenfold, so a timer fires now and then that
does not fire untraced: the datagrams per round trip are printed (2.00
means none did).
"""
import collections, contextlib, os, sys

import gannet

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import aio_cost  # noqa: E402 - the workload, from beside this file

_ROOT = os.path.dirname(gannet.__file__)


def where(code) -> str:
    path = code.co_filename
    name = os.path.relpath(path, _ROOT) if path.startswith(_ROOT) else os.path.basename(path)
    return f"{name}:{code.co_name}"


def counting(lines, calls):
    def trace(frame, event, arg):
        key = where(frame.f_code)
        calls[key] += 1  # a call, or a coroutine resumed

        def local(frame, event, arg):
            if event == "line":
                lines[key] += 1
            return local
        return local

    @contextlib.contextmanager
    def measured():
        sys.settrace(trace)
        try:
            yield
        finally:
            sys.settrace(None)
    return measured


args = aio_cost.parse_args(__doc__, 2000, uvloop=True)
lines, calls = collections.Counter(), collections.Counter()
sent = aio_cost.run(aio_cost.main(args.count, args.insecure, counting(lines, calls)), args.uvloop)
n = args.count
print(f"{sent / n:.2f} datagrams and {sum(lines.values()) / n:.1f} lines of Python per round trip "
      "(both sides; the driver's included)")
print(f"{'lines':>7} {'calls':>6}  function")
for key, c in lines.most_common():
    if c / n >= 0.05:
        print(f"{c / n:7.2f} {calls[key] / n:6.2f}  {key}")
