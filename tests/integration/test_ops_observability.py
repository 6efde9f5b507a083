"""Metrics, request log, structured logs, check and chat against one running gateway.

One gateway for the module (JSON logs at debug level, an admin listener, one
engine up and one configured but down), driven by the openai SDK, curl, the
`flm-gateway` commands and tmux.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.ops_helpers import cli, http_get, post_json, threaded_engine
from tests.support.fake_engines import FakeEngine
from tests.support.gateway_process import ROOT, GatewayProcess, free_port, run_gateway

CLIENT_SECRET = "sk-client-secret-0123456789"
ENGINE_SECRET = "sk-engine-secret-9876543210"

CONFIG = """\
server: {{state_dir: "{state_dir}", log_level: debug}}
admin: {{bind: "127.0.0.1:{admin}"}}
listeners:
  - {{name: main, bind: "127.0.0.1:{port}"}}
  - {{name: guarded, bind: "127.0.0.1:{guarded}", security: {{ip: {{allow: [192.0.2.0/24]}}}}}}
  - {{name: keyed, bind: "127.0.0.1:{keyed}", auth: api-key}}
engines:
  - {{name: alpha, kind: vllm, url: "{alpha}", api_key: "{engine_secret}"}}
  - {{name: down, kind: openai, url: "http://127.0.0.1:{down}", models: [ghost]}}
routes:
  - {{model: failover, engine: down, fallback: [{{engine: alpha, upstream_model: tiny-a}}]}}
