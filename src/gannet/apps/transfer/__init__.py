"""File transfer over one Gannet connection: `gannet send` / `gannet receive`.

See docs/transfer.md for the protocol. The pieces:

- `protocol`: header, reply and frame formats, path validation (pure)
- `sender`: `collect` files and directories, `send_files` to a receiver
- `receiver`: `Receiver(directory).handle(reader, writer)` for `gannet.start_server`
- `progress`: rich progress bars on a terminal, summary lines otherwise
"""

from .progress import Reporter
from .protocol import ProtocolError, check_path
from .receiver import Outcome, Receiver
from .sender import SendResult, Source, TransferError, collect, send_files

__all__ = [
    "Outcome", "ProtocolError", "Receiver", "Reporter", "SendResult", "Source",
    "TransferError", "check_path", "collect", "send_files",
]
