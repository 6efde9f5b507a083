"""flow_meta: every metadata key named once, documented truly, never spelt as a bare string.

The scans read the package's source with `ast`: what they look for is the key objects of
`flm_gateway.proxy.flow_meta` and `flm.*` strings used on a `.metadata` dict.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest
from mitmproxy.test import tflow

from flm_gateway.proxy import flow_meta
from flm_gateway.proxy.flow_meta import MetaKey

PACKAGE = Path(__file__).parents[1] / "flm_gateway"
META_MODULE = PACKAGE / "proxy" / "flow_meta.py"
KEYS: dict[str, MetaKey[object]] = {
    name: value for name, value in vars(flow_meta).items() if isinstance(value, MetaKey)
}
KEY_NAME = re.compile(r"flm\.[a-z_]+(\.[a-z_]+)*")
WRITES = {"set", "setdefault", "pop"}
READS = {"get", "require", "is_set", "pop"}
DICT_METHODS = {"get", "pop", "setdefault"}


def _sources() -> list[tuple[str, ast.Module]]:
    return [
        (path.stem, ast.parse(path.read_text(), str(path)))
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != META_MODULE
    ]


def _is_metadata(node: ast.expr) -> bool:
    """`x.metadata` or a local `metadata` alias."""
    return (isinstance(node, ast.Attribute) and node.attr == "metadata") or (
        isinstance(node, ast.Name) and node.id == "metadata"
    )


def _flm_text(node: ast.expr) -> str | None:
    """The `flm.*` text a key expression spells: a literal, or an f-string's literal head."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        text = node.value
    elif isinstance(node, ast.JoinedStr) and node.values:
        head = node.values[0]
        text = head.value if isinstance(head, ast.Constant) else ""
    else:
        return None
    return text if text.startswith("flm.") else None


def bare_keys(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, text) of each `flm.*` metadata key spelt as a string: used on a `.metadata`
    dict (subscript, get/pop/setdefault, `in`), or equal to a key flow_meta defines."""
    defined = {key.name for key in KEYS.values()}
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        spelt: list[ast.expr] = []
        if isinstance(node, ast.Subscript) and _is_metadata(node.value):
            spelt.append(node.slice)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in DICT_METHODS
            and _is_metadata(node.func.value)
            and node.args
        ):
            spelt.append(node.args[0])
        elif isinstance(node, ast.Compare) and any(
            isinstance(op, ast.In | ast.NotIn) for op in node.ops
        ):
            if any(_is_metadata(right) for right in node.comparators):
                spelt.append(node.left)
        elif isinstance(node, ast.Constant) and node.value in defined:
            found.append((node.lineno, node.value))
        for expr in spelt:
            text = _flm_text(expr)
            if text is not None:
                found.append((expr.lineno, text))
    return sorted(set(found))


def key_uses(tree: ast.Module) -> dict[str, set[str]]:
    """{key constant: {"write", "read", "other"}} of how a module uses flow_meta's keys."""
    local: dict[str, str] = {}  # name in this module -> key constant
    modules: set[str] = set()  # names bound to the flow_meta module
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "flm_gateway.proxy.flow_meta":
            for alias in node.names:
                if alias.name in KEYS:
                    local[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module == "flm_gateway.proxy":
            modules.update(a.asname or a.name for a in node.names if a.name == "flow_meta")

    def key_of(node: ast.expr) -> str | None:
        if isinstance(node, ast.Name):
            return local.get(node.id)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            return node.attr if node.value.id in modules and node.attr in KEYS else None
        return None

    uses: dict[str, set[str]] = defaultdict(set)
    called: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            key = key_of(node.func.value)
            if key is not None:
                called.add(id(node.func.value))
                method = node.func.attr
                if method in WRITES:
                    uses[key].add("write")
                if method in READS:
                    uses[key].add("read")
                if method not in WRITES | READS:
                    uses[key].add("other")
    for node in ast.walk(tree):
        if isinstance(node, ast.Name | ast.Attribute) and id(node) not in called:
            key = key_of(node)
            if key is not None:
                uses[key].add("other")
    return uses


def test_no_bare_metadata_key_outside_flow_meta() -> None:
    found = [
        f"flm_gateway/**/{module}.py:{line}: {text!r}"
        for module, tree in _sources()
        for line, text in bare_keys(tree)
    ]
    assert not found, "use the key in flm_gateway.proxy.flow_meta:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "source",
    [
        'flow.metadata["flm.new.key"] = 1',
        'x = flow.metadata.get("flm.route.engine")',
        'self.flow.metadata.pop("flm.x", None)',
        'metadata.setdefault("flm.x", [])',
        'if "flm.x" not in flow.metadata: pass',
        'flow.metadata[f"flm.ratelimit.tokens.{subject}"] = []',
        'ENGINE_KEY = "flm.route.engine"',
    ],
)
def test_the_scan_finds_a_bare_key(source: str) -> None:
    assert bare_keys(ast.parse(source))


