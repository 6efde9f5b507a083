"""bodies.multipart: strict reading of uploads, canonical writing (checked against
python-multipart, the parser FastAPI/starlette engines use)."""

from __future__ import annotations

import pytest

from flm_gateway.bodies import BodyError
from flm_gateway.bodies.multipart import MAX_PARTS, Part, read_form, write_form
from tests.support.multipart_reference import reference_parts

TYPE = "multipart/form-data; boundary=b"


def part(name: str, value: bytes = b"v", extra: str = "") -> bytes:
    return f'--b\r\nContent-Disposition: form-data; name="{name}"{extra}\r\n\r\n'.encode() + value


def body(*parts: bytes) -> bytes:
    return b"\r\n".join(parts) + b"\r\n--b--\r\n"


def test_reads_parts_in_order() -> None:
    raw = body(part("model", b"m"), part("file", b"\r\n--x\r\n", '; filename="a b.wav"'))
    assert read_form(TYPE, raw) == [Part("model", b"m"), Part("file", b"\r\n--x\r\n", "a b.wav")]
    assert read_form('multipart/form-data; boundary="b"', raw) == read_form(TYPE, raw)


@pytest.mark.parametrize(
    ("content_type", "raw", "code"),
    [
        (TYPE, body(part("m"), part("m")), "duplicate_field"),
        (TYPE, body(part("m[]"), part("m"), part("m")), "duplicate_field"),
        ("multipart/form-data", body(part("m")), "invalid_multipart"),
        ("multipart/form-data; boundary=a b", body(part("m")), "invalid_multipart"),
        ("multipart/form-data; boundary=" + "b" * 71, body(part("m")), "invalid_multipart"),
        (TYPE, body(part("m")).replace(b"\r\n", b"\n"), "invalid_multipart"),
        (TYPE, b"\r\n" + body(part("m")), "invalid_multipart"),
        (TYPE, body(part("m")) + b"--b\r\n", "invalid_multipart"),
        (TYPE, body(part("m"))[:-4], "invalid_multipart"),
        (TYPE, body(part("m", b"x\r\n--b"), part("n")), "invalid_multipart"),
        (TYPE, body(part("m", b"--b")), "invalid_multipart"),
        (TYPE, body(part("m", extra="; filename*=UTF-8''x")), "invalid_multipart"),
        (TYPE, body(part("m", extra='; size="3"')), "invalid_multipart"),
        (TYPE, body(part("m", extra='; filename="a"; filename="b"')), "invalid_multipart"),
        (
            TYPE,
            body(b'--b\r\nContent-Disposition: attachment; name="m"\r\n\r\nv'),
            "invalid_multipart",
        ),
        (
            TYPE,
            body(b'--b\r\nX-Other: 1\r\nContent-Disposition: form-data; name="m"\r\n\r\nv'),
            "invalid_multipart",
        ),
        (
            TYPE,
            body(b'--b\r\nContent-Disposition: form-data; name="m"\r\n\r\n'[:-2] + b"v"),
            "invalid_multipart",
        ),
        (
            TYPE,
            body(b'--b\r\nContent-Disposition: form-data; name="\xff"\r\n\r\nv'),
            "invalid_multipart",
        ),
        (TYPE, body(*(part(f"f{i}") for i in range(MAX_PARTS + 1))), "invalid_multipart"),
    ],
)
def test_refused(content_type: str, raw: bytes, code: str) -> None:
    with pytest.raises(BodyError) as refused:
        read_form(content_type, raw)
    assert refused.value.code == code


def test_written_form_is_what_python_multipart_reads() -> None:
    parts = [
        Part("file", b"\x00\r\n--b\r\n" * 100, "clip.wav", "audio/wav"),
        Part("model", "whisper-é".encode()),
        Part("timestamp_granularities[]", b"word"),
        Part("timestamp_granularities[]", b"segment"),
    ]
    content_type, raw = write_form(parts)
    assert read_form(content_type, raw) == parts
    assert reference_parts(content_type, raw) == [(p.name, p.filename, p.data) for p in parts]
