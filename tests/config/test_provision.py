"""provision: an engine URL ending in /v1 is corrected, with a warning at its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from flm_gateway.config import load_config
from flm_gateway.config.engine_settings import EngineKind
from flm_gateway.config.loader import read_config
from flm_gateway.engines.directory import EngineAddress

HEAD = 'listeners: [{name: main, bind: "127.0.0.1:8088"}]\nengines:\n'


@pytest.mark.parametrize("kind", list(EngineKind))
@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080"),
        ("http://127.0.0.1:8080/v1/", "http://127.0.0.1:8080"),
        ("https://gpu.example/openai/v1", "https://gpu.example/openai"),
    ],
)
def test_a_v1_suffix_is_removed_with_a_warning(kind: EngineKind, url: str, base: str) -> None:
    line = f"  - {{name: e, kind: {kind.value}, url: {url!r}}}"
    parsed = read_config(HEAD + line + "\n")
    assert parsed.config.engines[0].url == base
    [warning] = parsed.warnings
    column = line.index("url: ") + len("url: ") + 1
    assert warning.render("warning").startswith(f"flm.yaml:3:{column}: warning: engines[0].url: ")
    assert f"{url.rstrip('/')!r} ends in /v1; using {base!r}" in warning.message
    # the engine's OpenAI API is then reached at /v1/..., not /v1/v1/...
    assert not EngineAddress.from_url(parsed.config.engines[0].url).base_path.endswith("/v1")


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080", "http://127.0.0.1:8080/v1beta", "http://h/api/v10"]
)
def test_other_urls_are_left_alone(url: str) -> None:
    parsed = read_config(HEAD + f"  - {{name: e, url: {url!r}}}\n")
    assert (parsed.config.engines[0].url, parsed.warnings) == (url, ())


def test_validate_and_load_config_carry_the_warning(tmp_path: Path) -> None:
    path = tmp_path / "flm.yaml"
    path.write_text(HEAD + '  - {name: e, kind: llamacpp, url: "http://127.0.0.1:8080/v1"}\n')
    loaded = load_config(path)
    assert [w.line for w in loaded.warnings] == [3]
    assert str(loaded.warnings[0]).startswith(f"{path}:3:")
