"""Hot reload end to end: the real gateway process, fake engines, the openai SDK and curl.

A stream running through a reload loses nothing; a keep-alive client sees the new
routes on its old connection; listeners come and go; an invalid edit, a port that
cannot be bound and a burst of edits are handled as the reload policy says.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.ops_helpers import cli, http_get, threaded_engine, wait_for_log, write_config
from tests.support.fake_engines import FakeEngine
from tests.support.gateway_process import GatewayProcess, free_port, run_gateway

HEAD = """\
server: {{state_dir: "{state_dir}", drain_timeout: 10s}}
admin: {{bind: "127.0.0.1:{admin}"}}
reload: {{poll_interval: 0.05, debounce: 0.3}}
"""
V1 = """\
listeners:
  - {{name: main, bind: "127.0.0.1:{port}"}}
engines:
  - {{name: alpha, kind: vllm, url: "{alpha}"}}
"""
V2 = """\
listeners:
  - {{name: main, bind: "127.0.0.1:{port}"}}
  - {{name: second, bind: "127.0.0.1:{second}"}}
engines:
  - {{name: alpha, kind: vllm, url: "{alpha}"}}
  - {{name: beta, kind: openai, url: "{beta}"}}
routes:
  - {{model: chat, engine: beta, upstream_model: small-7b}}
