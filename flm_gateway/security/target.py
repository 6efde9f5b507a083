"""The canonical request target: the one spelling of a path that the gateway and engines share.

Engines route on the *decoded* path (Go's net/http and gin, cpp-httplib,
uvicorn/starlette, Node all percent-decode it before matching, `%2F` included), so
a policy that matches the raw target can be walked around: `/api/%70ull` and
`/api%2Fpull` are Ollama's `/api/pull`. `canonical_target` turns a request target
into the form it forwards, in which every decision is taken:

- **Decoded once, unreserved only.** `%XX` of an RFC 3986 unreserved character
  (`A-Z a-z 0-9 - . _ ~`) is decoded (`/%61pi` -> `/api`); any other `%XX` stays
  encoded with upper-case hex (`%3a` -> `%3A`), so it can never turn into a
  delimiter. The result decodes to the same path in every engine.
- **Resolved.** Repeated slashes collapse (`//api//pull` -> `/api/pull`); raw `.`
  and `..` segments are removed as RFC 3986 §5.2.4 says (`/v1/../api/pull` ->
  `/api/pull`; Go's ServeMux cleans paths, gin does not: forwarding the resolved
  form gives both the same path). A trailing slash is kept.
- **Refused** (`TargetRefused`, the gateway answers 400) where canonicalising would
  mean guessing how the engine decodes: an encoded `/` (`%2F`) or `\\` (`%5C`), an
  encoded `%` (`%25`, a double encoding), an encoded dot segment (`%2e`, `.%2E`),
  NUL or another control character (raw or `%00`..`%1F`, `%7F`), a raw backslash,
  a `;` path parameter (Tomcat-style `/api/pull;x`), a malformed escape (`%G0`,
  a lone `%`), encoded bytes that are not UTF-8 (`%C0%AE`), a raw character outside
  RFC 3986's path characters (spaces, quotes, `<>{}|^` and non-ASCII: clients
  encode them), a fragment (`#`), and any target that is not a path (`*`).
- **Query.** Forwarded byte for byte (engines parse their own parameters; re-encoding
  would change what they read). It may hold any visible ASCII character but `#`;
  its escapes must be well formed and never `%00`.
- **Linear.** Every step is a single pass over the target. Its length is bounded
  once, by the HTTP layer (`server.limits.max_url_length`, 8 KiB by default: a longer
  request line is answered 414 before any addon runs, `mitm_http1`).

The matching form in `security.paths` (decoded repeatedly, case-folded) is a
different thing: a lossy view for decoys and attack signatures, never forwarded.
"""

from __future__ import annotations

import re
from enum import StrEnum

# A path that is already canonical: segments of RFC 3986 pchars without `%` and `;`,
# no empty segment but a trailing slash, no `.`/`..` segment. Possessive: nothing is
# ever matched twice, so a long target that fails costs no backtracking.
_CANONICAL_PATH = re.compile(r"(?:/(?!\.\.?(?:/|$))[A-Za-z0-9\-._~!$&'()*+,=:@]++)++/?+|/")
# What may stand raw in a path before decoding (pchars, `/`, `%`; `;` is refused apart).
_PATH_CHARACTER = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,=:@%/]*+")
# A query: visible ASCII but `#` and `%`, or a well-formed escape other than `%00`.
_QUERY = re.compile(r"(?:[!-\"$&-~]|%(?!00)[0-9A-Fa-f]{2})*+")
# Something to resolve in a decoded path: an empty or a dot segment.
_TO_RESOLVE = re.compile(r"//|/\.\.?(?:/|$)")
_HIGH_ESCAPE = re.compile(r"%[89A-F][0-9A-F]")
_ESCAPE_RUN = re.compile(r"(?:%[0-9A-F]{2})++")


class Refusal(StrEnum):
    """Why a target cannot be canonicalised (the reason recorded for the audit log)."""

    NOT_A_PATH = "not_a_path"
    ENCODED_SLASH = "encoded_slash"
    BACKSLASH = "backslash"
    ENCODED_PERCENT = "encoded_percent"
    ENCODED_DOT_SEGMENT = "encoded_dot_segment"
    CONTROL_CHARACTER = "control_character"
    PATH_PARAMETER = "path_parameter"
    MALFORMED_ESCAPE = "malformed_escape"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_CHARACTER = "invalid_character"
    INVALID_QUERY = "invalid_query"


EXPLANATIONS: dict[Refusal, str] = {
    Refusal.NOT_A_PATH: "The request target must be a path starting with '/'.",
    Refusal.ENCODED_SLASH: "The path contains an encoded '/' (%2F); send '/' unencoded.",
    Refusal.BACKSLASH: "The path contains a backslash (raw or %5C).",
    Refusal.ENCODED_PERCENT: "The path contains an encoded '%' (%25), a double encoding.",
    Refusal.ENCODED_DOT_SEGMENT: "The path contains an encoded '.' or '..' segment.",
    Refusal.CONTROL_CHARACTER: "The path contains a control character or NUL.",
    Refusal.PATH_PARAMETER: "The path contains ';' (path parameters are not supported).",
    Refusal.MALFORMED_ESCAPE: "The path contains a '%' that is not followed by two hex digits.",
    Refusal.INVALID_UTF8: "The path's percent-encoded bytes are not valid UTF-8.",
    Refusal.INVALID_CHARACTER: (
        "The path contains a character that must be percent-encoded (RFC 3986)."
    ),
    Refusal.INVALID_QUERY: (
        "The query string contains a malformed escape, %00, '#', or a character that "
        "must be percent-encoded."
    ),
}
"""What the client is told for each refusal (fixed text: client input is never echoed)."""


