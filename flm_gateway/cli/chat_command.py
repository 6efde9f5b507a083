"""`flm-gateway chat`: a small interactive chat through the gateway, streamed as it arrives.

For trying a deployment by hand: each line typed is sent as a user message to
`/v1/chat/completions` with the conversation so far, and the reply is printed
token by token. `/reset` forgets the conversation, `/model NAME` switches model,
`/exit` (or end of input) quits. Input may be piped, one message per line.

The URL defaults to the config's first listener; the model to the first one
`/v1/models` lists; the API key is read from the variable named by `--key-env`
(default `FLM_API_KEY`, if set) and is never printed; a 401 without a key says
to set it. Each request asks for at most `--max-tokens` (default
`DEFAULT_MAX_TOKENS`, 0 sends no limit), so a small model does not run on to its
context limit. Over https the system's CAs are trusted, and so are the CAs this
gateway made itself, read from the config's state directory: the `packaged-ca`
root and every `dev-selfsigned` listener's certificate. `--ca-file` trusts
another CA instead, `--insecure` skips certificate checks.
The exit status is 0 when every message got its reply, 1 when one failed (an
HTTP error, an error event in the stream, an unreachable gateway), so a piped
session tells a script whether it worked.
What a model writes is shown through `text.printable_lines`: a reply can be
steered by the documents it quotes, and must not drive the terminal (ESC
sequences, bidi overrides); line breaks and tabs stay.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from flm_gateway.cli.common import add_config_argument, config_path, resolve_config
from flm_gateway.config import ConfigError, LoadedConfig, load_config
from flm_gateway.config.default import default_config
from flm_gateway.config.tls_settings import TlsMode
from flm_gateway.config.types import format_host_port
from flm_gateway.core.text import printable, printable_lines
from flm_gateway.tls import packaged_ca, self_signed
from flm_gateway.tls.mode import listener_dir

DEFAULT_KEY_ENV = "FLM_API_KEY"
DEFAULT_MAX_TOKENS = 1024
TIMEOUT = 600.0


class ChatError(Exception):
    """The gateway answered with an error; the message is the client-facing one."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("chat", help="chat with a model through the gateway")
    add_config_argument(parser)
    parser.add_argument("--model", "-m", help="model to use (default: the first listed)")
    parser.add_argument("--url", help="gateway URL (default: the config's first listener)")
    parser.add_argument(
        "--key-env",
        metavar="VAR",
        help=f"environment variable holding the API key (default {DEFAULT_KEY_ENV} if set)",
    )
    parser.add_argument("--system", help="a system prompt for the conversation")
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=DEFAULT_MAX_TOKENS,
        metavar="N",
        help=f"most tokens per reply (default {DEFAULT_MAX_TOKENS}; 0 sends no limit)",
    )
    parser.add_argument(
        "--ca-file", help="trust this CA certificate (PEM) for https, not the gateway's own"
    )
    parser.add_argument("--insecure", action="store_true", help="do not verify certificates")
    parser.set_defaults(func=run_chat)


def _default_url(loaded: LoadedConfig) -> str:
    listener = loaded.config.listeners[0]
    host, port = listener.bind
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    scheme = "http" if listener.tls.mode is TlsMode.LOCAL_HTTP else "https"
    return f"{scheme}://{format_host_port((host, port))}"


class ChatClient:
    """Just enough of the OpenAI API over urllib: list models, stream a chat."""

    def __init__(
        self,
        base_url: str,
        key: str | None,
        context: ssl.SSLContext | None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
    ) -> None:
        base = base_url.rstrip("/")
        self.base = base if base.endswith("/v1") else base + "/v1"
        self.key = key
        self.context = context
        self.max_tokens = max_tokens

    def _request(self, path: str, body: dict[str, Any] | None = None) -> Any:
        # Imported here: urllib.request pulls in http.client and email (about 1.7 MiB),
        # which `flm-gateway run` would otherwise carry for its whole life.
        import urllib.error
        import urllib.request

        headers = {"Accept": "application/json, text/event-stream"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base + path, data=data, headers=headers)  # noqa: S310
        try:
            return urllib.request.urlopen(request, timeout=TIMEOUT, context=self.context)  # noqa: S310
        except urllib.error.HTTPError as exc:
            message = _error_message(exc.code, exc.read())
            if exc.code == 401 and not self.key:
                message += (
                    f" (no API key was sent: set {DEFAULT_KEY_ENV}, or name the variable that"
                    " holds it with --key-env)"
                )
            raise ChatError(message) from None
        except urllib.error.URLError as exc:
            raise ChatError(f"cannot reach {self.base}: {exc.reason}") from None

    def models(self) -> list[str]:
        with self._request("/models") as response:
            payload = json.load(response)
        return [m["id"] for m in payload.get("data", []) if isinstance(m, dict) and "id" in m]

    def stream(self, model: str, messages: list[dict[str, str]]) -> Iterator[str]:
        body: dict[str, Any] = {"model": model, "messages": messages, "stream": True}
        if self.max_tokens > 0:
            body["max_tokens"] = self.max_tokens
        with self._request("/chat/completions", body) as response:
            for raw in response:
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                try:
                    event = json.loads(data)
                except ValueError:
                    continue
                if "error" in event:
                    raise ChatError(str(event["error"].get("message", event["error"])))
                for choice in event.get("choices") or []:
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        yield content


