"""The key-by-key reference of flm.yaml in Markdown, generated from the JSON Schema.

docs/configuration.md embeds it between markers; a test keeps it equal to this
output, so the docs list exactly the keys the loader accepts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from flm_gateway.config.model import GatewayConfig

BEGIN = "<!-- BEGIN GENERATED REFERENCE (flm-gateway schema --markdown) -->"
END = "<!-- END GENERATED REFERENCE -->"


def _resolve(node: Mapping[str, Any], defs: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in node:
        node = defs[node["$ref"].rsplit("/", 1)[-1]]
    return node


def _type_name(node: Mapping[str, Any], defs: Mapping[str, Any]) -> str:
    if "$ref" in node:
        target = _resolve(node, defs)
        if "enum" in target:
            return " \\| ".join(f"`{value}`" for value in target["enum"])
        return "mapping"
    if "anyOf" in node:
        names = [
            _type_name(option, defs) for option in node["anyOf"] if option.get("type") != "null"
        ]
        return " or ".join(dict.fromkeys(names))
    if "enum" in node:
        return " \\| ".join(f"`{value}`" for value in node["enum"])
    if "const" in node:
        return f"`{node['const']}`"
    kind = node.get("type", "any")
    if kind == "array":
        return f"list of {_type_name(node.get('items', {}), defs)}"
    if kind == "object":
        return "mapping"
    return str(kind)


def _objects_of(node: Mapping[str, Any], defs: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The object schemas a field holds: directly, in a list or a mapping, or as options."""
    node = _resolve(node, defs)
    if "properties" in node:
        return [node]
    if node.get("type") == "array":
        return _objects_of(node.get("items", {}), defs)
    if isinstance(node.get("additionalProperties"), dict):
        return _objects_of(node["additionalProperties"], defs)
    found: list[Mapping[str, Any]] = []
    for option in [*node.get("anyOf", []), *node.get("oneOf", [])]:
        found += [o for o in _objects_of(option, defs) if o not in found]
    return found


def _default(name: str, spec: Mapping[str, Any], owner: Mapping[str, Any]) -> str:
    if name in owner.get("required", []):
        return "required"
    if "default" not in spec:
        return "(see description)"
    return f"`{json.dumps(spec['default'])}`"


def _sections(
    node: Mapping[str, Any], path: str, defs: Mapping[str, Any]
) -> Iterator[tuple[str, Mapping[str, Any]]]:
    yield path, node
    fields = list(node.get("properties", {}).items())
    if isinstance(node.get("additionalProperties"), dict):
        fields.append(("NAME", node["additionalProperties"]))
    for name, spec in fields:
        resolved = _resolve(spec, defs)
        suffix = "[]" if resolved.get("type") == "array" else ""
        children = _objects_of(spec, defs)
        for child in children:
            label = f"{name}{suffix}"
            if len(children) > 1:
                label += f" ({child.get('title', 'option')})"
            yield from _sections(child, f"{path}.{label}" if path else label, defs)


def markdown_reference() -> str:
    """Every section of flm.yaml with its keys, types, defaults and descriptions."""
    schema = GatewayConfig.model_json_schema()
    defs = schema.get("$defs", {})
    lines = [BEGIN, ""]
    seen: set[str] = set()
    for path, node in _sections(schema, "", defs):
        if path in seen:
            continue
        seen.add(path)
        lines += [f"### `{path or '(top level)'}`", ""]
        if node.get("description"):
            lines += [node["description"], ""]
        lines += ["| key | type | default | description |", "| --- | --- | --- | --- |"]
        for name, spec in node.get("properties", {}).items():
            description = " ".join(str(spec.get("description", "")).split()).replace("|", "\\|")
            lines.append(
                f"| `{name}` | {_type_name(spec, defs)} | {_default(name, spec, node)} "
                f"| {description} |"
            )
        lines.append("")
    lines.append(END)
    return "\n".join(lines) + "\n"
