"""Path forms for matching decoys and attack signatures, whatever the spelling.

A scanner spells `/.env` as `/%2e%65nv`, `//.env` or `/x/../.env`; `canonical_path`
undoes those spellings (percent-decoding repeated until stable, backslashes, repeated
slashes, dot segments, case) so honeypots and intrusion rules see one form. It is a
lossy form for matching only, never forwarded: the path the gateway forwards and
routes on is `security.target.canonical_target` (decoded once, as engines decode),
which runs after honeypots and intrusion rules have seen the client's spelling.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, unquote_plus

_SLASHES = re.compile(r"/{2,}")
MAX_DECODE_ROUNDS = 3


def decode_repeatedly(text: str, plus_is_space: bool = False) -> str:
    """`text` percent-decoded until it stops changing (at most MAX_DECODE_ROUNDS times)."""
    decode = unquote_plus if plus_is_space else unquote
    for _ in range(MAX_DECODE_ROUNDS):
        decoded = decode(text, errors="replace")
        if decoded == text:
            break
        text = decoded
    return text


def split_target(target: str) -> tuple[str, str]:
    """(path, query) of a request target; the fragment, if any, is dropped."""
    target = target.split("#", 1)[0]
    path, _, query = target.partition("?")
    return path, query


def canonical_path(path: str) -> str:
    """Decoded, lower-case, `/`-separated, dot segments resolved, no parameters, no trailing /."""
    text = decode_repeatedly(path).replace("\\", "/").lower()
    text = text.split("?", 1)[0]
    segments: list[str] = []
    for segment in _SLASHES.sub("/", text).split("/"):
        segment = segment.split(";", 1)[0]
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    return "/" + "/".join(segments)


def path_matches(canonical: str, pattern: str) -> bool:
    """True if `canonical` is `pattern`, lies below it, or ends with it at a segment boundary.

    `pattern` is itself canonical (see `canonical_path`). So `/.env` matches
    `/.env`, `/.env/x` and `/app/.env`, but not `/.envelope`.
    """
    if pattern == "/":
        return True
    return (
        canonical == pattern
        or canonical.startswith(pattern + "/")
        or canonical.endswith(pattern)
        or (pattern + "/") in canonical
    )
