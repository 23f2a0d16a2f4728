"""File transfer over one Gannet connection: `gannet send` / `gannet receive`.

See docs/transfer.md for the protocol. The pieces:

- `protocol`: header, reply and frame formats, path validation (pure)
- `sender`: `collect` files and directories, `send_files` to a receiver
- `receiver`: `Receiver(directory).handle(reader, writer)` for `gannet.start_server`
- `progress`: rich progress bars on a terminal, summary lines otherwise

Names load on first use (PEP 562): the command line parser imports
`protocol` alone without asyncio and zstandard coming with it.
"""

from __future__ import annotations

TYPE_CHECKING = False  # (typing.TYPE_CHECKING without importing typing)
if TYPE_CHECKING:
    from .progress import Reporter
    from .protocol import ProtocolError, check_path
    from .receiver import Outcome, Receiver
    from .sender import SendResult, Source, TransferError, collect, send_files

_HOMES = {
    "Reporter": "progress", "ProtocolError": "protocol", "check_path": "protocol",
    "Outcome": "receiver", "Receiver": "receiver", "SendResult": "sender", "Source": "sender",
    "TransferError": "sender", "collect": "sender", "send_files": "sender",
}

__all__ = sorted(_HOMES)

# `gannet send --compress` (gannet.apps.transfer.protocol's home for it):
# here, so that the command line's parser, which `gannet send` builds
# before it starts its code exchange's child (gannet.io.spake_child), does not load
# the protocol module with hashlib, json and dataclasses.
COMPRESS_MODES = ("auto", "zstd", "none")


from ..._lazy import lazy_getattr

__getattr__ = lazy_getattr(__name__, _HOMES, globals())