class TargetRefused(ValueError):
    """The target cannot be canonicalised without guessing; `reason` says why."""

    def __init__(self, reason: Refusal) -> None:
        super().__init__(reason.value)
        self.reason = reason


def canonical_target(target: str) -> str:
    """The canonical form of request target `target` (see the module docstring).

    Returns `target` itself when it is already canonical; raises `TargetRefused`.
    """
    path, question, query = target.partition("?")
    if question and _QUERY.fullmatch(query) is None:
        raise TargetRefused(Refusal.INVALID_QUERY)
    if _CANONICAL_PATH.fullmatch(path) is not None:
        return target
    canonical = canonical_path(path)
    return canonical + question + query if canonical != path else target


def canonical_path(path: str) -> str:
    """The canonical form of a path (no query); raises `TargetRefused`."""
    if not path.startswith("/"):
        raise TargetRefused(Refusal.NOT_A_PATH)
    if _PATH_CHARACTER.fullmatch(path) is None:
        raise TargetRefused(_bad_character(path))
    decoded = _decode(path) if "%" in path else path
    if _TO_RESOLVE.search(decoded) is not None:
        decoded = _resolve(path, decoded)
    if _HIGH_ESCAPE.search(decoded) is not None and not _utf8_escapes(decoded):
        raise TargetRefused(Refusal.INVALID_UTF8)
    return decoded


def _bad_character(path: str) -> Refusal:
    """Why `path` holds a character no canonical path may hold."""
    if "\\" in path:
        return Refusal.BACKSLASH
    if ";" in path:
        return Refusal.PATH_PARAMETER
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        return Refusal.CONTROL_CHARACTER
    return Refusal.INVALID_CHARACTER


def _utf8_escapes(decoded: str) -> bool:
    """Whether every run of escapes in `decoded` is UTF-8 (raw characters are ASCII, so a
    multi-byte character is always one run of escapes)."""
    try:
        for run in _ESCAPE_RUN.findall(decoded):
            bytes.fromhex(run.replace("%", "")).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _escape_tables() -> tuple[dict[str, str], dict[str, Refusal]]:
    """For every two hex digits, in every case: what the escape becomes (the unreserved
    character, or itself in upper case), or why it is refused."""
    unreserved = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
    refused = {0x2F: Refusal.ENCODED_SLASH, 0x5C: Refusal.BACKSLASH, 0x25: Refusal.ENCODED_PERCENT}
    refused |= {byte: Refusal.CONTROL_CHARACTER for byte in (*range(0x20), 0x7F)}
    decoded: dict[str, str] = {}
    refusals: dict[str, Refusal] = {}
    for byte in range(256):
        upper = f"{byte:02X}"
        for spelling in {
            upper,
            upper.lower(),
            upper[0] + upper[1].lower(),
            upper[0].lower() + upper[1],
        }:
            if byte in refused:
                refusals[spelling] = refused[byte]
            else:
                decoded[spelling] = chr(byte) if byte in unreserved else "%" + upper
    return decoded, refusals


_DECODED, _REFUSED = _escape_tables()


def _decode(path: str) -> str:
    """`path` with unreserved escapes decoded and the others upper-cased (one dict lookup
    per escape); raises `TargetRefused` for refused and malformed escapes. Never creates
    or removes a `/` (`%2F` is refused)."""
    pieces = path.split("%")
    out = [pieces[0]]
    for piece in pieces[1:]:
        digits = piece[:2]
        escape = _DECODED.get(digits)
        if escape is None:
            raise TargetRefused(_REFUSED.get(digits, Refusal.MALFORMED_ESCAPE))
        out.append(escape)
        out.append(piece[2:])
    return "".join(out)


def _resolve(path: str, decoded: str) -> str:
    """`decoded` with repeated slashes collapsed and raw dot segments removed (RFC 3986
    §5.2.4); a dot segment that was spelt with escapes in `path` is refused."""
    segments: list[str] = []
    last = ""
    for raw, segment in zip(path.split("/")[1:], decoded.split("/")[1:], strict=True):
        last = segment
        if segment == "." or segment == "..":
            if raw != segment:
                raise TargetRefused(Refusal.ENCODED_DOT_SEGMENT)
            if segment == ".." and segments:
                segments.pop()
        elif segment:
            segments.append(segment)
    canonical = "/" + "/".join(segments)
    if segments and last in ("", ".", ".."):
        canonical += "/"
    return canonical