"""


@dataclass
class Deployment:
    gateway: GatewayProcess
    alpha: FakeEngine
    port: int
    admin: int
    guarded: int
    keyed: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, text = http_get(f"http://127.0.0.1:{self.admin}/metrics")
        assert status == 200
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text.decode())
            for sample in family.samples
        }


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp_path = tmp_path_factory.mktemp("observability")
    with threaded_engine("vllm", ["tiny-a"], api_key=ENGINE_SECRET) as alpha:
        port, admin, guarded, keyed = free_port(), free_port(), free_port(), free_port()
        config = CONFIG.format(
            guarded=guarded,
            keyed=keyed,
            state_dir=tmp_path / "state",
            admin=admin,
            port=port,
            alpha=alpha.url,
            engine_secret=ENGINE_SECRET,
            down=free_port(),
        )
        with run_gateway(
            config,
            tmp_path,
            port=port,
            args=("--log-format", "json"),
            health_url=f"http://127.0.0.1:{admin}/readyz",
        ) as gateway:
            deployment = Deployment(gateway, alpha, port, admin, guarded, keyed)
            _traffic(deployment)
            yield deployment


def _traffic(deployment: Deployment) -> None:
    """The requests every test below looks at."""
    client = openai.OpenAI(base_url=deployment.url + "/v1", api_key=CLIENT_SECRET, max_retries=0)
    client.chat.completions.create(model="tiny-a", messages=[{"role": "user", "content": "a"}])
    stream = client.chat.completions.create(
        model="tiny-a",
        messages=[{"role": "user", "content": "b"}],
        stream=True,
        extra_headers={"x-fake-first-chunk-delay": "0.2"},
    )
    assert sum(1 for _ in stream) > 1
    client.chat.completions.create(model="failover", messages=[{"role": "user", "content": "c"}])
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "d"}])
    with pytest.raises(openai.APIStatusError):  # only the engine that is down lists it: 502
        client.chat.completions.create(model="ghost", messages=[{"role": "user", "content": "f"}])
    status, headers, _ = post_json(
        deployment.url + "/v1/chat/completions",
        {"model": "tiny-a", "messages": [{"role": "user", "content": "e"}]},
        {"Authorization": f"Bearer {CLIENT_SECRET}", "X-Request-ID": "trace-42"},
    )
    assert status == 200 and headers["x-request-id"] == "trace-42"
    assert http_get(f"http://127.0.0.1:{deployment.guarded}/v1/models")[0] == 403
    assert http_get(f"http://127.0.0.1:{deployment.keyed}/v1/models")[0] == 401
    status, _, _ = post_json(  # a key the gateway does not know: refused, and never logged
        f"http://127.0.0.1:{deployment.keyed}/v1/embeddings",
        {"model": "tiny-a", "messages": []},
        {"Authorization": f"Bearer {CLIENT_SECRET}"},
    )
    assert status == 401
    time.sleep(1.0)  # the request log writes in the background


def test_metrics_parse_and_count_what_happened(deployment: Deployment) -> None:
    metrics = deployment.metrics()
    ok = {"listener": "main", "route": "", "model": "tiny-a", "engine": "alpha", "status": "200"}
    assert metrics[("flm_requests_total", tuple(sorted(ok.items())))] == 3
    failover = {**ok, "route": "failover", "model": "failover"}
    assert metrics[("flm_requests_total", tuple(sorted(failover.items())))] == 1
    unknown = {"listener": "main", "route": "", "model": "", "engine": "", "status": "404"}
    assert metrics[("flm_requests_total", tuple(sorted(unknown.items())))] == 1
    ttft = (("engine", "alpha"), ("model", "tiny-a"))
    assert metrics[("flm_time_to_first_token_seconds_count", ttft)] == 1
    assert metrics[("flm_time_to_first_token_seconds_sum", ttft)] >= 0.2
    refused = (("engine", "down"), ("kind", "probe_refused"))
    assert metrics[("flm_upstream_errors_total", refused)] >= 1
    assert metrics[("flm_engine_up", (("engine", "alpha"),))] == 1
    assert metrics[("flm_engine_up", (("engine", "down"),))] == 0
    assert metrics[("flm_config_generation", ())] == 1
    ip = (("listener", "guarded"), ("reason", "ip_not_allowed"))
    assert metrics[("flm_rejections_total", ip)] == 1
    auth = (("listener", "keyed"), ("reason", "auth_missing"))
    assert metrics[("flm_rejections_total", auth)] == 1
    unknown_key = (("listener", "keyed"), ("reason", "auth_unknown"))
    assert metrics[("flm_rejections_total", unknown_key)] == 1
    prompt = (("key_id", ""), ("model", "tiny-a"), ("type", "prompt"))
    completion = (("key_id", ""), ("model", "tiny-a"), ("type", "completion"))
    assert metrics[("flm_tokens_total", prompt)] > 0
    assert metrics[("flm_tokens_total", completion)] > 0


def test_admin_endpoints_live_only_on_the_admin_listener(deployment: Deployment) -> None:
    admin = f"http://127.0.0.1:{deployment.admin}"
    assert http_get(admin + "/healthz")[0] == 200
    status, body = http_get(admin + "/readyz")
    assert status == 200 and json.loads(body)["engines_up"] == 1
    assert http_get(admin + "/v1/models")[0] == 404
    status, body = http_get(deployment.url + "/metrics")
    assert status == 404 and b"flm_requests_total" not in body


def test_json_logs_without_secrets(deployment: Deployment) -> None:
    log = deployment.gateway.log
    lines = [line for line in log.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert any(r.get("request_id") == "trace-42" for r in records)
    assert CLIENT_SECRET not in log and ENGINE_SECRET not in log
    assert all(CLIENT_SECRET not in str(h) for r in deployment.alpha.requests for h in r.headers)


def test_logs_search_and_stats(deployment: Deployment) -> None:
    config = str(deployment.gateway.config_path)
    result = cli("logs", "--config", config, "--json", "--path", "/v1/chat")
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert len(records) == 6
    traced = next(r for r in records if r["request_id"] == "trace-42")
    assert traced["listener"] == "main" and traced["client_ip"] == "127.0.0.1"
    assert traced["engine"] == "alpha" and traced["status"] == 200
    assert traced["path"] == "/v1/chat/completions" and traced["bytes_out"] > 0
    streamed = next(r for r in records if r["streamed"])
    assert streamed["ttft_ms"] >= 200
    assert streamed["completion_tokens"] > 0 and streamed["tokens_estimated"] == 0
    only_chat = ("--path", "/v1/chat", "--json")
    [missing] = json.loads(cli("logs", "-c", config, "--status", "404", *only_chat).stdout)
    assert missing["error_kind"] == "model_not_found"
    [down] = json.loads(cli("logs", "-c", config, "--status", "error", *only_chat).stdout)
    assert down["status"] == 502 and down["error_kind"] == "engine_unavailable"
    assert len(json.loads(cli("logs", "-c", config, "--model", "failover", "--json").stdout)) == 1

    table = cli("logs", "-c", config, "--engine", "alpha", "--since", "10m")
    assert table.returncode == 0 and "trace-42" in table.stdout
    assert table.stdout.splitlines()[0].split()[:3] == ["time", "request", "id"]

    stats = json.loads(cli("logs", "stats", "-c", config, "--json", "--path", "/v1/chat").stdout)
    total = stats["total"][0]
    assert total["requests"] == 6 and total["4xx"] == 1 and total["errors"] == 1
    assert {g["group"] for g in stats["engine"]} == {"alpha", "-"}
    assert total["p50_ms"] is not None and total["p99_ms"] >= total["p50_ms"]
    assert "by model" in cli("logs", "stats", "-c", config).stdout
    assert cli("logs", "-c", config, "--since", "yesterday").returncode == 2


def test_check_reports_each_problem_with_a_fix(deployment: Deployment) -> None:
    result = cli("check", "--config", str(deployment.gateway.config_path), "--timeout", "5")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any(line.startswith("OK    engine alpha: running-healthy") for line in lines)
    [down] = [line for line in lines if line.startswith("FAIL  engine down")]
    assert "-> start the engine, or correct engines[1].url" in down
    assert any("served by the running gateway" in line for line in lines if "listener main" in line)
    assert any(line.startswith("OK    state") for line in lines)
    # `keyed` says auth: api-key and no key exists: every request there would get 401
    [keyless] = [line for line in lines if line.startswith("WARN  auth keyed:")]
    assert keyless.endswith("-> flm-gateway keys create --name NAME")
    assert lines[-1] == "1 problem(s), 1 warning(s)"


def test_chat_streams_piped_messages(deployment: Deployment) -> None:
    result = cli(
        "chat",
        "--url",
        deployment.url,
        "--model",
        "tiny-a",
        "--key-env",
        "CHAT_KEY",
        stdin="hello\n/reset\nagain\n/exit\n",
        env={"CHAT_KEY": CLIENT_SECRET},
    )
    assert result.returncode == 0, result.stderr
    replies = [line for line in result.stdout.splitlines() if line.startswith("tiny-a> ")]
    assert len(replies) == 2 and all(len(line) > len("tiny-a> ") for line in replies)
    assert "(conversation reset)" in result.stdout
    assert CLIENT_SECRET not in result.stdout + result.stderr
    bad = cli("chat", "--url", deployment.url, "--model", "nope", stdin="hi\n")
    assert bad.returncode == 1 and "[error] HTTP 404" in bad.stdout
    # One failed message among good ones still fails the run (for scripts piping into chat).
    mixed = cli("chat", "--url", deployment.url, "--model", "tiny-a", stdin="hi\n/model nope\nho\n")
    assert mixed.returncode == 1 and mixed.stdout.count("tiny-a> w0") == 1


def test_chat_caps_the_reply_length(deployment: Deployment) -> None:
    def sent_max_tokens(*args: str) -> object:
        before = len(deployment.alpha.requests)
        result = cli("chat", "--url", deployment.url, "--model", "tiny-a", *args, stdin="hi\n")
        assert result.returncode == 0, result.stderr
        [request] = [  # (health checks reach the engine too)
            r for r in deployment.alpha.requests[before:] if r.path == "/v1/chat/completions"
        ]
        return (request.json or {}).get("max_tokens", "absent")

    assert sent_max_tokens() == 1024
    assert sent_max_tokens("--max-tokens", "7") == 7
    assert sent_max_tokens("--max-tokens", "0") == "absent"
    refused = cli("chat", "--url", deployment.url, "--max-tokens", "-1", stdin="hi\n")
    assert refused.returncode == 2 and "--max-tokens" in refused.stderr


def test_chat_without_a_key_says_how_to_give_one(deployment: Deployment) -> None:
    keyed = f"http://127.0.0.1:{deployment.keyed}"
    env = {"FLM_API_KEY": ""}
    piped = cli("chat", "--url", keyed, "--model", "tiny-a", stdin="hi\n", env=env)
    assert piped.returncode == 1
    assert "[error] HTTP 401" in piped.stdout and "set FLM_API_KEY" in piped.stdout
    listing = cli("chat", "--url", keyed, stdin="hi\n", env=env)  # /v1/models needs it too
    assert listing.returncode == 1 and "set FLM_API_KEY" in listing.stderr


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_chat_interactive_in_tmux(deployment: Deployment) -> None:
    socket_name = f"flm-test-{uuid.uuid4().hex[:8]}"
    tmux = ["tmux", "-L", socket_name]
    command = f"PYTHONPATH={ROOT} {sys.executable} -m flm_gateway chat --url {deployment.url}"
    subprocess.run(
        [*tmux, "new-session", "-d", "-s", "chat", "-x", "120", "-y", "30", command], check=True
    )
    try:

        def screen() -> str:
            return subprocess.run(
                [*tmux, "capture-pane", "-p", "-t", "chat"], capture_output=True, text=True
            ).stdout

        deadline = time.monotonic() + 15
        while "you>" not in screen() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "chatting with tiny-a" in screen()
        subprocess.run([*tmux, "send-keys", "-t", "chat", "hello there", "Enter"], check=True)
        while screen().count("you>") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        text = screen()  # (tmux drops the space after a prompt at the end of a line)
        assert "tiny-a> w0" in text and text.count("you>") == 2
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)
