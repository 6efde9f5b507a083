"""pydantic's validation errors as `ConfigProblem`s: the node's position, the bad value,
the valid keys or choices."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from flm_gateway.config.model import GatewayConfig
from flm_gateway.config.problems import ConfigProblem, Path_, Positions, render_path


def without_union_tags(loc: tuple[Any, ...], data: Any) -> Path_:
    """The document path of a pydantic error location.

    A discriminated union adds its tag to the location (`egress.bastion.socks5.url`
    for `{mode: socks5}`); such a part names no key of the input, so it is dropped.
    """
    path: list[str | int] = []
    node = data
    for part in loc:
        if not isinstance(part, str | int):
            continue
        if isinstance(node, dict) and part not in node and part in node.values():
            continue
        path.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
    return tuple(path)


def pydantic_problems(
    error: ValidationError, positions: Positions, file: str, data: Any = None
) -> list[ConfigProblem]:
    problems = []
    for item in error.errors(include_url=False):
        path = without_union_tags(tuple(item["loc"]), data)
        kind = item["type"]
        if kind == "extra_forbidden":
            line, column = positions.of(path, key=True)
            message = f"unknown key {path[-1]!r}" + _valid_keys_hint(path, data)
        elif kind == "union_tag_invalid":
            key = str(item.get("ctx", {}).get("discriminator", "")).strip("'")
            path = (*path, key) if key else path
            line, column = positions.of(path)
            tags = item.get("ctx", {}).get("expected_tags", "")
            message = f"{item.get('ctx', {}).get('tag')!r} is not valid; expected one of {tags}"
        else:
            line, column = positions.of(path)
            message = _describe(item, path)
        problems.append(ConfigProblem(line, column, render_path(path), message, file))
    return problems


def _describe(item: Mapping[str, Any], path: Path_) -> str:
    message = str(item["msg"])
    if message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    kind = item["type"]
    if kind == "missing":
        return "required key is missing"
    if kind in ("enum", "literal_error"):
        return f"{item.get('input')!r} is not valid; {message[0].lower()}{message[1:]}"
    if kind != "value_error" and "input" in item and not isinstance(item["input"], dict | list):
        return f"{item['input']!r}: {message[0].lower()}{message[1:]}"
    return message


def _valid_keys_hint(path: Path_, data: Any = None) -> str:
    """'; valid keys: a, b' for the model that owns `path[:-1]`, found via the JSON schema."""
    schema = GatewayConfig.model_json_schema()
    node: Mapping[str, Any] = schema
    defs = schema.get("$defs", {})
    value = data

    def resolve(n: Mapping[str, Any]) -> Mapping[str, Any]:
        while True:
            if "oneOf" in n and "discriminator" in n and isinstance(value, dict):
                # A discriminated union: the input's tag picks the branch.
                mapping = n["discriminator"].get("mapping", {})
                ref = mapping.get(value.get(n["discriminator"].get("propertyName")))
                if ref is None:
                    return n
                n = {"$ref": ref}
            elif "$ref" in n:
                n = defs[n["$ref"].rsplit("/", 1)[-1]]
            elif "anyOf" in n:
                objects = [resolve(x) for x in n["anyOf"]]
                n = next((o for o in objects if "properties" in o or "items" in o), objects[0])
            elif "allOf" in n and len(n["allOf"]) == 1:
                n = n["allOf"][0]
            else:
                return n

    for part in path[:-1]:
        node = resolve(node)
        value = _child(value, part)
        if isinstance(part, int):
            node = node.get("items", {})
        elif "properties" in node and part in node["properties"]:
            node = node["properties"][part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return ""
    node = resolve(node)
    keys = sorted(node.get("properties", {}))
    return f"; valid keys: {', '.join(keys)}" if keys else ""


def _child(value: Any, part: str | int) -> Any:
    """value[part] for a dict key or list index that exists, else None."""
    if isinstance(value, dict):
        return value.get(part)
    if isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value):
        return value[part]
    return None
