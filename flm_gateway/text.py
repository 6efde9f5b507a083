"""Client-controlled text made safe to show: to a terminal, a log line, an error message.

Anything a client sends (paths, model names, header values) can carry control
characters: ESC sequences that repaint or retitle a terminal, CR/LF that forge log
lines, Unicode bidi overrides (U+202E) that reorder what an operator reads. And it
can be megabytes long. Every human-facing output shows client text through
`printable`, and every error message that echoes client input through `echo`.
"""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls, and the Unicode format characters that reorder or
# hide text (bidi embeddings, overrides and isolates, zero-width joiners, BOM).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
ECHO_LIMIT = 256


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(value: str) -> str:
    """`value` with every control and reordering character shown as an escape (`\\x1b`)."""
    return _UNSAFE.sub(_escape, value)


def echo(value: str, limit: int = ECHO_LIMIT) -> str:
    """`value` fit to quote back to a client: at most `limit` characters, then an ellipsis."""
    if len(value) > limit:
        value = value[:limit] + "…"
    return printable(value)
