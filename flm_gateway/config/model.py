"""The root of flm.yaml. This module is the one definition of the format:
`schemas/flm.schema.json` is generated from `GatewayConfig` (`flm-gateway schema`)
and a test keeps the committed file equal to it."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import Field

from flm_gateway.config.admin_settings import AdminConfig
from flm_gateway.config.detection_settings import DetectionSettings
from flm_gateway.config.egress_settings import EgressSettings
from flm_gateway.config.engine_settings import EngineConfig
from flm_gateway.config.limit_settings import ConnectionLimits
from flm_gateway.config.listener_settings import ListenerConfig
from flm_gateway.config.reload_settings import ReloadSettings
from flm_gateway.config.request_log_settings import RequestLogConfig
from flm_gateway.config.route_settings import RouteConfig
from flm_gateway.config.security_settings import SecurityConfig
from flm_gateway.config.state_settings import StateSettings
from flm_gateway.config.types import ByteSize, Duration, StrictModel, WorkerCount


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class ServerSettings(StrictModel):
    """Process-wide settings."""

    state_dir: Path = Field(
        Path("~/.local/state/flm-gateway"),
        description=(
            "Directory for certificates, keys, the state database and caches. ~ is expanded; "
            "a relative path is relative to flm.yaml."
        ),
    )
    drain_timeout: Duration = Field(
        30.0,
        description=(
            "On SIGINT/SIGTERM: how long in-flight requests and streams may run after the "
            "listeners stop accepting."
        ),
    )
    body_size_limit: ByteSize = Field(
        32 * 1024 * 1024,
        description="Largest request or buffered response body; larger requests get 413.",
    )
    log_level: LogLevel = Field(LogLevel.INFO, description="debug, info, warning or error.")
    workers: WorkerCount = Field(
        1,
        description=(
            "Gateway processes serving the same listeners (SO_REUSEPORT), under one supervisor "
            "that restarts a crashed one and forwards reload and stop. auto: the usable cores "
            "(CPU affinity and cgroup quota). More than one needs state.backend: redis, so "
            "rate limits stay exact across them. A change needs a restart."
        ),
    )
    limits: ConnectionLimits = Field(
        default_factory=ConnectionLimits,
        description=(
            "Bounds on request heads, timeouts and connections per client: the work a client "
            "can cause before it is authenticated."
        ),
    )


class GatewayConfig(StrictModel):
    """flm.yaml: listeners, engines, routes and policies of one gateway."""

    version: Literal[1] = Field(1, description="Format version of this file; currently 1.")
    server: ServerSettings = Field(
        default_factory=ServerSettings, description="Process-wide settings."
    )
    listeners: list[ListenerConfig] = Field(
        min_length=1, description="Sockets the gateway accepts clients on."
    )
    egress: EgressSettings = Field(
        default_factory=EgressSettings,
        description=(
            "Named ways to reach engines and the ACME CA: direct, socks5 or tor, each failing "
            "closed or open; `default` names the profile of engines without egress:."
        ),
    )
    engines: list[EngineConfig] = Field(
        default_factory=list, description="Inference servers behind the gateway."
    )
    detection: DetectionSettings = Field(
        default_factory=DetectionSettings,
        description="Where `engines detect` looks for engines flm.yaml does not declare.",
    )
    routes: list[RouteConfig] = Field(
        default_factory=list,
        description=(
            "Model names to engines. A model no route names goes to the engines that list it "
            "(routing by discovery)."
        ),
    )
    security: SecurityConfig = Field(
        default_factory=SecurityConfig,
        description="API keys and request policies (listeners may replace some sections).",
    )
    state: StateSettings = Field(
        default_factory=StateSettings,
        description="Where keys, blocks, counters and the audit log are kept.",
    )
    admin: AdminConfig = Field(
        default_factory=AdminConfig,
        description="The admin listener serving /metrics, /healthz and /readyz (loopback).",
    )
    reload: ReloadSettings = Field(
        default_factory=ReloadSettings, description="Reloading flm.yaml while serving."
    )
    request_log: RequestLogConfig = Field(
        default_factory=RequestLogConfig,
        description="The per-request log searched by `flm-gateway logs`.",
    )
