"""bodies.schema: field types per endpoint, spelling, nulls, route defaults."""

from __future__ import annotations

from typing import Any

import pytest

from flm_gateway.bodies import BodyError
from flm_gateway.bodies.multipart import Part
from flm_gateway.bodies.schema import check_defaults, check_form, check_json


@pytest.mark.parametrize(
    ("kind", "body", "code", "param"),
    [
        ("chat", {"messages": "hi"}, "invalid_type", "messages"),
        (
            "chat",
            {"messages": [{"role": "user", "content": 1}]},
            "invalid_type",
            "messages[0].content",
        ),
        ("chat", {"messages": [{}]}, "missing_field", "messages[0].role"),
        ("chat", {"stream": "yes"}, "invalid_type", "stream"),
        ("chat", {"max_tokens": True}, "invalid_type", "max_tokens"),
        ("chat", {"max_tokens": -1}, "invalid_value", "max_tokens"),
        (
            "chat",
            {"max_tokens": 2, "max_completion_tokens": 3},
            "invalid_value",
            "max_completion_tokens",
        ),
        ("chat", {"Stream": True}, "ambiguous_key", "Stream"),
        (
            "chat",
            {"stream_options": {"INCLUDE_USAGE": True}},
            "ambiguous_key",
            "stream_options.INCLUDE_USAGE",
        ),
        ("completions", {"best_of": 0}, "invalid_value", "best_of"),
        ("embeddings", {"input": [0.5]}, "invalid_type", "input"),
    ],
)
def test_refused(kind: str, body: dict[str, Any], code: str, param: str) -> None:
    with pytest.raises(BodyError) as refused:
        check_json(kind, {"model": "m", **body})
    assert (refused.value.code, refused.value.param) == (code, param)


def test_nulls_of_known_fields_are_removed_others_kept() -> None:
    body = {"model": "m", "max_tokens": None, "n": None, "extension": None}
    assert check_json("chat", body) is True
    assert body == {"model": "m", "extension": None}
    assert check_json("chat", body) is False


def test_embeddings_know_no_max_tokens() -> None:
    assert check_json("embeddings", {"model": "m", "input": "x", "max_tokens": "any"}) is False


def test_form_fields() -> None:
    parts = [
        Part("file", b"RIFF", "a.wav"),
        Part("model", b"w"),
        Part("x[]", b"1"),
        Part("x[]", b"2"),
    ]
    assert check_form(parts) == {"model": "w", "x[]": ["1", "2"]}
    with pytest.raises(BodyError) as refused:
        check_form([Part("model", b"w"), Part("temperature", b"inf")])
    assert refused.value.param == "temperature"


@pytest.mark.parametrize(
    ("defaults", "param"),
    [
        ({"max_tokens": -1}, "max_tokens"),
        ({"Max_Tokens": 5}, "Max_Tokens"),
        ({"stream": "yes"}, "stream"),
        ({"n": 500}, "n"),
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": 5, "n_predict": 9}, "n_predict"),
    ],
)
def test_route_defaults_are_checked_like_client_fields(
    defaults: dict[str, Any], param: str
) -> None:
    with pytest.raises(BodyError) as refused:
        check_defaults("chat", defaults)
    assert refused.value.param == param
    for kind in ("chat", "completions", "embeddings"):
        check_defaults(kind, {"max_tokens": 5, "temperature": 0.2, "top_k": 40})
