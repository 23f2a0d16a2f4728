"""Showing text a peer chose: every tool passes peer strings through `safe_text`.

A name, message, file name, refusal reason or log field that came over the
network can carry terminal control sequences (ESC and the 8-bit CSI U+009B
move the cursor, clear the screen, set the window title), a newline that
forges a whole line of output, or bidirectional controls (U+202E and
friends) that make `gpj.exe` read as `exe.jpg`. `safe_text` replaces every
such character with a visible escape (`\\x1b`, `\\n`, `\\u202e`), so what the
peer sent is still readable but can only ever be one line of inert text.

Escaped: C0 controls, DEL, C1 controls (U+0080-U+009F), the line and
paragraph separators, lone surrogates, and the invisible format characters
that reorder or hide text (bidi marks, embeddings, overrides and isolates,
zero-width space, word joiner and invisible operators, BOM, interlinear
annotation, tag characters). Zero-width (non-)joiners are kept: emoji
sequences and several scripts need them and they cannot reorder anything.

Rich markup is a second channel: text that goes through a rich *markup*
string (a progress bar's description) must also pass `rich_safe`.
"""

from __future__ import annotations

import logging
import re

# One class of characters never shown raw (see the module docstring).
_UNSAFE = re.compile(
    "["
    "\x00-\x1f\x7f-\x9f"  # C0, DEL, C1 (U+009B is the one-byte CSI)
    "\u061c"  # ARABIC LETTER MARK (bidi)
    "\u180e"  # MONGOLIAN VOWEL SEPARATOR (invisible)
    "\u200b\u200e\u200f"  # ZERO WIDTH SPACE, LRM, RLM
    "\u2028-\u202e"  # LINE/PARAGRAPH SEPARATOR, LRE, RLE, PDF, LRO, RLO
    "\u2060-\u206f"  # WORD JOINER, invisible operators, LRI, RLI, FSI, PDI, deprecated formats
    "\ud800-\udfff"  # lone surrogates (from surrogateescape)
    "\ufeff"  # BOM / ZERO WIDTH NO-BREAK SPACE
    "\ufff9-\ufffb"  # interlinear annotation
    "\U000e0000-\U000e007f"  # tag characters (invisible text)
    "]"
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def safe_text(value: object) -> str:
    """`value` as one line of inert text: control, bidi and invisible format
    characters shown as visible escapes. Non-strings are converted with str();
    bytes are decoded as UTF-8 with invalid bytes shown as `\\xNN`."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        text = bytes(value).decode("utf-8", "backslashreplace")
    else:
        text = value if isinstance(value, str) else str(value)
    return _UNSAFE.sub(_escape, text)


def has_unsafe(text: str) -> bool:
    """Whether `safe_text` would change `text` (used to refuse such file names)."""
    return _UNSAFE.search(text) is not None


def rich_safe(value: object) -> str:
    """`safe_text`, then rich markup escaped: for strings rich parses as markup."""
    from rich.markup import escape

    return escape(safe_text(value))


class SafeFormatter(logging.Formatter):
    """A logging formatter whose every line is passed through `safe_text`.

    Log records of the network tools carry peer-chosen fields (client ids,
    disconnect reasons, error texts); escaping the formatted message keeps a
    record on its one line whatever its arguments hold. A traceback, added by
    the base class after the message, keeps its own newlines.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        return safe_text(super().formatMessage(record))
