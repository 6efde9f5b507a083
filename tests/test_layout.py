"""The package layout of docs/architecture.md: folders are the layers, names do not repeat.

The imports between the layers are checked by the import-linter contract in
pyproject.toml (`lint-imports`, run by scripts/test.sh; `exhaustive`, so a new
package must be placed in a layer).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "flm_gateway"
ENTRY_MODULES = {"__init__.py", "__main__.py"}


def module_files() -> list[Path]:
    return [path for path in PACKAGE.rglob("*.py") if "__pycache__" not in path.parts]


def test_no_loose_modules_at_the_top() -> None:
    loose = sorted(path.name for path in PACKAGE.glob("*.py") if path.name not in ENTRY_MODULES)
    assert loose == [], f"modules outside a layer folder: {loose}"


def test_no_module_name_repeats_across_layers() -> None:
    names = Counter(path.stem for path in module_files() if path.name not in ENTRY_MODULES)
    packages = {path.name for path in PACKAGE.iterdir() if (path / "__init__.py").is_file()}
    repeated = sorted(name for name, count in names.items() if count > 1)
    shadowing = sorted(names.keys() & packages)
    assert repeated == [], f"module names used twice: {repeated}"
    assert shadowing == [], f"modules named like a package: {shadowing}"


def test_the_architecture_doc_draws_the_contract_layers_in_order() -> None:
    """docs/architecture.md's drawing and the import contract name the same layers, in order."""
    import re
    import tomllib

    project = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = project["tool"]["importlinter"]["contracts"]
    layers = next(c["layers"] for c in contracts if c["type"] == "layers")
    contract_order = [name.strip() for layer in layers for name in layer.split("|")]
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    drawing = doc.split("## Where code lives", 1)[1].split("```", 2)[1]
    drawn = [
        name
        for line in drawing.splitlines()
        for name in re.findall(r"^ (\w+)/|│ (\w+)/", line)
        for name in name
        if name
    ]
    assert drawn == contract_order
