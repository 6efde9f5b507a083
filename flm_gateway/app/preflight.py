"""The checks behind `flm-gateway check`: is this deployment able to serve?

Each check yields `CheckResult`s (ok, warn or fail; a failure says what to do):
- config: the file validates (every problem with its file:line);
- engines: each engine answers its health check now, through its egress
  profile exactly as the gateway would reach it (a Tor-only engine is checked
  through Tor, never directly), with its state and model count;
- listeners: every listener address and the admin address can be bound, or is
  held by the gateway already running from this state directory;
- certificates: each TLS listener's certificate is valid, with days left
  (warn under `EXPIRY_WARNING_DAYS`);
- state: the state directory exists or can be created, the state store answers
  (the SQLite file takes a write lock, or Redis answers) and the request log's
  database is writable;
- keys: where API keys are required (flm.yaml decides), warning about a listener
  that requires one while no active key may be used there (every request would
  get 401);
- the loader's warnings (an engine URL it corrected), with their file:line.
Nothing is changed: no file is written except a state directory and empty
database that did not exist yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import psutil

from flm_gateway.config import LoadedConfig
from flm_gateway.config.listener_settings import auth_summary
from flm_gateway.config.state_settings import StateBackend
from flm_gateway.config.types import format_host_port
from flm_gateway.engines.adapter import HealthState
from flm_gateway.engines.directory import EngineDirectory
from flm_gateway.requestlog.log_table import connect, request_log_path
from flm_gateway.security.keys import all_keys, keyless_listeners
from flm_gateway.state import describe_store, open_store, sqlite_path
from flm_gateway.state.process import running_pid
from flm_gateway.state.store import KeyRecord
from flm_gateway.tls.certificate_status import EXPIRY_WARNING_DAYS, certificate_statuses

LOW_DISK_BYTES = 200 * 1024 * 1024

DirectoryFactory = Callable[[LoadedConfig], EngineDirectory]
"""Builds the engine directory to check, with the engines' egress (as the gateway does)."""


