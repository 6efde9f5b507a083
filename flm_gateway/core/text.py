"""Client-controlled text made safe to show: to a terminal, a log line, an error message.

Anything a client sends (paths, model names, header values) can carry control
characters: ESC sequences that repaint or retitle a terminal, CR/LF that forge log
lines, Unicode bidi overrides (U+202E) that reorder what an operator reads, bytes
that are not UTF-8 at all (Python holds them as lone surrogates, which cannot even
be encoded to be written to a file or a database). And it can be megabytes long.
Every human-facing output shows client text through `printable` (or
`printable_lines` for text that may span lines), every stored record keeps it that
way, and every error message that echoes client input uses `echo`.

What is escaped: every character Python's `str.isprintable()` rejects except the
ASCII space: C0 and C1 controls, DEL, format characters (bidi embeddings,
overrides and isolates, zero-width characters, BOM, tag characters), line and
paragraph separators, spaces other than U+0020, lone surrogates, private-use and
unassigned code points. A byte that was not UTF-8 is shown as the byte (`\\xff`).
"""

from __future__ import annotations

ECHO_LIMIT = 256
_SURROGATE_BYTES = range(0xDC80, 0xDD00)
"""How `surrogateescape` (mitmproxy's path decoding, os.fsdecode) holds a non-UTF-8 byte."""


def _escape(char: str) -> str:
    code = ord(char)
    if code in _SURROGATE_BYTES:
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(value: str) -> str:
    """`value` on one line, every control and reordering character shown as an escape (`\\x1b`)."""
    if value.isprintable():  # the common case, at C speed
        return value
    return "".join(char if char.isprintable() else _escape(char) for char in value)


def printable_lines(value: str) -> str:
    """Like `printable`, but line feeds and tabs stay: for a log record, a chat reply.

    Whoever shows the result must still make each continuation line distinguishable
    from a new record (the text log indents them).
    """
    if value.isprintable():
        return value
    return "\n".join(
        "\t".join(printable(part) for part in line.split("\t")) for line in value.split("\n")
    )


def clip(value: str, limit: int) -> str:
    """The first `limit` characters of `value`, then an ellipsis if anything was cut."""
    return value if len(value) <= limit else value[:limit] + "…"


def echo(value: str, limit: int = ECHO_LIMIT) -> str:
    """`value` fit to quote back to a client: at most `limit` characters, then an ellipsis."""
    return printable(clip(value, limit))
