"""Read flm.yaml into a validated `GatewayConfig`, or report every problem with its position.

Three passes, each adding to one list of problems so a user sees them all at once:
1. YAML is composed (not just loaded) so every node keeps its line and column;
   `${VAR}` in scalars is replaced from the environment; an unset variable is a
   problem at the scalar's position. `${VAR:-default}` falls back to `default`.
2. pydantic validates the plain data; each error's location is mapped back to
   the node it came from.
3. `semantic.check` runs cross-field rules (unknown engine names, duplicate
   binds, ...) on the validated model.
Errors render as `FILE:LINE:COL: path.to.key: message`, sorted by position.
Environment access for the config happens here and nowhere else.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from flm_gateway.config.model import GatewayConfig
from flm_gateway.config.semantic import check_semantics

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

Path_ = tuple[str | int, ...]


@dataclass(frozen=True, order=True)
class ConfigProblem:
    """One error in a config file, with the position of the offending node."""

    line: int
    column: int
    path: str
    message: str
    file: str = field(compare=False, default="flm.yaml")

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """The config file is invalid; `problems` lists every error found."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config and where it came from."""

    config: GatewayConfig
    path: Path | None
    state_dir: Path
    source: str

    @property
    def display_name(self) -> str:
        return str(self.path) if self.path else "<built-in default>"


def render_path(path: Path_) -> str:
    """("listeners", 0, "bind") -> "listeners[0].bind"."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


class _Positions:
    """Maps a path inside the document to the (line, column) of its node, 1-based."""

    def __init__(self) -> None:
        self._value: dict[Path_, tuple[int, int]] = {}
        self._key: dict[Path_, tuple[int, int]] = {}

    def record(self, path: Path_, node: yaml.Node, key_node: yaml.Node | None = None) -> None:
        self._value[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if key_node is not None:
            self._key[path] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)

    def of(self, path: Path_, *, key: bool = False) -> tuple[int, int]:
        """Position of the deepest recorded node on `path`."""
        table = self._key if key else self._value
        for end in range(len(path), -1, -1):
            prefix = path[:end]
            if prefix in table:
                return table[prefix]
            if prefix in self._value:
                return self._value[prefix]
        return (1, 1)


class _Builder:
    """Turns composed YAML nodes into plain Python data, recording positions."""

    def __init__(self, file: str, environ: Mapping[str, str]) -> None:
        self.file = file
        self.environ = environ
        self.positions = _Positions()
        self.problems: list[ConfigProblem] = []
        self._constructor = yaml.SafeLoader("")

    def build(self, node: yaml.Node, path: Path_ = ()) -> Any:
        if isinstance(node, yaml.MappingNode):
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self._constructor.construct_object(key_node, deep=True)
                child = (*path, key)
                if key in result:
                    self._problem(key_node, child, f"duplicate key {key!r}")
                self.positions.record(child, value_node, key_node)
                result[key] = self.build(value_node, child)
            return result
        if isinstance(node, yaml.SequenceNode):
            items = []
            for index, item in enumerate(node.value):
                self.positions.record((*path, index), item)
                items.append(self.build(item, (*path, index)))
            return items
        value = self._constructor.construct_object(node, deep=True)
        if isinstance(value, str) and "${" in value:
            return self._expand(value, node, path)
        return value

    def _expand(self, value: str, node: yaml.Node, path: Path_) -> str:
        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name not in self.environ and default is not None:
                return default
            if name not in self.environ:
                self._problem(node, path, f"environment variable ${{{name}}} is not set")
                return ""
            return self.environ[name]

        return _ENV_RE.sub(substitute, value)

    def _problem(self, node: yaml.Node, path: Path_, message: str) -> None:
        line, column = node.start_mark.line + 1, node.start_mark.column + 1
        self.problems.append(ConfigProblem(line, column, render_path(path), message, self.file))


def _without_union_tags(loc: tuple[Any, ...], data: Any) -> Path_:
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


def _pydantic_problems(
    error: ValidationError, positions: _Positions, file: str, data: Any = None
) -> list[ConfigProblem]:
    problems = []
    for item in error.errors(include_url=False):
        path = _without_union_tags(tuple(item["loc"]), data)
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


def parse_config(
    text: str,
    *,
    file: str = "flm.yaml",
    base_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[GatewayConfig, Path]:
    """Validate YAML text; returns the config and its resolved state directory.

    Raises ConfigError listing every problem found.
    """
    env = os.environ if environ is None else environ
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise ConfigError(
            [ConfigProblem(line, column, "", f"YAML syntax error: {exc.problem}", file)]
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigProblem(1, 1, "", f"YAML error: {exc}", file)]) from None
    if root is None:
        raise ConfigError([ConfigProblem(1, 1, "", "the file is empty", file)])
    builder = _Builder(file, env)
    try:
        data = builder.build(root)
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigProblem(1, 1, "", f"YAML error: {exc}", file)]) from None
    if not isinstance(data, dict):
        raise ConfigError(
            [ConfigProblem(1, 1, "", "the top level must be a mapping (key: value)", file)]
        )
    problems = list(builder.problems)
    try:
        config = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        problems += _pydantic_problems(exc, builder.positions, file, data)
        raise ConfigError(problems) from None

    def locate(path: Path_) -> str:
        return "{}:{}:{}".format(file, *builder.positions.of(path))

    for path, message in check_semantics(config, locate):
        line, column = builder.positions.of(path)
        problems.append(ConfigProblem(line, column, render_path(path), message, file))
    if problems:
        raise ConfigError(problems)
    state_dir = Path(os.path.expanduser(str(config.server.state_dir)))
    if not state_dir.is_absolute():
        state_dir = (base_dir or Path.cwd()) / state_dir
    return config, state_dir


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> LoadedConfig:
    """Read and validate a config file. Raises ConfigError (with file:line) on any problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            [ConfigProblem(1, 1, "", f"cannot read the file: {exc.strerror}", str(path))]
        ) from None
    except UnicodeDecodeError:
        raise ConfigError([ConfigProblem(1, 1, "", "the file is not UTF-8", str(path))]) from None
    config, state_dir = parse_config(
        text, file=str(path), base_dir=path.resolve().parent, environ=environ
    )
    return LoadedConfig(config=config, path=path, state_dir=state_dir, source=text)


def position_of(loaded: LoadedConfig, path: Path_) -> str:
    """`FILE:LINE:COL` of the node at `path` (or its deepest present parent) in the source
    `loaded` was read from: for problems found after validation (a reload refused, a
    listener that cannot bind)."""
    where = f"{loaded.display_name}:{{}}:{{}}"
    try:
        root = yaml.compose(loaded.source, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return where.format(1, 1)
    if root is None:
        return where.format(1, 1)
    builder = _Builder(loaded.display_name, {})
    builder.build(root)
    return where.format(*builder.positions.of(path))
