from __future__ import annotations

from flm_gateway.bodies.multipart import Part, read_form
from flm_gateway.config.route_settings import RouteConfig
from flm_gateway.routing.rewrite import rewrite_form, rewrite_json, with_defaults


def test_unchanged_body_is_not_reserialised() -> None:
    assert rewrite_json({"model": "m", "messages": []}, None, "m", "chat") is None


def test_defaults_do_not_override_and_prompt_is_chat_only() -> None:
    route = RouteConfig(
        model="x", engine="e", defaults={"temperature": 0.2, "max_tokens": 5}, system_prompt="S"
    )
    chat = rewrite_json({"model": "x", "messages": [], "temperature": 1}, route, "up", "chat")
    assert chat == {
        "model": "up",
        "messages": [{"role": "system", "content": "S"}],
        "temperature": 1,
        "max_tokens": 5,
    }
    embeddings = rewrite_json({"model": "x", "input": "a"}, route, "up", "embeddings")
    assert embeddings is not None and "messages" not in embeddings


def test_extra_defaults_are_sent_like_typed_ones_and_unset_ones_not_at_all() -> None:
    route = RouteConfig(
        model="x",
        engine="e",
        defaults={"top_p": 0.9, "logprobs": True, "extra": {"top_k": 40, "min_p": 0.05}},
    )
    chat = rewrite_json({"model": "x", "messages": [], "top_k": 5}, route, "up", "chat")
    assert chat == {
        "model": "up",
        "messages": [],
        "top_k": 5,
        "top_p": 0.9,
        "logprobs": True,
        "min_p": 0.05,
    }
    # On /v1/completions logprobs is a count: the chat-only default stays on chat.
    completion = rewrite_json({"model": "x", "prompt": "a"}, route, "up", "completions")
    assert completion == {"model": "up", "prompt": "a", "top_p": 0.9, "top_k": 40, "min_p": 0.05}
    bare = RouteConfig(model="x", engine="e")
    assert rewrite_json({"model": "x", "messages": []}, bare, "x", "chat") is None


def test_token_fields_are_one_setting_for_defaults() -> None:
    defaults = {"max_completion_tokens": 900, "n_predict": 900, "temperature": 0.1}
    # The client's max_tokens stands: no default for another token field is added (vLLM
    # would read max_completion_tokens first, llama.cpp n_predict).
    assert with_defaults({"max_tokens": 10}, defaults) == {"max_tokens": 10, "temperature": 0.1}
    assert with_defaults({}, defaults) == defaults


def test_upload_model_replaced_file_untouched_fresh_boundary() -> None:
    payload = bytes(range(256)) * 4
    parts = [
        Part("file", payload, "a.wav", "audio/wav"),
        Part("model", b"whisper"),
        Part("timestamp_granularities[]", b"word"),
    ]
    content_type, body = rewrite_form(parts, "large-v3")
    assert read_form(content_type, body) == [
        Part("file", payload, "a.wav", "audio/wav"),
        Part("model", b"large-v3"),
        Part("timestamp_granularities[]", b"word"),
    ]
    assert rewrite_form(parts, "large-v3")[0] != content_type  # a fresh boundary each time
