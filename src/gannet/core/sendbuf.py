"""The send buffer: what the application wrote and the peer has not acknowledged.

Kept as the chunks the application wrote, not one bytearray. An immutable
chunk (`bytes`, or a view of one) is kept by reference: a bulk writer's
megabyte is neither copied in nor, once acknowledged, moved out of the way
(appending to and trimming one bytearray copied every byte twice, about a
fifth of a bulk sender's time). Mutable chunks are copied once, as a socket
copies what `send` is given. Reading a range that lies in one chunk is a
memoryview of it; only a range that spans chunks is joined. Consecutive
slices of one bytes object (a writer writing a large buffer a piece at a
time) are held as one chunk, where the wire's C extension can tell that
they are (`follows`): a range across the seam of two writes is then a view
too, not a joined copy (path MTU discovery's 64 KB datagrams crossed a
256 KB writer's seams every fourth datagram).

Positions are stream positions (64-bit, unwrapped): `start` is the first byte
held, `end` one past the last.
"""

from __future__ import annotations

from typing import Any, Final

from bisect import bisect_right

from .._build import extension

# wire/_batch.c's `follows` (a view of two consecutive views of one bytes
# object), or None (the pure build, or no extension): the chunks then stay
# apart and a range across them is joined, the same bytes.
_ext: Any = extension("gannet.wire._batch")
_follows: Any = getattr(_ext, "follows", None)

COMPACT_AT: Final = 32  # drop acknowledged chunks' slots once this many and half the list


class SendBuffer:
    __slots__ = ("_chunks", "_ends", "_first", "start", "end")

    def __init__(self, start: int) -> None:
        # Chunk i holds [_ends[i] - len(_chunks[i]), _ends[i]); those before
        # _first are acknowledged and only wait for compaction. Made on first
        # write and dropped when empty (an idle connection holds no lists).
        self._chunks: list[bytes | memoryview | None] | None = None
        self._ends: list[int] | None = None
        self._first = 0
        self.start = start  # first byte held (the oldest chunk may begin earlier)
        self.end = start

    def __len__(self) -> int:
        return self.end - self.start

    def __bool__(self) -> bool:
        return self.end > self.start

    def append(self, data: bytes | bytearray | memoryview) -> None:
        if type(data) is not bytes and not (type(data) is memoryview and type(data.obj) is bytes):
            data = bytes(data)  # the caller may reuse a mutable buffer
        n = len(data)
        if not n:
            return
        chunks, ends = self._chunks, self._ends
        if chunks is None or ends is None:
            chunks = self._chunks = []
            ends = self._ends = []
            self._first = 0
        elif type(data) is memoryview and _follows is not None:
            both = _follows(chunks[-1], data)
            if both is not None:  # the next slice of the same buffer: one chunk
                chunks[-1] = both
                self.end += n
                ends[-1] = self.end
                return
        chunks.append(data)
        self.end += n
        ends.append(self.end)

    def trim(self, upto: int) -> None:
        """Forget bytes before `upto` (acknowledged): chunks wholly before it
        are released; a partly acknowledged one stays until it is done."""
        if upto <= self.start:
            return
        if upto >= self.end:
            self._chunks = self._ends = None
            self.start = self.end
            return
        self.start = upto
        chunks, ends = self._chunks, self._ends
        assert chunks is not None and ends is not None  # bytes are held
        first = bisect_right(ends, upto, self._first)
        for i in range(self._first, first):
            chunks[i] = None  # release it now, not at compaction
        if first > COMPACT_AT and 2 * first > len(chunks):
            del chunks[:first]
            del ends[:first]
            first = 0
        self._first = first

    def span(self, start: int, end: int) -> tuple[bytes | memoryview, int]:
        """[start, end) as (buffer, offset): the chunk the range lies in and
        where it begins there, or, for a range across chunks, a joined copy
        and 0. The range must be held (start >= self.start, end <= self.end)."""
        if start < self.start or end > self.end or start >= end:
            raise IndexError(f"range [{start}, {end}) is not in the send buffer")
        chunks, ends = self._chunks, self._ends
        assert chunks is not None and ends is not None  # bytes are held
        i = bisect_right(ends, start, self._first)
        chunk = chunks[i]
        assert chunk is not None  # not yet acknowledged
        if end <= ends[i]:
            return chunk, start - (ends[i] - len(chunk))
        return self._join(i, start, end), 0

    def stretches(self, start: int, end: int, step: int) -> list[int]:
        """[start, end) cut after whole steps from `start` into stretches
        that each lie in one chunk, and single steps that run across two
        (the last step may be shorter): the stretches' ends, in order. A
        range within one chunk is one stretch: [end]."""
        chunks, ends = self._chunks, self._ends
        assert chunks is not None and ends is not None  # bytes are held
        i = bisect_right(ends, start, self._first)
        limit = ends[i]
        if end <= limit:
            return [end]
        stops: list[int] = []
        pos = start
        while pos < end:
            if end <= limit:
                stops.append(end)
                break
            n = (limit - pos) // step
            # whole steps up to the seam, else one step across it alone
            pos = pos + n * step if n else (pos + step if pos + step < end else end)
            stops.append(pos)
            while pos >= limit and pos < end:
                i += 1
                limit = ends[i]
        return stops

    def view(self, start: int, end: int) -> bytes | memoryview:
        """[start, end) as one bytes-like object (a view when it lies in one
        chunk). Like slicing a bytes object, a range running past the end
        gives what is held and an empty range gives b"" (a FIN's segment, a
        probe at the edge); a range starting before what is held is an error."""
        if start < self.start:
            raise IndexError(f"range [{start}, {end}) starts before the send buffer ({self.start})")
        if end > self.end:
            end = self.end
        if start >= end:
            return b""
        chunks, ends = self._chunks, self._ends
        assert chunks is not None and ends is not None  # bytes are held
        if end == ends[-1]:
            chunk = chunks[-1]
            if chunk is not None and end - start == len(chunk):
                return chunk  # the newest chunk, whole (a message just written): what span finds
        buf, off = self.span(start, end)
        if off == 0 and len(buf) == end - start:
            return buf
        return memoryview(buf)[off : off + (end - start)]

    def _join(self, i: int, start: int, end: int) -> bytes:
        chunks, ends = self._chunks, self._ends
        assert chunks is not None and ends is not None  # bytes are held
        parts = []
        pos = start
        while pos < end:
            chunk = chunks[i]
            assert chunk is not None  # not yet acknowledged
            begin = ends[i] - len(chunk)
            stop = min(end, ends[i])
            parts.append(memoryview(chunk)[pos - begin : stop - begin])
            pos = stop
            i += 1
        return b"".join(parts)