@pytest.mark.parametrize(
    "source",
    [
        'path = Path("flm.yaml")',
        '"""Reads `flow.metadata["flm.api.kind"]` (a docstring)."""',
        'headers["flm.x"] = 1',
        'config.get("flm.yaml")',
        "API_KIND.get(flow)",
    ],
)
def test_the_scan_ignores_what_is_not_a_metadata_key(source: str) -> None:
    assert not bare_keys(ast.parse(source))


def test_keys_are_unique_and_named_after_their_text() -> None:
    names = [key.name for key in KEYS.values()]
    assert len(names) == len(set(names))
    for constant, key in KEYS.items():
        assert KEY_NAME.fullmatch(key.name), key.name
        assert constant == key.name.removeprefix("flm.").upper().replace(".", "_")


def test_every_key_is_documented() -> None:
    modules = {path.stem for path in PACKAGE.rglob("*.py")}
    for constant, key in KEYS.items():
        assert key.about.strip(), constant
        assert key.writers, f"{constant}: who writes it?"
        # a key no module reads says who does (tests, flow dumps) in `about`
        assert key.readers or "no module reads it" in key.about, f"{constant}: who reads it?"
        assert set(key.writers) | set(key.readers) <= modules, constant


def test_documented_writers_and_readers_are_the_real_ones() -> None:
    """`writers` are the modules that set, setdefault or pop the key; `readers` those that
    get, require, test or pop it; a module that only passes the key on is in one of them."""
    writes: dict[str, set[str]] = defaultdict(set)
    reads: dict[str, set[str]] = defaultdict(set)
    passes: dict[str, set[str]] = defaultdict(set)
    for module, tree in _sources():
        for key, how in key_uses(tree).items():
            for kind, into in (("write", writes), ("read", reads), ("other", passes)):
                if kind in how:
                    into[key].add(module)
    wrong = []
    for constant, key in KEYS.items():
        documented = set(key.writers) | set(key.readers)
        if not writes[constant] <= set(key.writers) <= writes[constant] | passes[constant]:
            wrong.append(f"{constant}.writers: code {sorted(writes[constant])}")
        if not reads[constant] <= set(key.readers) <= reads[constant] | passes[constant]:
            wrong.append(f"{constant}.readers: code {sorted(reads[constant])}")
        if not passes[constant] <= documented:
            wrong.append(f"{constant}: {sorted(passes[constant] - documented)} use it")
    assert not wrong, "\n".join(wrong)


def test_types_of_higher_layers_are_imported_for_mypy_only() -> None:
    """flow_meta sits in proxy/ (the layers contract lets it import routing, security and
    observability, see pyproject.toml): it may name their types, never run their code."""
    tree = ast.parse(META_MODULE.read_text())
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("flm_gateway"):
            pytest.fail(f"line {node.lineno}: import {node.module} under TYPE_CHECKING")


def test_a_key_reads_and_writes_the_flow_metadata() -> None:
    flow = tflow.tflow()
    key = flow_meta.ROUTE_ENGINE
    assert key.get(flow) is None and key.get(flow, "dflt") == "dflt" and not key.is_set(flow)
    with pytest.raises(KeyError):
        key.require(flow)
    key.set(flow, "alpha")
    assert flow.metadata["flm.route.engine"] == "alpha"
    assert key.get(flow) == key.require(flow) == key.setdefault(flow, "beta") == "alpha"
    assert key.is_set(flow) and key.pop(flow) == "alpha" and not key.is_set(flow)
    assert key.pop(flow) is None and key.pop(flow, "gone") == "gone"
