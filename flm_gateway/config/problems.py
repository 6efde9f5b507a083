"""Problems in flm.yaml and where they are: the types every config module reports with."""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

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
        return self.render()

    def render(self, severity: str = "") -> str:
        """`file:line:col: [severity: ]path: message`, the way compilers print them."""
        where = f"{self.file}:{self.line}:{self.column}" + (f": {severity}" if severity else "")
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """The config file is invalid; `problems` lists every error found."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = sorted(set(problems))
        super().__init__("\n".join(str(p) for p in self.problems))


def render_path(path: Path_) -> str:
    """("listeners", 0, "bind") -> "listeners[0].bind"."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


class Positions:
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
