"""What a route changes in a request body: model name, profile defaults, system prompt.

Pure functions on the parsed JSON body (a dict) and on the parts of an upload, so
the routing, request-limit and fallback addons share them and unit tests need no
flows. Route defaults fill only the fields the client left out; the token fields
(`max_tokens`, `max_completion_tokens`, `n_predict`) are one setting, so a default
for any of them applies only when the client sent none (otherwise a default
`max_completion_tokens` would override the client's `max_tokens` on vLLM). The
defaults are the route's typed fields and its `extra` ones alike
(`RouteDefaults.fields`; `logprobs` and `top_logprobs` only on chat requests).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from flm_gateway.bodies.multipart import Part, write_form
from flm_gateway.bodies.schema import TOKEN_FIELDS
from flm_gateway.config.route_settings import RouteConfig


def with_defaults(body: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `body` with the route `defaults` it leaves out."""
    new = dict(body)
    client_tokens = any(field in body for field in TOKEN_FIELDS)
    for key, value in defaults.items():
        if key not in new and not (client_tokens and key in TOKEN_FIELDS):
            new[key] = copy.deepcopy(value)
    return new


def rewrite_json(
    body: dict[str, Any], route: RouteConfig | None, upstream_model: str, kind: str
) -> dict[str, Any] | None:
    """The body to send upstream, or None when it is unchanged (send the client's bytes)."""
    new = with_defaults(body, route.defaults.fields(kind)) if route is not None else dict(body)
    new["model"] = upstream_model
    if (
        route is not None
        and route.system_prompt is not None
        and kind == "chat"
        and isinstance(new.get("messages"), list)
    ):
        new["messages"] = [{"role": "system", "content": route.system_prompt}, *new["messages"]]
    return None if new == body else new


def rewrite_form(parts: Iterable[Part], upstream_model: str) -> tuple[str, bytes]:
    """`(content type, body)` of the upload `parts` with `model` set to `upstream_model`."""
    return write_form(
        dataclasses.replace(part, data=upstream_model.encode())
        if part.name == "model" and part.filename is None
        else part
        for part in parts
    )
