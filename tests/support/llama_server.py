"""Run the real llama.cpp `llama-server` on 127.0.0.1 with the tiny model, for tests.

    with run_llama_server() as srv:          # started, /health is 200
        httpx.get(f"{srv.url}/v1/models")
        srv.stop(); srv.start()              # same port again

The binary comes from `scripts/llama-server.sh`, the one place that knows where to look
($FLM_LLAMA_SERVER, the shared engines directory, the cache) and how to build it from source.
The model comes from `tiny_model.tiny_model_path()`. The server runs with
`-c 2048 -np 4 -t 1 --embeddings`: four slots of 512 tokens, chat, completions and embeddings
from one process. Its stdout and stderr go to a log file (`LlamaServer.log_path`), whose tail is
quoted in every start-up error.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from tests.support.tiny_model import tiny_model_path

__all__ = [
    "LLAMA_SERVER_ARGS",
    "RESOLVER_SCRIPT",
    "LlamaServer",
    "LlamaServerError",
    "find_llama_server",
    "run_llama_server",
]

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
RESOLVER_SCRIPT: Final = REPO_ROOT / "scripts" / "llama-server.sh"
HOST: Final = "127.0.0.1"
# Shared by all slots: 4 x 512 tokens. Raise -c (extra_args) for long-stream tests.
LLAMA_SERVER_ARGS: Final = ("-c", "2048", "-np", "4", "-t", "1", "--embeddings")

_POLL_INTERVAL: Final = 0.02
# A free port found by binding to port 0 can be taken by someone else before the server binds it.
_PORT_ATTEMPTS: Final = 3
_LOG_TAIL_CHARS: Final = 3000
# llama-server reads LLAMA_ARG_* as defaults for its flags; a developer's shell must not leak in.
_ENV_PREFIX_DROPPED: Final = "LLAMA_ARG_"


class LlamaServerError(RuntimeError):
    """The binary could not be found or built, or the server did not become healthy."""


def _tail(path: Path, chars: int = _LOG_TAIL_CHARS) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return text[-chars:]


def find_llama_server(*, build: bool = True, stderr: Path | None = None) -> Path:
    """Return the path of a working `llama-server`, as `scripts/llama-server.sh` resolves it.

    `build=False` fails instead of building from source (the slow path, ~10 min on 2 cores).
    The script's progress goes to `stderr` (a file, appended to) or else to our own stderr.
    The script's `pip download` runs with this interpreter unless FLM_PYTHON is set.
    """
    env = dict(os.environ)
    env.setdefault("FLM_PYTHON", sys.executable)
    if not build:
        env["FLM_LLAMA_NO_BUILD"] = "1"
    command = ["bash", str(RESOLVER_SCRIPT)]
    if stderr is None:
        proc = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=False)
        detail = "see the messages above"
    else:
        stderr.parent.mkdir(parents=True, exist_ok=True)
        with stderr.open("a") as err:
            proc = subprocess.run(
                command, env=env, stdout=subprocess.PIPE, stderr=err, text=True, check=False
            )
        detail = f"{stderr}:\n{_tail(stderr)}"
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise LlamaServerError(f"{RESOLVER_SCRIPT.name} exited {proc.returncode}; {detail}")
    return Path(lines[-1])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _health_status(port: int, timeout: float) -> int | None:
    """HTTP status of GET /health, or None while nothing accepts connections."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def _terminate(process: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM, then SIGKILL after `timeout` seconds; return the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