"""


@dataclass
class Stack:
    gateway: GatewayProcess
    alpha: FakeEngine
    beta: FakeEngine
    values: dict[str, object]

    def render(self, body: str, **extra: object) -> str:
        return (HEAD + body).format(**{**self.values, **extra})

    def write(self, body: str, **extra: object) -> None:
        write_config(self.gateway.config_path, self.render(body, **extra))

    def metric(self, name: str, **labels: str) -> float | None:
        _, text = http_get(f"http://127.0.0.1:{self.values['admin']}/metrics")
        for family in text_string_to_metric_families(text.decode()):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return None

    def client(self, port: object = None) -> openai.OpenAI:
        port = port or self.values["port"]
        return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with (
        threaded_engine("vllm", ["tiny-a"]) as alpha,
        threaded_engine("openai", ["small-7b"]) as beta,
    ):
        port = free_port()
        values: dict[str, object] = {
            "port": port,
            "second": free_port(),
            "admin": free_port(),
            "alpha": alpha.url,
            "beta": beta.url,
            "state_dir": tmp_path / "state",
        }
        config = (HEAD + V1).format(**values)
        admin = f"http://127.0.0.1:{values['admin']}/readyz"
        with run_gateway(config, tmp_path, port=port, health_url=admin) as gateway:
            yield Stack(gateway, alpha, beta, values)


def chat_status(connection: http.client.HTTPConnection, model: str) -> tuple[int, bytes]:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})
    connection.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, response.read()


def test_stream_through_reload_and_keepalive_sees_new_routes(stack: Stack) -> None:
    keepalive = http.client.HTTPConnection("127.0.0.1", int(str(stack.values["port"])), timeout=10)
    status, _ = chat_status(keepalive, "chat")
    assert status == 404  # no such route yet
    socket_before = keepalive.sock

    stream = stack.client().chat.completions.create(
        model="tiny-a",
        messages=[{"role": "user", "content": "count"}],
        stream=True,
        extra_headers={"x-fake-chunks": "12", "x-fake-chunk-delay": "0.1"},
    )
    pieces: list[str] = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if len(pieces) == 2:
            stack.write(V2)
            wait_for_log(stack.gateway, "now serving config generation 2")
    assert len(pieces) == 12, pieces  # nothing lost, nothing cut

    status, body = chat_status(keepalive, "chat")  # same connection, new route
    assert status == 200, body
    assert keepalive.sock is socket_before
    assert stack.beta.requests[-1].json["model"] == "small-7b"

    second = stack.client(stack.values["second"])
    assert (
        second.chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}])
        .choices[0]
        .message.content
    )

    stack.write(V1)  # the second listener goes away again
    wait_for_log(stack.gateway, "now serving config generation 3")
    with pytest.raises(openai.InternalServerError):  # its open connection: 503, then closed
        second.models.list()
    with pytest.raises(openai.APIConnectionError):  # a new connection is refused
        second.models.list()
    status, _ = chat_status(keepalive, "chat")
    assert status == 404
    assert stack.metric("flm_config_reloads_total", result="ok") == 2
    assert stack.metric("flm_config_generation") == 3
    assert "Traceback" not in stack.gateway.log


def test_invalid_edit_keeps_the_old_config(stack: Stack) -> None:
    stack.write(V2.replace('bind: "127.0.0.1:{second}"', "bind: nowhere"))
    log = wait_for_log(stack.gateway, "still serving generation 1")
    config = stack.gateway.config_path
    assert f"{config}:6:26: listeners[1].bind: 'nowhere' is not host:port" in log
    assert "audit config.reload failed" in log
    assert stack.metric("flm_config_reloads_total", result="failed") == 1

    reply = stack.client().chat.completions.create(
        model="tiny-a", messages=[{"role": "user", "content": "x"}]
    )
    assert reply.choices[0].message.content

    # `flm-gateway reload` validates first and does not signal for a broken file.
    result = cli("reload", "--config", str(config))
    assert result.returncode == 1
    assert "'nowhere' is not host:port" in result.stderr

    stack.write(V2)
    wait_for_log(stack.gateway, "now serving config generation 2")
    result = cli("reload", "--config", str(config))  # SIGHUP: reloads even unchanged files
    assert result.returncode == 0, result.stderr
    assert "serves config generation 3" in result.stdout
    audit = cli("security", "audit", "-c", str(config), "--type", "config.reload.", "--json")
    events = [(e["type"], e["actor"], e["details"]["trigger"]) for e in json.loads(audit.stdout)]
    assert events == [
        ("config.reload.failed", "gateway", "file change"),
        ("config.reload.ok", "gateway", "file change"),
        ("config.reload.ok", "gateway", "SIGHUP"),
    ]


def test_a_listener_that_cannot_bind_rolls_everything_back(stack: Stack) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stack.write(V2, second=port)
        log = wait_for_log(stack.gateway, "still serving generation 1")
    # The test process holds the port: its pid is named; mitmproxy's own lines are not shown.
    where = f"{stack.gateway.config_path}:6:"  # the second listener's line, then its column
    problem = rf"\d+: listeners\[1\]\.bind: port {port} on 127\.0\.0\.1 is already in use by "
    assert re.search(re.escape(where) + problem, log), log
    assert f"pid {os.getpid()}" in log
    assert "127.0.0.1:9 failed to listen" not in log
    assert not [line for line in log.splitlines() if line.rstrip().endswith("proxyserver:")]
    with pytest.raises(openai.NotFoundError):  # the route of the refused config is not there
        stack.client().chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "x"}]
        )
    assert stack.client().models.list().data[0].id == "tiny-a"


def test_rapid_edits_are_debounced_and_sighup_reloads(stack: Stack) -> None:
    for delay in range(6):
        stack.write(V1 + f"# edit {delay}\n")
        threading.Event().wait(0.05)
    stack.write(V2)
    wait_for_log(stack.gateway, "now serving config generation 2")
    threading.Event().wait(0.8)
    assert stack.gateway.log.count("(file change)") == 1
    stack.gateway.signal(signal.SIGHUP)
    wait_for_log(stack.gateway, "now serving config generation 3")
    assert "(SIGHUP)" in stack.gateway.log


def test_a_state_dir_edit_is_refused_with_its_position_by_watcher_and_cli(stack: Stack) -> None:
    """The watcher's refusal names file:line:col; `reload` finds the gateway through the lock
    in its old state directory instead of saying "no running gateway"."""
    old_state = stack.values["state_dir"]
    stack.write(V1, state_dir=stack.values["state_dir"] / "moved")  # type: ignore[operator]
    log = wait_for_log(stack.gateway, "still serving generation 1")
    where = f"{stack.gateway.config_path}:1:21: server.state_dir:"
    assert f"{where} the state directory cannot change while serving" in log
    result = cli("reload", "--config", str(stack.gateway.config_path))
    assert result.returncode == 1, result.stderr
    assert "no running gateway" not in result.stderr
    assert where in result.stderr
    assert f"gateway {stack.gateway.process.pid} serves" in result.stderr
    assert f"from the state directory {old_state};" in result.stderr
    assert "restart the gateway" in result.stderr


def test_a_config_an_addon_refuses_is_not_served_at_all(stack: Stack) -> None:
    """The loader accepts the edit, the TLS addon refuses its `ca_bundle` (not a certificate):
    nothing of the edit is served (its route, its second listener), the refusal is reported
    with its position, as every reload failure is, and `validate` refuses the same file."""
    (stack.gateway.config_path.parent / "bundle.pem").write_text("garbage\n")
    refused = V2.replace(
        "engines:",
        '  - {{name: tls, bind: "127.0.0.1:{third}", tls: {{mode: https-acme, domains: '
        '[gw.test], acme: {{directory: "https://127.0.0.1:1/dir", ca_bundle: bundle.pem, '
        "http_port: {acme}}}}}}}\nengines:",
        1,
    )
    stack.write(refused, third=free_port(), acme=free_port())
    # The summary line comes first, then one line per problem: wait for the problem.
    log = wait_for_log(stack.gateway, "holds no PEM certificate")
    assert "still serving generation 1" in log, log
    config = stack.gateway.config_path
    problem = rf"{re.escape(str(config))}:7:\d+: listeners\[2\]\.tls\.acme\.ca_bundle: "
    assert re.search(problem + r".*bundle\.pem holds no PEM certificate", log), log
    assert stack.metric("flm_config_reloads_total", result="failed") == 1
    with pytest.raises(openai.NotFoundError):  # the route of the refused config is not there
        stack.client().chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(openai.APIConnectionError):  # nor its second listener
        stack.client(stack.values["second"]).models.list()
    assert stack.client().models.list().data[0].id == "tiny-a"
    result = cli("reload", "--config", str(config))  # SIGHUP; the gateway's answer is relayed
    assert result.returncode == 1
    assert re.search(problem, result.stderr), result.stderr
    validate = cli("validate", str(config))
    assert validate.returncode == 1
    assert re.search(problem, validate.stdout), validate.stdout