class Level(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class CheckResult:
    """One line of `check` output."""

    area: str
    subject: str
    level: Level
    message: str
    fix: str = ""

    def line(self) -> str:
        where = f"{self.area} {self.subject}" if self.subject else self.area
        text = f"{self.level.value.upper():<4}  {where}: {self.message}"
        return f"{text} -> {self.fix}" if self.fix else text


async def check_engines(
    loaded: LoadedConfig, directory_factory: DirectoryFactory, timeout: float
) -> list[CheckResult]:
    engines = loaded.config.engines
    if not engines:
        return [
            CheckResult(
                "engines",
                "",
                Level.FAIL,
                "no engine is configured",
                "add one under engines: (see flm-gateway engines detect)",
            )
        ]
    directory = directory_factory(loaded)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(directory.check_all(), timeout)
    finally:
        await directory.close()
    results = []
    for index, config in enumerate(engines):
        state = directory.get(config.name)
        models = len(state.models) + len(config.models)
        where = f"{config.url} ({config.kind.value})"
        if state.state is HealthState.HEALTHY:
            results.append(
                CheckResult(
                    "engine",
                    config.name,
                    Level.OK,
                    f"{state.state.value}, {models} model(s) at {where}",
                )
            )
        elif state.state is HealthState.DEGRADED:
            results.append(
                CheckResult(
                    "engine",
                    config.name,
                    Level.WARN,
                    f"{state.state.value} at {where}: {state.detail}",
                    f"load a model in the engine, or list it under engines[{index}].models",
                )
            )
        else:
            results.append(
                CheckResult(
                    "engine",
                    config.name,
                    Level.FAIL,
                    f"unreachable at {where}: {state.detail}",
                    f"start the engine, or correct engines[{index}].url",
                )
            )
    return results


def _held_by(pid: int, address: tuple[str, int]) -> bool:
    try:
        connections = psutil.Process(pid).net_connections(kind="inet")
    except (psutil.Error, OSError):
        return False
    return any(
        c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == address[1]
        for c in connections
    )


def check_bind(
    area: str, name: str, address: tuple[str, int], field: str, gateway_pid: int | None
) -> CheckResult:
    """Whether `address` can be bound now (or is held by our running gateway)."""
    shown = format_host_port(address)
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            if gateway_pid is not None and _held_by(gateway_pid, address):
                return CheckResult(
                    area,
                    name,
                    Level.OK,
                    f"{shown} is served by the running gateway (pid {gateway_pid})",
                )
            return CheckResult(
                area,
                name,
                Level.FAIL,
                f"{shown} is in use by another process",
                f"stop that process or choose another port for {field}",
            )
        if exc.errno == errno.EACCES:
            return CheckResult(
                area,
                name,
                Level.FAIL,
                f"{shown}: permission denied",
                f"ports below 1024 need privileges; use a higher port for {field}",
            )
        if exc.errno == errno.EADDRNOTAVAIL:
            return CheckResult(
                area,
                name,
                Level.FAIL,
                f"{shown}: no network interface has this address",
                f"use an address of this machine (or 0.0.0.0) for {field}",
            )
        return CheckResult(
            area, name, Level.FAIL, f"{shown}: {exc.strerror or exc}", f"fix {field}"
        )
    return CheckResult(area, name, Level.OK, f"{shown} can be bound")


def check_listeners(loaded: LoadedConfig) -> Iterator[CheckResult]:
    pid = running_pid(loaded.state_dir)
    for index, listener in enumerate(loaded.config.listeners):
        yield check_bind("listener", listener.name, listener.bind, f"listeners[{index}].bind", pid)
    admin = loaded.config.admin
    if admin.enabled:
        yield check_bind("admin", "listener", admin.bind, "admin.bind", pid)


def check_certificates(loaded: LoadedConfig) -> Iterator[CheckResult]:
    for status in certificate_statuses(loaded):
        subject = f"{status.listener} ({status.mode})"
        if status.days_left is None:
            yield CheckResult("certificate", subject, Level.OK, status.note or "no certificate yet")
        elif status.days_left < 0:
            yield CheckResult(
                "certificate",
                subject,
                Level.FAIL,
                f"expired {-status.days_left:.0f} day(s) ago ({status.subject})",
                "renew it: restart the gateway (ACME renews on start) or replace the certificate",
            )
        elif status.days_left < EXPIRY_WARNING_DAYS:
            yield CheckResult(
                "certificate",
                subject,
                Level.WARN,
                f"expires in {status.days_left:.0f} day(s) ({status.subject})",
                "check that renewal works (see the gateway log)",
            )
        else:
            yield CheckResult(
                "certificate",
                subject,
                Level.OK,
                f"valid, {status.days_left:.0f} day(s) left ({status.subject})",
            )


def _writable_sqlite(path: Path) -> str | None:
    """None when `path` (created if missing) takes a write lock, else the reason."""
    try:
        connection = connect(path)
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("ROLLBACK")
        finally:
            connection.close()
    except (sqlite3.Error, OSError) as exc:
        return str(exc)
    return None


def check_state(loaded: LoadedConfig) -> Iterator[CheckResult]:
    """The state directory, the state store (SQLite file or Redis) and the request log file."""
    state_dir = loaded.state_dir
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        yield CheckResult(
            "state",
            str(state_dir),
            Level.FAIL,
            f"cannot create the state directory: {exc.strerror}",
            "create it writable for this user, or set server.state_dir",
        )
        return
    store = describe_store(loaded)
    if loaded.config.state.backend is StateBackend.SQLITE:
        problem = _writable_sqlite(sqlite_path(loaded))
    else:
        problem = _redis_problem(loaded)
    if problem is not None:
        yield CheckResult(
            "state",
            store,
            Level.FAIL,
            f"the state store is not usable: {problem}",
            "make the state directory and its database writable for this user"
            if loaded.config.state.backend is StateBackend.SQLITE
            else "start Redis or correct state.redis_url",
        )
        return
    requests = request_log_path(loaded)
    if requests != sqlite_path(loaded) or loaded.config.state.backend is not StateBackend.SQLITE:
        problem = _writable_sqlite(requests)
        if problem is not None:
            yield CheckResult(
                "state",
                str(requests),
                Level.FAIL,
                f"the request log is not writable: {problem}",
                "make the state directory writable for this user",
            )
            return
    if os.stat(state_dir).st_mode & 0o077:
        yield CheckResult(
            "state",
            str(state_dir),
            Level.WARN,
            "the state directory is readable by other users",
            f"chmod 700 {state_dir}",
        )
    free = shutil.disk_usage(state_dir).free
    if free < LOW_DISK_BYTES:
        yield CheckResult(
            "state",
            str(state_dir),
            Level.WARN,
            f"only {free // (1024 * 1024)} MiB free",
            "free disk space or shorten request_log.retention",
        )
    else:
        yield CheckResult("state", store, Level.OK, "writable")


def _redis_problem(loaded: LoadedConfig) -> str | None:
    try:
        store = open_store(loaded, "check")
        try:
            store.generation()
        finally:
            store.close()
    except Exception as exc:  # StateError, connection errors: reported, never raised
        return str(exc)
    return None


def check_keys(loaded: LoadedConfig, stored: list[KeyRecord]) -> Iterator[CheckResult]:
    """Where keys are required, and listeners no active key can reach (warn)."""
    config = loaded.config
    keys = all_keys(config.security.keys, stored)
    for name in keyless_listeners(config.listeners, keys, time.time()):
        scoped = any(key.scopes.listeners for key in keys)
        yield CheckResult(
            "auth",
            name,
            Level.WARN,
            "requires an API key (auth: api-key) but no active key may be used on it: "
            "every request gets 401",
            "flm-gateway keys create --name NAME"
            + (f" --scopes listener:{name}" if scoped else ""),
        )
    yield CheckResult("auth", "", Level.OK, "; ".join(auth_summary(config.listeners)))


def _stored_keys(loaded: LoadedConfig) -> list[KeyRecord] | None:
    try:
        store = open_store(loaded, "check")
        try:
            return store.list_keys()
        finally:
            store.close()
    except Exception:  # reported by check_state
        return None


def config_warnings(loaded: LoadedConfig) -> Iterator[CheckResult]:
    for warning in loaded.warnings:
        yield CheckResult(
            "config", loaded.display_name, Level.WARN, str(warning), "correct this line"
        )


async def run_checks(
    loaded: LoadedConfig, directory_factory: DirectoryFactory, engine_timeout: float
) -> list[CheckResult]:
    """Every check after the config validated."""
    results = [
        CheckResult(
            "config",
            loaded.display_name,
            Level.OK,
            f"valid ({len(loaded.config.listeners)} listener(s), "
            f"{len(loaded.config.engines)} engine(s), {len(loaded.config.routes)} route(s))",
        )
    ]
    results += config_warnings(loaded)
    results += await check_engines(loaded, directory_factory, engine_timeout)
    results += check_listeners(loaded)
    results += check_certificates(loaded)
    results += check_state(loaded)
    if not any(r.area == "state" and r.level is Level.FAIL for r in results):
        stored = _stored_keys(loaded)
        if stored is not None:
            results += check_keys(loaded, stored)
    return results
