"""The one multipart/form-data reader for uploads, and the canonical form the engine gets.

`read_form(content_type, raw)` returns the parts of an upload, or raises `BodyError`
(400, `invalid_multipart` unless said otherwise) for anything two multipart parsers
could read differently (mitmproxy's takes the first `model`, python-multipart,
which FastAPI/starlette engines use, the last):
- a content type other than `multipart/form-data; boundary=B` (one boundary, B of
  RFC 2046's characters without spaces, quoted or not, nothing else);
- a preamble, transport padding after a delimiter, data after the closing
  delimiter (beyond one CRLF), LF-only line endings, or the boundary string inside
  a part (the body holds `--B` exactly once per delimiter);
- part headers other than one `Content-Disposition: form-data; name="..."` (with
  an optional `filename="..."`) and at most one `Content-Type`; quoted strings
  with backslashes or quotes, `name*=`/`filename*=` (RFC 2231/5987), other
  parameters, a parameter twice, an empty name, header continuation lines;
  `Content-Transfer-Encoding` and any other header; a nested `multipart/*` part;
- a field name twice (`duplicate_field`), except array fields (`name[]`);
- more than `MAX_PARTS` parts.
Work is linear: `bytes.find` and `count` over the body, a bounded regex per header.

`write_form(parts)` serialises parts again under a fresh random boundary, with
canonical headers: the engine gets exactly the parts the gateway read.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from flm_gateway.bodies import BodyError
from flm_gateway.core.text import echo

MAX_PARTS = 64
_CONTENT_TYPE = re.compile(
    r"multipart/form-data; ?boundary=(?:\"([0-9A-Za-z'()+_,./:=?-]{1,70})\"|"
    r"([0-9A-Za-z'()+_,./:=?-]{1,70}))",
    re.IGNORECASE,
)
_HEADER = re.compile(r"([A-Za-z][A-Za-z0-9-]*): ?([^\r\n]*)")
_DISPOSITION = re.compile(r'form-data((?:; ?[A-Za-z*]+="[^"\\\r\n]*")*)', re.IGNORECASE)
_PARAMETER = re.compile(r'; ?([A-Za-z*]+)="([^"\\\r\n]*)"')
_PART_CONTENT_TYPE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+/[!#$%&'*+.^_`|~0-9A-Za-z-]+(?:;.*)?")


@dataclass(frozen=True)
class Part:
    """One part of a form, as the gateway read it."""

    name: str
    data: bytes
    filename: str | None = None
    """Set (maybe empty) for file parts: starlette treats a part with a filename as a file."""
    content_type: str | None = None


def _refuse(message: str, code: str = "invalid_multipart", param: str | None = None) -> BodyError:
    return BodyError(message, code, param)


def boundary_of(content_type: str) -> str:
    """The boundary of a `multipart/form-data` content type, or BodyError."""
    match = _CONTENT_TYPE.fullmatch(content_type.strip())
    if match is None:
        raise _refuse(
            "Send uploads as 'multipart/form-data; boundary=...' with one plain boundary "
            "(letters, digits and '()+_,-./:=? only)."
        )
    return match.group(1) or match.group(2)


def _read_part(chunk: bytes) -> Part:
    head, separator, data = chunk.partition(b"\r\n\r\n")
    if not separator:
        raise _refuse("A part has no header block (or its lines do not end in CRLF).")
    try:
        lines = head.decode("utf-8").split("\r\n")
    except UnicodeDecodeError:
        raise _refuse("A part header is not valid UTF-8.") from None
    headers: dict[str, str] = {}
    for line in lines:
        match = _HEADER.fullmatch(line)
        if match is None:
            raise _refuse(f"The part header '{echo(line)}' is not 'Name: value' on one line.")
        name = match.group(1).lower()
        if name not in ("content-disposition", "content-type") or name in headers:
            raise _refuse(
                f"The part header '{echo(match.group(1))}' is not accepted here (only one "
                "Content-Disposition and at most one Content-Type)."
            )
        headers[name] = match.group(2)
    disposition = _DISPOSITION.fullmatch(headers.get("content-disposition", ""))
    if disposition is None:
        raise _refuse("Each part needs 'Content-Disposition: form-data; name=\"...\"'.")
    parameters: dict[str, str] = {}
    for key, value in _PARAMETER.findall(disposition.group(1)):
        if key not in ("name", "filename") or key in parameters:
            raise _refuse(
                f"The Content-Disposition parameter '{echo(key)}' is not accepted here "
                "(name and filename, once each, lowercase)."
            )
        parameters[key] = value
    if not parameters.get("name"):
        raise _refuse("A part has no field name.")
    content_type = headers.get("content-type")
    if content_type is not None and (
        _PART_CONTENT_TYPE.fullmatch(content_type) is None
        or content_type.lower().startswith("multipart/")
    ):
        raise _refuse(f"The part content type '{echo(content_type)}' is not accepted here.")
    return Part(parameters["name"], data, parameters.get("filename"), content_type)


def read_form(content_type: str, raw: bytes) -> list[Part]:
    """The parts of the upload `raw`, read the one way every multipart parser reads it."""
    delimiter = b"--" + boundary_of(content_type).encode("ascii")
    separator = b"\r\n" + delimiter
    if not raw.startswith(delimiter + b"\r\n"):
        raise _refuse("The body must start with the boundary line (no preamble).")
    parts: list[Part] = []
    position = len(delimiter) + 2
    while True:
        end = raw.find(separator, position)
        if end < 0:
            raise _refuse("The body has no closing boundary.")
        parts.append(_read_part(raw[position:end]))
        after = end + len(separator)
        if raw.startswith(b"--", after):
            if raw[after + 2 :] not in (b"", b"\r\n"):
                raise _refuse("Data follows the closing boundary.")
            break
        if not raw.startswith(b"\r\n", after):
            raise _refuse("A boundary line has more than the boundary on it.")
        if len(parts) == MAX_PARTS:
            raise _refuse(f"An upload may have at most {MAX_PARTS} parts.")
        position = after + 2
    if raw.count(delimiter) != len(parts) + 1:
        raise _refuse("The boundary string occurs inside a part (or a line ends in LF only).")
    seen: set[str] = set()
    for part in parts:
        if part.name in seen and not part.name.endswith("[]"):
            raise _refuse(
                f"The field '{echo(part.name)}' appears twice; parsers disagree on which counts.",
                "duplicate_field",
                echo(part.name),
            )
        seen.add(part.name)
    return parts


def write_form(parts: Iterable[Part]) -> tuple[str, bytes]:
    """`(content type, body)` of `parts` under a fresh boundary, canonical headers."""
    parts = list(parts)
    boundary = "flm-" + secrets.token_hex(16)
    while any(boundary.encode() in part.data for part in parts):  # pragma: no cover
        boundary = "flm-" + secrets.token_hex(16)
    delimiter = b"--" + boundary.encode()
    chunks = []
    for part in parts:
        head = f'Content-Disposition: form-data; name="{part.name}"'
        if part.filename is not None:
            head += f'; filename="{part.filename}"'
        if part.content_type is not None:
            head += f"\r\nContent-Type: {part.content_type}"
        chunks += [delimiter, b"\r\n", head.encode(), b"\r\n\r\n", part.data, b"\r\n"]
    chunks += [delimiter, b"--\r\n"]
    return f"multipart/form-data; boundary={boundary}", b"".join(chunks)
