"""Bytes to validated segments and back. Pure functions, no state, no I/O."""

from .datagram import MAX_DATA_OVERHEAD, WireError, decode, encode
from .segment import Flags, Segment, seq_diff, seq_le, seq_lt, unwrap

__all__ = [
    "Flags", "MAX_DATA_OVERHEAD", "Segment", "WireError",
    "decode", "encode", "seq_diff", "seq_le", "seq_lt", "unwrap",
]
