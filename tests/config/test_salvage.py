"""Validation in stages: one run reports the schema errors and the cross-field errors
of every part that parsed (golden: golden/staged_errors.yaml)."""

from __future__ import annotations

import pytest

from flm_gateway.config import ConfigError, parse_config
from flm_gateway.config.salvage import set_aside, unit_of

HEAD = """\
listeners:
  - {name: main, bind: "127.0.0.1:8088", auth: api-key}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ={})
    return [str(problem) for problem in caught.value.problems]


def test_a_schema_error_no_longer_hides_an_unknown_engine_or_a_bad_key_hash() -> None:
    found = problems(
        HEAD
        + """\
engines:
  - {name: alpha, url: "http://127.0.0.1:18001"}
routes:
  - {model: a, engine: alpha, fallbak: [alpha]}
  - {model: b, engine: gamma}
security:
  keys:
    - {id: ci, hash: "sha256:abc"}
"""
    )
    assert [line.split(": ", 2)[:2] for line in found] == [
        ["flm.yaml:6:31", "routes[0].fallbak"],
        ["flm.yaml:7:24", "routes[1].engine"],
        ["flm.yaml:10:22", "security.keys[0].hash"],
    ]
    assert "unknown engine 'gamma'" in found[1]
    assert "'sha256:abc'" in found[2]


def test_a_reference_to_a_broken_item_is_reported_once_at_the_item() -> None:
    found = problems(
        HEAD
        + """\
engines:
  - {name: beta, url: "ftp://127.0.0.1:1"}
routes:
  - {model: a, engine: beta, fallback: [beta, {engine: beta}]}
security:
  resources: {engines: {beta: {max_concurrent: 2}}}
"""
    )
    assert found == [
        "flm.yaml:4:23: engines[0].url: 'ftp://127.0.0.1:1' is not an http:// or https:// URL"
    ]


def test_a_broken_egress_profile_hides_only_its_references() -> None:
    found = problems(
        HEAD
        + """\
egress:
  bastion: {mode: socks5, url: "http://not-socks"}
engines:
  - {name: a, url: "http://10.0.0.1:1", egress: bastion}
  - {name: b, url: "http://10.0.0.2:1", egress: nowhere}
"""
    )
    assert len(found) == 2
    assert found[0].startswith("flm.yaml:4:") and "egress.bastion" in found[0]
    assert found[1].startswith("flm.yaml:7:") and "unknown egress profile 'nowhere'" in found[1]


def test_cross_field_messages_use_the_files_own_indices() -> None:
    found = problems(
        """\
listeners:
  - {name: broken, bind: "127.0.0.1:8087", colour: red}
  - {name: main, bind: "127.0.0.1:8088"}
  - {name: main, bind: "127.0.0.1:8089"}
"""
    )
    assert found[1] == (
        "flm.yaml:4:12: listeners[2].name: 'main' is already the name of listeners[1]"
    )


def test_without_usable_listeners_only_the_schema_errors_are_reported() -> None:
    found = problems(
        """\
listeners:
  - {name: main, bind: "localhost"}
engines:
  - {name: a, url: "http://127.0.0.1:1"}
routes:
  - {model: x, engine: nowhere}
"""
    )
    assert len(found) == 1 and "listeners[0].bind" in found[0]


def test_a_wrong_key_in_a_section_hides_nothing_true_next_to_it() -> None:
    found = problems(
        HEAD
        + """\
admin: {bind: "127.0.0.1:8088", allow_remote: maybe}
routes:
  - {model: x, engine: nowhere}
"""
    )
    assert [line.split(": ", 2)[1] for line in found] == [
        "admin.bind",  # collides with main, whatever allow_remote says
        "admin.allow_remote",
        "routes[0].engine",
    ]


def test_units_and_the_index_map() -> None:
    assert unit_of(("routes", 3, "engine", 1)) == ("routes", 3)
    assert unit_of(("security", "keys", 0, "hash")) == ("security", "keys", 0)
    assert unit_of(("security", "cors", "allow_origins", 0)) == ("security", "cors")
    assert unit_of(("version",)) == ("version",)
    data = {"listeners": [{"name": "a"}, {"name": "b"}, {"name": "c"}], "admin": {"x": 1}}
    kept = set_aside(data, frozenset({("listeners", 1), ("admin",)}))
    assert kept.data == {"listeners": [{"name": "a"}, {"name": "c"}]}
    assert kept.original(("listeners", 1, "bind")) == ("listeners", 2, "bind")
    assert kept.original_message("clashes with listeners[1]") == "clashes with listeners[2]"
    assert kept.names() == {"b"}
    assert data["listeners"][1] == {"name": "b"}  # the input is not changed
