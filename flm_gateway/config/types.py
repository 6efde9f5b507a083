"""Building blocks shared by every section of flm.yaml.

`StrictModel` is the base of every config model: unknown keys are errors and
models are frozen once validated. `Duration`, `ByteSize` and `HostPort` accept
the human forms people write in YAML ("90s", "10m", "1MiB", "127.0.0.1:8088")
and hold plain numbers or tuples afterwards, so addons never parse strings.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any
from urllib.parse import SplitResult, urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer, WithJsonSchema

from flm_gateway.core.hostnames import host_pattern, ip_text

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


class StrictModel(BaseModel):
    """Base of all config models: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_duration(value: Any) -> float:
    """Seconds from 30, 1.5, "250ms", "30s", "10m", "24h" or "7d"."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration (use e.g. 30s, 10m, 24h)")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{value!r} is negative; a duration is >= 0")
        return float(value)
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match:
            return float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]
    raise ValueError(f"{value!r} is not a duration (use e.g. 250ms, 30s, 10m, 24h, 7d)")


def parse_byte_size(value: Any) -> int:
    """Bytes from 1048576, "512KiB", "10MB" or "1GiB"."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size (use e.g. 512KiB, 10MiB)")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value!r} is negative; a size is >= 0")
        return value
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match and match.group(2).lower() in _SIZE_UNITS:
            return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
    raise ValueError(f"{value!r} is not a size (use e.g. 512KiB, 10MiB, 1GB)")


def parse_host_port(value: Any) -> tuple[str, int]:
    """(host, port) from "127.0.0.1:8088", "[::1]:8088" or "0.0.0.0:443"."""
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not host:port (e.g. 127.0.0.1:8088)")
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"{value!r} is not host:port (e.g. 127.0.0.1:8088 or [::1]:8088)")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"{value!r}: port {port} is outside 1-65535")
    if host.startswith("[") and host.endswith("]"):
        try:
            host = ip_text(ipaddress.IPv6Address(host[1:-1]))  # one spelling: [0:0::1] is [::1]
        except ValueError:
            raise ValueError(f"{value!r}: {host[1:-1]!r} is not an IPv6 address") from None
    elif ":" in host:
        raise ValueError(f"{value!r}: write IPv6 addresses in brackets, e.g. [::1]:8088")
    return host, port


def http_url_parts(value: str) -> SplitResult:
    """`value` split, when it is an http:// or https:// URL with a host (else ValueError)."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    return parts


def format_host_port(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback_host(host: str) -> bool:
    """True for loopback addresses and the name localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _number_or_text(json_type: str, pattern: str, description: str) -> WithJsonSchema:
    """The JSON Schema of a quantity YAML may give as a plain number or as text with a unit."""
    return WithJsonSchema(
        {
            "anyOf": [{"type": json_type, "minimum": 0}, {"type": "string", "pattern": pattern}],
            "description": description,
        }
    )


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    _number_or_text(
        "number",
        r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)?\s*$",
        "A duration: seconds, or a string like 250ms, 30s, 10m, 24h, 7d.",
    ),
]
"""A duration in seconds; YAML may say 30, "30s", "10m", "24h"."""

ByteSize = Annotated[
    int,
    BeforeValidator(parse_byte_size),
    _number_or_text(
        "integer",
        r"^\s*\d+(\.\d+)?\s*([kKmMgG]i?[bB]?|[bB])?\s*$",
        "A size: bytes as an integer, or a string like 512KiB, 10MiB, 1GB.",
    ),
]
"""A size in bytes; YAML may say 1048576, "512KiB", "10MiB"."""

MAX_WORKERS = 256


def parse_workers(value: Any) -> int | str:
    """A worker count: an integer from 1 to MAX_WORKERS, or "auto"."""
    if value == "auto" or (
        isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_WORKERS
    ):
        return value  # type: ignore[no-any-return]
    raise ValueError(f"{value!r} is not a worker count (use 1 to {MAX_WORKERS}, or auto)")


WorkerCount = Annotated[
    int | str,
    BeforeValidator(parse_workers),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": MAX_WORKERS},
                {"const": "auto"},
            ],
            "description": "A number of processes, or auto (the usable cores).",
        }
    ),
]
"""`server.workers`: an int, or "auto" (resolved at start by `app.cpu_quota.usable_cores`)."""

HostPort = Annotated[
    tuple[str, int],
    BeforeValidator(parse_host_port),
    PlainSerializer(format_host_port, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^(\[[0-9a-fA-F:.]+\]|[^:\[\]]+):[0-9]{1,5}$",
            "description": "host:port, e.g. 127.0.0.1:8088 or [::1]:8088.",
        }
    ),
]
"""A bind or connect address; YAML says "127.0.0.1:8088", Python sees ("127.0.0.1", 8088)."""


def _host_pattern(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a host name (write it as a string)")
    return host_pattern(value)


HostPattern = Annotated[str, BeforeValidator(_host_pattern)]
"""A `hosts:` entry (a name clients may send as Host), held in its one spelling
(`hostnames.host_pattern`)."""
