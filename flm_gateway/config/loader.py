"""Read flm.yaml into a validated `GatewayConfig`, or report every problem with its position.

Passes, each adding to one list of problems so a user sees them all in one run:
1. YAML is composed (not just loaded) so every node keeps its line and column;
   `${VAR}` in scalars is replaced from the environment; an unset variable is a
   problem at the scalar's position. `${VAR:-default}` falls back to `default`.
2. pydantic validates the plain data; each error's location is mapped back to
   the node it came from. The items that failed are set aside (`salvage`) and
   the rest is validated again, so that
3. `semantic.check` runs cross-field rules (unknown engine names, duplicate
   binds, ...) on every part that parsed, even when another part did not.
4. `provision` corrects what has one right meaning (an engine URL ending in
   /v1) and says so: warnings, with their position, on `LoadedConfig.warnings`.
Problems render as `FILE:LINE:COL: path.to.key: message`, sorted by position, once each.
Environment access for the config happens here and nowhere else.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from flm_gateway.config.model import GatewayConfig
from flm_gateway.config.problems import ConfigError, ConfigProblem, Path_, Positions, render_path
from flm_gateway.config.provision import provision
from flm_gateway.config.salvage import MAX_ROUNDS, Salvage, can_set_aside, set_aside, unit_of
from flm_gateway.config.schema_errors import pydantic_problems, without_union_tags
from flm_gateway.config.semantic import check_semantics

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config, where it came from, and what the loader corrected in it."""

    config: GatewayConfig
    path: Path | None
    state_dir: Path
    source: str
    warnings: tuple[ConfigProblem, ...] = ()
    """Accepted but worth saying (`provision`): shown by validate, check and the start log."""

    @property
    def display_name(self) -> str:
        return str(self.path) if self.path else "<built-in default>"


@dataclass(frozen=True)
class ParsedConfig:
    """What `read_config` makes of a text: `LoadedConfig` less where the text came from."""

    config: GatewayConfig
    state_dir: Path
    warnings: tuple[ConfigProblem, ...]


class _Builder:
    """Turns composed YAML nodes into plain Python data, recording positions."""

    def __init__(self, file: str, environ: Mapping[str, str]) -> None:
        self.file = file
        self.environ = environ
        self.positions = Positions()
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
    parsed = read_config(text, file=file, base_dir=base_dir, environ=environ)
    return parsed.config, parsed.state_dir


def read_config(
    text: str,
    *,
    file: str = "flm.yaml",
    base_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> ParsedConfig:
    """Validate YAML text: the config, its state directory and the loader's warnings.

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
    config, salvage = _validate_in_stages(data, builder.positions, file, problems)
    if config is not None:
        problems += _semantic_problems(config, salvage, builder.positions, file)
    if problems or config is None:
        raise ConfigError(problems)
    config, corrections = provision(config)
    warnings = tuple(
        ConfigProblem(*builder.positions.of(path), render_path(path), message, file)
        for path, message in corrections
    )
    state_dir = Path(os.path.expanduser(str(config.server.state_dir)))
    if not state_dir.is_absolute():
        state_dir = (base_dir or Path.cwd()) / state_dir
    return ParsedConfig(config, state_dir, tuple(sorted(warnings)))


def _validate_in_stages(
    data: dict[str, Any], positions: Positions, file: str, problems: list[ConfigProblem]
) -> tuple[GatewayConfig | None, Salvage | None]:
    """The config; else, with the schema errors added to `problems`, what validates
    once the broken units are set aside (None when nothing useful does)."""
    try:
        return GatewayConfig.model_validate(data), None
    except ValidationError as exc:
        problems += pydantic_problems(exc, positions, file, data)
        removed = frozenset(_units(exc, data, None))
    for _ in range(MAX_ROUNDS):
        if not can_set_aside(removed):
            break
        salvage = set_aside(data, removed)
        try:
            return GatewayConfig.model_validate(salvage.data), salvage
        except ValidationError as exc:
            more = _units(exc, salvage.data, salvage)
            if more <= removed:
                break
            removed |= more
    return None, None


def _units(error: ValidationError, data: Any, salvage: Salvage | None) -> frozenset[Path_]:
    """The units (in the file's coordinates) holding each error of `error`."""
    units = set()
    for item in error.errors(include_url=False):
        path = without_union_tags(tuple(item["loc"]), data)
        units.add(unit_of(salvage.original(path) if salvage else path))
    return frozenset(units)


def _semantic_problems(
    config: GatewayConfig, salvage: Salvage | None, positions: Positions, file: str
) -> list[ConfigProblem]:
    """Cross-field problems, in the file's coordinates, less those already reported."""

    def original(path: Path_) -> Path_:
        return salvage.original(path) if salvage else path

    def locate(path: Path_) -> str:
        return "{}:{}:{}".format(file, *positions.of(original(path)))

    problems = []
    for path, message in check_semantics(config, locate):
        path = original(path)
        if salvage is not None:
            if salvage.hides(path):
                continue
            message = salvage.original_message(message)
        line, column = positions.of(path)
        problems.append(ConfigProblem(line, column, render_path(path), message, file))
    return problems


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
    parsed = read_config(text, file=str(path), base_dir=path.resolve().parent, environ=environ)
    return LoadedConfig(
        config=parsed.config,
        path=path,
        state_dir=parsed.state_dir,
        source=text,
        warnings=parsed.warnings,
    )


def _line_column(loaded: LoadedConfig, path: Path_) -> tuple[int, int]:
    try:
        root = yaml.compose(loaded.source, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return (1, 1)
    if root is None:
        return (1, 1)
    builder = _Builder(loaded.display_name, {})
    builder.build(root)
    return builder.positions.of(path)


def position_of(loaded: LoadedConfig, path: Path_) -> str:
    """`FILE:LINE:COL` of the node at `path` (or its deepest present parent) in the source
    `loaded` was read from: for problems found after validation (a reload refused, a
    listener that cannot bind)."""
    return "{}:{}:{}".format(loaded.display_name, *_line_column(loaded, path))


def problem_at(loaded: LoadedConfig, path: Path_, message: str) -> ConfigProblem:
    """A problem found after validation (an addon refusing in `prepare`) at the node `path`
    of `loaded`, printed like the loader's own: `FILE:LINE:COL: listeners[0].tls: ...`."""
    line, column = _line_column(loaded, path)
    return ConfigProblem(line, column, render_path(path), message, loaded.display_name)
