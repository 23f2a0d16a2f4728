"""Sets of integer byte positions kept as sorted, disjoint [start, end) ranges.

Everything the core remembers about sent and received bytes (SACK
scoreboard, bytes to retransmit, out-of-order data) is a RangeSet, so the
cost of bookkeeping grows with the number of holes, never with bytes.
"""

from __future__ import annotations

from typing import Final

from bisect import bisect_left, bisect_right
from collections.abc import Iterator


class RangeSet:
    # A connection's sets that stay empty for most of its life are the
    # shared EMPTY (below) until first used, so ten thousand idle
    # connections hold no lists; a set of its own holds two plain lists.
    __slots__ = ("_starts", "_ends", "total")

    def __init__(self, ranges: list[tuple[int, int]] | None = None) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self.total = 0  # number of positions in the set
        for start, end in ranges or ():
            self.add(start, end)

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __len__(self) -> int:
        """Number of disjoint ranges."""
        return len(self._starts)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(self._starts, self._ends)

    def __repr__(self) -> str:
        return f"RangeSet({list(self)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RangeSet) and list(self) == list(other)

    def __contains__(self, pos: int) -> bool:
        i = bisect_right(self._starts, pos) - 1
        return i >= 0 and pos < self._ends[i]

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._ends))

    def first(self) -> tuple[int, int]:
        return self._starts[0], self._ends[0]

    def last(self) -> tuple[int, int]:
        return self._starts[-1], self._ends[-1]

    def add(self, start: int, end: int) -> int:
        """Add [start, end); returns how many positions were new."""
        if start >= end:
            return 0
        starts, ends = self._starts, self._ends
        if not starts:
            self._starts, self._ends = [start], [end]
            self.total = end - start
            return end - start
        # Ranges that touch or overlap [start, end) merge with it.
        lo = bisect_left(ends, start)
        hi = bisect_right(starts, end)
        if lo == hi:
            starts.insert(lo, start)
            ends.insert(lo, end)
            self.total += end - start
            return end - start
        new_start = min(start, starts[lo])
        new_end = max(end, ends[hi - 1])
        covered = 0
        for i in range(lo, hi):
            covered += ends[i] - starts[i]
        starts[lo:hi] = [new_start]
        ends[lo:hi] = [new_end]
        added = (new_end - new_start) - covered
        self.total += added
        return added

    def subtract(self, start: int, end: int) -> int:
        """Remove [start, end); returns how many positions were removed."""
        if start >= end or not self._starts:
            return 0
        starts, ends = self._starts, self._ends
        lo = bisect_right(ends, start)
        hi = bisect_left(starts, end)
        if lo >= hi:
            return 0
        removed = 0
        keep_s: list[int] = []
        keep_e: list[int] = []
        if starts[lo] < start:
            keep_s.append(starts[lo])
            keep_e.append(start)
        if ends[hi - 1] > end:
            keep_s.append(end)
            keep_e.append(ends[hi - 1])
        for i in range(lo, hi):
            removed += min(ends[i], end) - max(starts[i], start)
        starts[lo:hi] = keep_s
        ends[lo:hi] = keep_e
        self.total -= removed
        return removed

    def discard_below(self, pos: int) -> int:
        """Remove every position < pos (cumulative acknowledgment)."""
        if not self._starts or self._starts[0] >= pos:
            return 0
        return self.subtract(self._starts[0], pos)

    def clear(self) -> None:
        self._starts = []
        self._ends = []
        self.total = 0

    def count_above(self, pos: int) -> int:
        """Positions in the set that are >= pos."""
        starts, ends = self._starts, self._ends
        i = bisect_right(ends, pos)
        total = 0
        for j in range(i, len(starts)):
            total += ends[j] - max(starts[j], pos)
        return total

    def ranges_above(self, pos: int) -> int:
        """Number of ranges that lie at or above pos (partly or wholly)."""
        return len(self._starts) - bisect_right(self._ends, pos)

    def overlap(self, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of [start, end) that are in the set, in order."""
        starts, ends = self._starts, self._ends
        lo = bisect_right(ends, start)
        hi = bisect_left(starts, end)
        return [(max(starts[i], start), min(ends[i], end)) for i in range(lo, hi)]

    def gaps(self, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of [start, end) that are not in the set, in order."""
        out = []
        pos = start
        for s, e in self.overlap(start, end):
            if s > pos:
                out.append((pos, s))
            pos = e
        if pos < end:
            out.append((pos, end))
        return out

    def range_containing(self, pos: int) -> tuple[int, int] | None:
        i = bisect_right(self._starts, pos) - 1
        if i >= 0 and pos < self._ends[i]:
            return self._starts[i], self._ends[i]
        return None


class _EmptyRangeSet(RangeSet):
    """The one shared, read-only empty set (`EMPTY`).

    A connection holds six range sets (SACK scoreboard, lost, resent twice,
    out-of-order, RACK's resent bytes), and most connections never store a
    range in any of them: no loss, no reordering. Each starts as `EMPTY`
    and gets its own RangeSet at the first `add` (the owner does that:
    `if s is EMPTY: s = owner.x = RangeSet()`), so an idle connection holds
    no set objects for the cycle collector to walk. Everything that reads,
    or removes from an empty set, works on it unchanged."""

    __slots__ = ()

    def add(self, start: int, end: int) -> int:
        if start >= end:
            return 0
        raise TypeError("RangeSet EMPTY is shared and read-only: give the owner its own RangeSet")

    def clear(self) -> None:
        pass  # already empty; do not write to the shared instance


EMPTY: Final[RangeSet] = _EmptyRangeSet()
