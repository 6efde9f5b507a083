from __future__ import annotations

import pytest

from flm_gateway.config.types import parse_byte_size, parse_duration, parse_host_port


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (30, 30.0),
        (1.5, 1.5),
        ("250ms", 0.25),
        ("30s", 30.0),
        ("10m", 600.0),
        ("24h", 86400.0),
        ("7", 7.0),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["10 minutes", "-1", -1, True, "m", None])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match=r"duration|negative"):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("text", "size"), [(1024, 1024), ("512KiB", 524288), ("10MB", 10_000_000), ("1GiB", 1024**3)]
)
def test_sizes(text: object, size: int) -> None:
    assert parse_byte_size(text) == size


def test_bad_size() -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_byte_size("ten megs")


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1:8088", ("127.0.0.1", 8088)),
        ("[::1]:443", ("::1", 443)),
        ("gw.lan:80", ("gw.lan", 80)),
    ],
)
def test_host_port(text: str, address: tuple[str, int]) -> None:
    assert parse_host_port(text) == address


@pytest.mark.parametrize("bad", ["localhost", ":80", "::1:80", "[zz]:80", "h:0", "h:70000", 8088])
def test_bad_host_port(bad: object) -> None:
    with pytest.raises(ValueError, match=r"host:port|port|IPv6"):
        parse_host_port(bad)
