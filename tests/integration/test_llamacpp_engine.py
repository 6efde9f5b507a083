"""The llama.cpp adapter, detection and health states against the REAL `llama-server`.

- `engines detect` (the real CLI process): a running server is running-healthy (version,
  model); stopped, it is installed-only when a `llama-server` is on PATH (a symlink in a
  temp dir) and not-found when none is; a declared engine that stopped is unreachable;
  results are cached until `--refresh`.
- The running gateway: the engine's model list with its per-slot context, its capacity
  (`total_slots`, the default concurrency cap) in the log, /readyz and
  /v1/models following a stop and a restart (no gateway restart), and token counts taken
  from the engine's own usage (stream usage asked for and stripped again).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import openai

from tests.support.gateway_process import ROOT, free_port, run_gateway
from tests.support.llama_fixtures import MakeLlamaServer
from tests.support.llama_server import LlamaServer

ONLY_LLAMACPP = {"detection": {"ports": {"ollama": None, "vllm": None, "lmstudio": None}}}


def write_config(tmp_path: Path, engines: list[dict[str, Any]], llamacpp_port: int) -> Path:
    """A config (JSON is YAML) probing only llama.cpp's default port (here: `llamacpp_port`)."""
    config = {
        "version": 1,
        "server": {"state_dir": str(tmp_path / "state")},
        "listeners": [{"name": "main", "bind": f"127.0.0.1:{free_port()}"}],
        "engines": engines,
        "detection": {"ports": {**ONLY_LLAMACPP["detection"]["ports"], "llamacpp": llamacpp_port}},
    }
    path = tmp_path / "flm.yaml"
    path.write_text(json.dumps(config))
    return path


def detect(config: Path, path_env: str, *args: str) -> tuple[dict[str, Any], float]:
    """Run `flm-gateway engines detect --json`; (its JSON, seconds it took)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": path_env}
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "flm_gateway",
            "engines",
            "detect",
            "--json",
            "--config",
            str(config),
            *args,
        ],
        env=env,
        capture_output=True,
        timeout=30,
        check=True,
    )
    return json.loads(done.stdout), time.monotonic() - started


def by_name(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {engine["name"]: engine for engine in result["engines"]}


def test_detect_states_of_the_real_llama_server(
    make_llama_server: MakeLlamaServer, llama_server_binary: Path, tmp_path: Path
) -> None:
    server = make_llama_server()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "llama-server").symlink_to(llama_server_binary)
    with_program = f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin"
    without_program = f"/usr/bin{os.pathsep}/bin"
    config = write_config(tmp_path, [], server.port)

    # running: found on its (default) port
    result, _ = detect(config, with_program, "--refresh")
    found = by_name(result)["llamacpp"]
    assert (found["state"], found["source"]) == ("running-healthy", "default-port")
    assert found["models"] == ["tiny"] and found["version"].startswith("b")
    assert found["program"] == str(bin_dir / "llama-server")
    assert set(by_name(result)) == {"llamacpp"}  # the other kinds' ports were skipped

    # cached: instant, same answer, even after the server stopped
    server.stop()
    cached, took = detect(config, with_program)
    assert cached["cached"] and by_name(cached)["llamacpp"]["state"] == "running-healthy"

    # --refresh sees the change: installed-only with the program on PATH, else not-found
    result, _ = detect(config, with_program, "--refresh")
    assert by_name(result)["llamacpp"]["state"] == "installed-only"
    result, _ = detect(config, without_program)  # another PATH: not served from the cache
    assert not result["cached"]
    assert by_name(result)["llamacpp"]["state"] == "not-found"
    assert took < 5.0  # python start-up dominates; nothing was probed

    # declared in flm.yaml: reported under its own name; down means unreachable
    declared = write_config(
        tmp_path, [{"name": "cpu-box", "kind": "llamacpp", "url": server.url}], free_port()
    )
    result, _ = detect(declared, with_program, "--refresh")
    assert by_name(result)["cpu-box"]["state"] == "unreachable"
    assert by_name(result)["cpu-box"]["source"] == "config"
    server.start()
    result, _ = detect(declared, with_program, "--refresh")
    box = by_name(result)["cpu-box"]
    assert (box["state"], box["models"]) == ("running-healthy", ["tiny"])
    assert re.fullmatch(r"\d+/4 slots busy", box["detail"])


CONFIG = """\
version: 1
server: {state_dir: "{state_dir}", log_level: debug}
listeners:
  - {name: main, bind: "127.0.0.1:{port}"}
engines:
  - name: cpu-box
    kind: llamacpp
    url: LLAMA_URL
    health: {interval: 1s, timeout: 2s}
"""
USAGE_LOG = re.compile(
    r"usage request=\S+ engine=cpu-box prompt=(\d+) completion=(\d+) estimated=(\w+)"
)


async def wait_for(check: Any, timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_gateway_follows_the_real_llama_server(
    llama_server: LlamaServer, tmp_path: Path
) -> None:
    with run_gateway(CONFIG.replace("LLAMA_URL", llama_server.url), tmp_path) as gateway:
        client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)
        http = httpx.AsyncClient(base_url=gateway.url, timeout=10)

        async def readiness() -> int:
            return (await http.get("/readyz")).status_code

        async def ready() -> bool:
            return await readiness() == 200

        async def not_ready() -> bool:
            return await readiness() == 503

        await wait_for(ready)
        assert [m.id async for m in client.models.list()] == ["tiny"]
        # its -np 4, from /props total_slots: the default concurrency cap, said in the log
        assert "engine cpu-box reports a capacity of 4 requests at once" in gateway.log

        # tokens: a stream the client asked no usage for, then one it did
        stream = await client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], stream=True, max_tokens=6
        )
        chunks = [chunk async for chunk in stream]
        assert all(chunk.usage is None for chunk in chunks)
        stream = await client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            max_tokens=6,
            stream_options={"include_usage": True},
        )
        last = [chunk async for chunk in stream][-1]
        assert last.usage is not None and last.usage.completion_tokens == 6
        embedding = await client.embeddings.create(model="tiny", input="hello world")
        assert embedding.usage.prompt_tokens > 0

        async def counted() -> bool:
            return len(USAGE_LOG.findall(gateway.log)) >= 3

        await wait_for(counted)
        (p1, c1, e1), (p2, c2, e2), (p3, c3, e3) = USAGE_LOG.findall(gateway.log)[:3]
        assert (c1, e1) == ("6", "False") and int(p1) > 0  # from the engine's own usage
        assert (p2, c2, e2) == (str(last.usage.prompt_tokens), "6", "False")
        assert (p3, c3, e3) == (str(embedding.usage.prompt_tokens), "0", "False")

        # the engine stops: not ready, no models, 502; it starts again: all back, no restart
        llama_server.stop()
        await wait_for(not_ready)
        assert [m.id async for m in client.models.list()] == []
        try:
            await client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "hi"}]
            )
        except openai.APIStatusError as exc:
            assert exc.status_code in (404, 502)
        else:
            raise AssertionError("a request to a stopped engine succeeded")
        llama_server.start()
        await wait_for(ready, timeout=4.0)
        reply = await client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        assert reply.usage is not None and reply.usage.completion_tokens == 4
        await http.aclose()
        assert "engine cpu-box is unreachable" in gateway.log
        assert "Traceback" not in gateway.log
