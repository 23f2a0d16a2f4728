"""A `gannet` command's start-up and the cyclic garbage collector.

Start-up (Gannet's modules and its libraries', the command's parser, the
first connection's keys) makes some 35,000 objects that live as long as
the process - modules, classes, functions, constants - and next to no
garbage, yet the collector's default thresholds walk them in about 45
collections before a sender's SYN: 8-13 ms of its 125 (BENCHMARKS.md,
start-up). So the command line (`gannet.cli.main.main`, for the process's
own command line only) raises the young generation's threshold above what
start-up allocates (`pause`), and the command's loop ends the pause when
it first waits (`resume`, called by `gannet.io.loops.run`): what start-up
made is frozen out of later collections (`gc.freeze`: nearly all of it
lives as long as the process; the few cycles it leaves behind, such as
the argument parser's, stay too) and the thresholds are the ones before.
A command that runs on no loop of Gannet's (an echo server, netlab) ends
the pause as its work begins (`gannet.cli.main`); and the threshold is
raised, not the collector turned off, so that a pause nothing ended
would still collect, in larger batches.
"""

from __future__ import annotations

import gc

# Above the net allocations of a sender's start-up (about 35,000 objects to
# its SYN), so that none of its collections run.
START_UP_THRESHOLD = 200_000

_before: tuple[int, int, int] | None = None  # the thresholds a pause replaced


def pause() -> None:
    """Raise the young generation's threshold for start-up (once)."""
    global _before
    if _before is None and gc.isenabled() and gc.get_threshold()[0]:
        _before = gc.get_threshold()
        gc.set_threshold(max(START_UP_THRESHOLD, _before[0]), *_before[1:])


def resume(freeze: bool = True) -> None:
    """End the pause (if any): freeze what exists (start-up's objects), then
    collect with the thresholds from before. Without `freeze` (a command
    that returns without having run a loop), only the thresholds."""
    global _before
    if _before is None:
        return
    before, _before = _before, None
    if freeze:
        gc.freeze()
    gc.set_threshold(*before)
