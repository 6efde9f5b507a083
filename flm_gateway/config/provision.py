"""Corrections made after validation, where a value has exactly one right meaning.

Each correction is returned with its path and a message, which the loader turns
into a warning with the file position (`LoadedConfig.warnings`), shown by
`validate`, `check` and the start log.

- An engine `url` ending in `/v1` (`http://127.0.0.1:8080/v1`, as many engines'
  docs print their OpenAI base URL) loses that suffix. The gateway reaches every
  engine kind at `url` + its own paths: the OpenAI API at `/v1/...` and the
  native health and model paths (`/health`, `/api/tags`, ...) at the root, so the
  suffix would send requests to `/v1/v1/chat/completions` and health checks to
  `/v1/health`. The base URL the user meant is always the URL without it, for
  every kind (Ollama's native API at `/api` included), so it is corrected rather
  than refused, like LiteLLM's `api_base`.
"""

from __future__ import annotations

from flm_gateway.config.model import GatewayConfig

Correction = tuple[tuple[str | int, ...], str]

API_SUFFIX = "/v1"


def without_api_suffix(url: str) -> str | None:
    """`url` without a trailing /v1 (the validator already removed a trailing /), or None."""
    if url.endswith(API_SUFFIX):
        return url.removesuffix(API_SUFFIX)
    return None


def provision(config: GatewayConfig) -> tuple[GatewayConfig, list[Correction]]:
    """`config` with its corrections applied, and what was corrected."""
    corrections: list[Correction] = []
    engines = list(config.engines)
    for index, engine in enumerate(engines):
        base = without_api_suffix(engine.url)
        if base is None:
            continue
        engines[index] = engine.model_copy(update={"url": base})
        corrections.append(
            (
                ("engines", index, "url"),
                f"{engine.url!r} ends in /v1; using {base!r}: the gateway adds /v1 itself "
                "(and reaches the engine's health and model paths at the root); "
                "write the URL without /v1",
            )
        )
    if not corrections:
        return config, corrections
    return config.model_copy(update={"engines": engines}), corrections
