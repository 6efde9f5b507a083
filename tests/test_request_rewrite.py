from __future__ import annotations

from flm_gateway.config.routes import RouteConfig
from flm_gateway.request_rewrite import replace_multipart_field, rewrite_json


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


def test_multipart_model_field_replaced_file_untouched() -> None:
    payload = bytes(range(256)) * 4
    body = (
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        + payload
        + b'\r\n--B\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper\r\n--B--\r\n'
    )
    out = replace_multipart_field(body, "multipart/form-data; boundary=B", "model", "large-v3")
    assert b"large-v3" in out and b"whisper" not in out
    assert payload in out
