"""What a route changes in a request body: model name, profile defaults, system prompt.

Pure functions on the parsed JSON body (a dict) and on multipart bodies, so the
routing and fallback addons share them and unit tests need no flows.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from flm_gateway.config.routes import RouteConfig


def rewrite_json(
    body: dict[str, Any], route: RouteConfig | None, upstream_model: str, kind: str
) -> dict[str, Any] | None:
    """The body to send upstream, or None when it is unchanged (send the client's bytes)."""
    changed = body.get("model") != upstream_model
    needs_profile = route is not None and (
        any(key not in body for key in route.defaults)
        or (route.system_prompt is not None and kind == "chat")
    )
    if not changed and not needs_profile:
        return None
    new = dict(body)
    new["model"] = upstream_model
    if route is not None:
        for key, value in route.defaults.items():
            new.setdefault(key, copy.deepcopy(value))
        if (
            route.system_prompt is not None
            and kind == "chat"
            and isinstance(new.get("messages"), list)
        ):
            new["messages"] = [{"role": "system", "content": route.system_prompt}, *new["messages"]]
    return new


def replace_multipart_field(body: bytes, content_type: str, name: str, value: str) -> bytes:
    """`body` with the text value of form field `name` replaced; file parts stay byte-identical."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise ValueError("multipart body without a boundary")
    delimiter = b"--" + match.group(1).encode()
    parts = body.split(delimiter)
    header_re = re.compile(rb'name="' + re.escape(name.encode()) + rb'"(?!\S*filename)', re.I)
    for index, part in enumerate(parts):
        head, sep, _ = part.partition(b"\r\n\r\n")
        if sep and header_re.search(head) and b"filename=" not in head.lower():
            parts[index] = head + sep + value.encode() + b"\r\n"
            break
    return delimiter.join(parts)
