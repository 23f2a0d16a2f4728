"""Every limit the applications set against a hostile peer, in one place.

Each field is a constructor argument of the class that enforces it (and, for
the commands, a CLI option where one is worth having); docs/robustness.md
("Application limits") says what each protects and how to change it. The
transport's own limits (windows, half-open connections) are `gannet.Config`
fields, not these.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TransferLimits:
    """`gannet receive` (`gannet.apps.transfer.Receiver`)."""

    #: Seconds a new connection has to deliver its header line. A connection
    #: that opens and then trickles (or sends nothing) holds a stream buffer;
    #: like a web server's header timeout (nginx client_header_timeout, 60 s)
    #: it is cut off.
    header_timeout: float = 30.0
    #: Transfer connections handled at once; one more is refused with "busy".
    #: Each may buffer up to a header line (16 MiB) and a few 1 MiB frames.
    max_connections: int = 16
    #: A transfer that names a file another connection is still receiving
    #: waits for that connection to be silent this long (its sender was
    #: killed) before taking the file over; a live transfer is never taken
    #: over, and the newcomer is refused with "busy".
    stale_after: float = 3.0
    #: Bytes that must stay free on the target file system after every
    #: announced file is written; a larger offer is refused up front.
    min_free_bytes: int = 0


@dataclass(frozen=True)
class ChatLimits:
    """`gannet chat` (`gannet.apps.chat.session.ChatSession`)."""

    #: Incoming transfers at once; each holds an open `.part` file. Further
    #: OFFERs are refused (one system line, however many arrive), so a
    #: flood cannot exhaust file descriptors or the disk, and the user's own
    #: /send keeps working.
    max_incoming: int = 8
    #: Bytes that must stay free in the downloads folder after an offered
    #: file; a larger offer is refused at once.
    min_free_bytes: int = 0
    #: Seconds between redraws of the progress bars (they are never redrawn
    #: for every chunk or event).
    redraw_interval: float = 0.2
    #: Progress bars drawn at once; more transfers show as one "+N more" line.
    max_bars: int = 8


@dataclass(frozen=True)
class MessageLimits:
    """`gannet server` (`gannet.apps.messages.MessageServer`)."""

    #: Largest reassembled message one session may build from fragments.
    max_message_size: int = 64 * 1024 * 1024
    #: Bytes of unfinished fragmented messages held across all sessions of one
    #: server; a fragment that would go beyond it ends its session with an
    #: error, so N stalled sessions cannot hold N x max_message_size.
    max_buffered_bytes: int = 128 * 1024 * 1024