class LlamaServer:
    """One `llama-server` process on 127.0.0.1, restartable on the same port.

    `port=None` picks a free port on the first start (retrying with another one if the server
    loses the race for it) and keeps it for later starts. Use as a context manager, or call
    `start()` and `close()` yourself.
    """

    def __init__(
        self,
        binary: Path,
        model: Path,
        port: int | None = None,
        *,
        alias: str = "tiny",
        api_key: str | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 30.0,
        log_dir: Path | None = None,
    ) -> None:
        self.binary = binary
        self.model = model
        self.alias = alias
        self.api_key = api_key
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self._port = port
        self._port_chosen = port is not None
        self._process: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[[subprocess.Popen[bytes], float], LlamaServer] | None = (
            None
        )
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if log_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="flm-llama-server-")
            log_dir = Path(self._tmp.name)
        self._log_dir = log_dir
        self._log_path: Path | None = None

    # -- read-only state --------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise LlamaServerError("the server has no port until it is started")
        return self._port

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>`, without a trailing slash."""
        return f"http://{HOST}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, `<url>/v1`."""
        return f"{self.url}/v1"

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The running process, or None before `start()` and after `stop()`."""
        return self._process

    @property
    def log_path(self) -> Path:
        """The server's combined stdout and stderr, appended to by every start."""
        if self._log_path is None:
            raise LlamaServerError("the server has not been started yet")
        return self._log_path

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self._log_path else ""

    def command(self) -> list[str]:
        args = [str(self.binary), "-m", str(self.model), "--host", HOST, "--port", str(self.port)]
        args += [*LLAMA_SERVER_ARGS, "--alias", self.alias]
        if self.api_key is not None:
            args += ["--api-key", self.api_key]
        return [*args, *self.extra_args]

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the server and wait until `/health` answers 200. No-op if it is running."""
        if self.is_running():
            return self
        attempt = 1
        while True:
            if not self._port_chosen:
                self._port = _free_port()
            try:
                self._spawn_and_wait()
            except LlamaServerError:
                # Only a port we picked ourselves may be swapped for another one.
                if self._port_chosen or attempt >= _PORT_ATTEMPTS or not self._lost_port():
                    raise
                attempt += 1
            else:
                self._port_chosen = True
                return self

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM the server, SIGKILL it after `timeout` s; return its exit code (None if idle)."""
        process, self._process = self._process, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if process is None:
            return None
        return _terminate(process, timeout)

    def close(self) -> None:
        """Stop the server and delete the log directory if we created it."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<LlamaServer {self.alias} {HOST}:{self._port} {state}>"

    # -- internals -------------------------------------------------------------------------

    def _lost_port(self) -> bool:
        return "couldn't bind" in _tail(self.log_path, 2000)

    def _spawn_and_wait(self) -> None:
        self._log_path = self._log_dir / f"llama-server-{self.port}.log"
        env: Mapping[str, str] = {
            k: v for k, v in os.environ.items() if not k.startswith(_ENV_PREFIX_DROPPED)
        }
        with self._log_path.open("ab") as log:
            log.write(f"$ {' '.join(self.command())}\n".encode())
            log.flush()
            process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env
            )
        self._process = process
        # Never leave an orphan server behind, even if the caller forgets stop().
        self._finalizer = weakref.finalize(self, _terminate, process, 1.0)

        deadline = time.monotonic() + self.startup_timeout
        while True:
            if process.poll() is not None:
                self.stop()
                raise LlamaServerError(
                    f"llama-server exited with {process.returncode} while starting on port "
                    f"{self.port}; {self.log_path}:\n{_tail(self.log_path)}"
                )
            if _health_status(self.port, timeout=1.0) == 200:
                return
            if time.monotonic() > deadline:
                self.stop()
                raise LlamaServerError(
                    f"llama-server on port {self.port} not healthy after "
                    f"{self.startup_timeout:g} s; {self.log_path}:\n{_tail(self.log_path)}"
                )
            time.sleep(_POLL_INTERVAL)


def run_llama_server(
    port: int | None = None,
    *,
    alias: str = "tiny",
    api_key: str | None = None,
    binary: Path | None = None,
    model: Path | None = None,
    extra_args: Sequence[str] = (),
    startup_timeout: float = 30.0,
    log_dir: Path | None = None,
) -> LlamaServer:
    """Start `llama-server` with the tiny model and return it once `/health` is 200.

    `binary` defaults to `find_llama_server()` (which may build it), `model` to the cached tiny
    model. The result is a context manager that stops the server on exit.
    """
    server = LlamaServer(
        find_llama_server() if binary is None else binary,
        tiny_model_path() if model is None else model,
        port,
        alias=alias,
        api_key=api_key,
        extra_args=extra_args,
        startup_timeout=startup_timeout,
        log_dir=log_dir,
    )
    try:
        return server.start()
    except BaseException:
        server.close()
        raise