def _error_message(status: int, body: bytes) -> str:
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = body.decode("utf-8", "replace")[:200]
    return f"HTTP {status}: {message}"


def gateway_ca_files(loaded: LoadedConfig) -> list[Path]:
    """The certificates this gateway made itself that exist: the packaged-ca root, and the
    certificate of every dev-selfsigned listener (self-signed, so its own trust anchor)."""
    state_dir = loaded.state_dir
    files = [packaged_ca.root_cert_path(state_dir)]
    files += [
        self_signed.cert_path(listener_dir(state_dir, listener))
        for listener in loaded.config.listeners
        if listener.tls.mode is TlsMode.DEV_SELFSIGNED
    ]
    return [path for path in files if path.is_file()]


def _ssl_context(args: argparse.Namespace, loaded: LoadedConfig | None) -> ssl.SSLContext:
    if args.insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if args.ca_file:
        return ssl.create_default_context(cafile=args.ca_file)
    context = ssl.create_default_context()
    for path in gateway_ca_files(loaded) if loaded is not None else ():
        context.load_verify_locations(cafile=str(path))
    return context


def _quiet_config(args: argparse.Namespace) -> LoadedConfig | None:
    """The config (for its state directory's CAs) when --url is given: a broken one is
    simply not used, as the URL does not come from it."""
    path = config_path(args)
    try:
        return load_config(path) if path is not None else default_config()
    except ConfigError:
        return None


def chat_loop(
    client: ChatClient, model: str, system: str | None, lines: TextIO, out: TextIO
) -> int:
    """Read messages from `lines`, print streamed replies to `out`; the exit code."""
    interactive = lines.isatty()
    failed = False
    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    while True:
        if interactive:
            out.write("you> ")
            out.flush()
        line = lines.readline()
        if not line:
            return 1 if failed else 0
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return 1 if failed else 0
        if text == "/reset":
            history = history[:1] if system else []
            out.write("(conversation reset)\n")
            continue
        if text.startswith("/model "):
            model = text.split(None, 1)[1]
            out.write(f"(model: {model})\n")
            continue
        history.append({"role": "user", "content": text})
        out.write(f"{model}> ")
        out.flush()
        reply = []
        try:
            for piece in client.stream(model, history):
                reply.append(piece)
                out.write(printable_lines(piece))
                out.flush()
        except ChatError as exc:
            failed = True
            history.pop()
            out.write(f"\n[error] {printable(str(exc))}\n")
            out.flush()
            continue
        out.write("\n")
        out.flush()
        history.append({"role": "assistant", "content": "".join(reply)})


def run_chat(args: argparse.Namespace) -> int:
    if args.max_tokens < 0:
        print("flm-gateway chat: --max-tokens must be 0 or more", file=sys.stderr)
        return 2
    if args.url:
        url = args.url
        loaded = _quiet_config(args) if url.startswith("https:") else None
    else:
        loaded = resolve_config(args)
        if loaded is None:
            return 1
        url = _default_url(loaded)
    key_env = args.key_env or DEFAULT_KEY_ENV
    key = os.environ.get(key_env)
    if args.key_env and not key:
        print(f"flm-gateway chat: environment variable {key_env} is not set", file=sys.stderr)
        return 2
    client = ChatClient(url, key, _ssl_context(args, loaded), args.max_tokens)
    model = args.model
    try:
        if model is None:
            models = client.models()
            if not models:
                print(f"{client.base}/models lists no model; use --model", file=sys.stderr)
                return 1
            model = models[0]
    except ChatError as exc:
        print(f"flm-gateway chat: {exc}", file=sys.stderr)
        return 1
    if sys.stdin.isatty():
        print(f"chatting with {model} at {client.base} (/exit to quit, /reset to start over)")
    return chat_loop(client, model, args.system, sys.stdin, sys.stdout)
