"""Regular expressions that run in time linear in their input, whatever the input: RE2.

Python's `re` backtracks: `\\(\\)\\s*\\{\\s*:?\\s*;?\\s*\\}` against `() {` and 4,000
spaces tries every way to split the spaces between its three `\\s*` and took 37 s
of the event loop. RE2 (`google-re2`) simulates the automaton instead, so a search
costs O(len(pattern) * len(text)) at worst: no pattern and no input can make it
backtrack. It reads lazy and DFA-hostile patterns correctly too: when its DFA
runs out of memory, `RE2` falls back to its NFA, still linear. (`RE2::Set` is not
used: its Python binding reports a DFA out of memory as "no match".)

The price is RE2's syntax: no lookahead or lookbehind, no backreferences, no
possessive quantifiers or atomic groups; `\\b`, `\\w`, `\\d` and `\\s` are ASCII
(`\\s` is `[\\t\\n\\f\\r ]`, no `\\v`).

Patterns here read bytes as Latin-1 (one byte, one character: any byte sequence
is valid input, nothing is skipped as bad UTF-8), ignore case, capture nothing,
and are multi-line: `^` and `$` also match around `\\n`, so one search can cover
several values joined by newlines, each on its own line.
"""

from __future__ import annotations

from typing import Any

import re2

RegexError = re2.error


def _options() -> Any:
    options = re2.Options()
    options.encoding = re2.Options.Encoding.LATIN1
    options.case_sensitive = False
    options.never_capture = True
    options.log_errors = False
    return options


class LinearPattern:
    """One compiled pattern; `search(data)` says whether it occurs anywhere in `data`."""

    __slots__ = ("_compiled", "pattern")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._compiled: Any = re2.compile(b"(?m)" + pattern.encode("latin-1"), _options())

    def search(self, data: bytes) -> bool:
        return self._compiled.search(data) is not None

    @classmethod
    def any_of(cls, patterns: list[str]) -> LinearPattern:
        """One pattern that matches where any of `patterns` does (one pass over the input)."""
        if not patterns:
            raise ValueError("any_of() needs at least one pattern")
        return cls("|".join(f"(?:{pattern})" for pattern in patterns))
