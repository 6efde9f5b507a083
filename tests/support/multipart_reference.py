"""How FastAPI/starlette engines read an upload: python-multipart, as starlette drives it.

`reference_parts(content_type, body)` returns `[(name, filename, data)]` in body
order, or raises ValueError where python-multipart refuses. starlette (and so
vLLM's FastAPI handlers) keeps every part; a form field read as one value is the
*last* part of that name (`ImmutableMultiDict.get`), which is why the gateway refuses
duplicates instead of picking one.
"""

from __future__ import annotations

from python_multipart.multipart import MultipartParser, parse_options_header

Part = tuple[str, str | None, bytes]


def reference_parts(content_type: str, body: bytes) -> list[Part]:
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise ValueError("no boundary")
    parts: list[Part] = []
    headers: list[tuple[bytes, bytes]] = []
    field, value, data = bytearray(), bytearray(), bytearray()

    def on_header_field(chunk: bytes, start: int, end: int) -> None:
        field.extend(chunk[start:end])

    def on_header_value(chunk: bytes, start: int, end: int) -> None:
        value.extend(chunk[start:end])

    def on_header_end() -> None:
        headers.append((bytes(field).lower(), bytes(value)))
        field.clear()
        value.clear()

    def on_part_data(chunk: bytes, start: int, end: int) -> None:
        data.extend(chunk[start:end])

    def on_part_end() -> None:
        disposition = dict(headers).get(b"content-disposition", b"")
        _, params = parse_options_header(disposition)
        filename = params.get(b"filename")
        parts.append(
            (
                params.get(b"name", b"").decode("utf-8", "replace"),
                None if filename is None else filename.decode("utf-8", "replace"),
                bytes(data),
            )
        )
        headers.clear()
        data.clear()

    parser = MultipartParser(
        boundary,
        {  # type: ignore[arg-type]
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    parser.write(body)
    parser.finalize()
    return parts


def last_field(parts: list[Part], name: str) -> bytes | None:
    """The value starlette's form gives a single field `name`: the last part of that name."""
    values = [data for part_name, _, data in parts if part_name == name]
    return values[-1] if values else None
