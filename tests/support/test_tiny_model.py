"""The tiny GGUF generator: cached, deterministic, and the shape the server tests assume."""

from __future__ import annotations

from pathlib import Path

from gguf import GGUFReader, TokenType

from tests.support.tiny_model import (
    EMBEDDING_LENGTH,
    VOCAB_SIZE,
    tiny_model_path,
    write_tiny_model,
)


def test_cached_and_deterministic(tmp_path: Path) -> None:
    first = tiny_model_path(tmp_path)
    mtime = first.stat().st_mtime_ns
    assert tiny_model_path(tmp_path) == first
    assert first.stat().st_mtime_ns == mtime  # reused, not rewritten
    again = write_tiny_model(tmp_path / "again.gguf")
    assert again.read_bytes() == first.read_bytes()
    assert tiny_model_path(tmp_path, seed=1).read_bytes() != first.read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_metadata(tmp_path: Path) -> None:
    reader = GGUFReader(tiny_model_path(tmp_path))
    fields = reader.fields
    assert fields["general.architecture"].contents() == "llama"
    assert fields["llama.embedding_length"].contents() == EMBEDDING_LENGTH
    assert fields["llama.pooling_type"].contents() == 1  # mean
    assert fields["tokenizer.ggml.model"].contents() == "llama"
    tokens = fields["tokenizer.ggml.tokens"].contents()
    types = fields["tokenizer.ggml.token_type"].contents()
    assert len(tokens) == VOCAB_SIZE == 407
    assert tokens[:3] == ["<unk>", "<s>", "</s>"]
    assert [t for t, ty in zip(tokens, types, strict=True) if ty == TokenType.BYTE] == [
        f"<0x{b:02X}>" for b in range(256)
    ]
    assert "<|im_start|>" in fields["tokenizer.chat_template"].contents()
