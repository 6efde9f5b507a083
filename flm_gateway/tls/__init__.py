"""TLS per listener: one module per mode behind `CertificateSource` (see `base`).

`build_source` picks the mode's source for a listener; `describe_certificates`
reports what each listener serves (for `flm-gateway check`) from the state
directory alone, generating nothing and contacting no CA.
"""

from __future__ import annotations

from pathlib import Path

from flm_gateway.config.listener_settings import ListenerConfig
from flm_gateway.config.loader import LoadedConfig
from flm_gateway.config.problems import Path_
from flm_gateway.config.tls_settings import TlsMode
from flm_gateway.tls import acme, local_http, packaged_ca, self_signed
from flm_gateway.tls.acme_challenges import ChallengeTokens
from flm_gateway.tls.mode import CertificateSource, CertificateStatus, ServedCertificate
from flm_gateway.tls.pki import load_certs_pem

__all__ = [
    "CertificateSource",
    "CertificateStatus",
    "ServedCertificate",
    "build_source",
    "describe_certificates",
    "resolve_config_path",
    "source_problems",
]


def resolve_config_path(loaded: LoadedConfig, path: Path) -> Path:
    """A path from flm.yaml: ~ expanded, relative to the file's directory."""
    path = path.expanduser()
    if path.is_absolute():
        return path
    base = loaded.path.resolve().parent if loaded.path is not None else Path.cwd()
    return base / path


def build_source(
    listener: ListenerConfig,
    loaded: LoadedConfig,
    *,
    root: packaged_ca.LocalRoot | None = None,
    http_tokens: ChallengeTokens | None = None,
    acme_proxy_url: str | None = None,
) -> CertificateSource:
    """The certificate source of one listener (may create keys and certificates on disk)."""
    mode = listener.tls.mode
    state_dir = loaded.state_dir
    if mode == TlsMode.LOCAL_HTTP:
        return local_http.LocalHttpSource(listener)
    if mode == TlsMode.DEV_SELFSIGNED:
        return self_signed.SelfSignedSource(listener, state_dir)
    if mode == TlsMode.PACKAGED_CA:
        return packaged_ca.PackagedCaSource(listener, state_dir, root)
    settings = listener.tls.acme
    bundle = settings.ca_bundle if settings is not None else None
    ca_bundle = resolve_config_path(loaded, bundle) if bundle is not None else None
    if ca_bundle is not None and not ca_bundle.is_file():
        raise FileNotFoundError(
            f"listener {listener.name}: acme.ca_bundle {ca_bundle} does not exist"
        )
    return acme.AcmeSource(
        listener, state_dir, ca_bundle=ca_bundle, http_tokens=http_tokens, proxy_url=acme_proxy_url
    )


def source_problems(listener: ListenerConfig, loaded: LoadedConfig) -> list[tuple[Path_, str]]:
    """What would stop `build_source` for `listener`, found by reading files only (no key
    generated, no CA contacted): (path below the listener's `tls`, message) pairs."""
    mode = listener.tls.mode
    problems: list[tuple[Path_, str]] = []
    try:
        if mode == TlsMode.DEV_SELFSIGNED:
            self_signed.check(listener, loaded.state_dir)
        elif mode == TlsMode.PACKAGED_CA:
            packaged_ca.LocalRoot.load(loaded.state_dir)
        elif mode == TlsMode.HTTPS_ACME:
            acme.check(listener, loaded.state_dir)
    except (OSError, ValueError) as exc:
        message = f"{mode.value}: the stored key or certificate cannot be used: {exc}"
        problems.append((("mode",), message))
    bundle = listener.tls.acme.ca_bundle if listener.tls.acme is not None else None
    if mode == TlsMode.HTTPS_ACME and bundle is not None:
        path = resolve_config_path(loaded, bundle)
        try:
            load_certs_pem(path.read_bytes())
        except OSError as exc:
            problems.append((("acme", "ca_bundle"), f"cannot read {path}: {exc.strerror or exc}"))
        except ValueError:
            problems.append((("acme", "ca_bundle"), f"{path} holds no PEM certificate"))
    return problems


def describe_certificates(loaded: LoadedConfig) -> list[CertificateStatus]:
    """Per listener: subject, issuer, not_after and days_left of what it serves (or a note)."""
    statuses = []
    for listener in loaded.config.listeners:
        mode = listener.tls.mode
        try:
            if mode == TlsMode.LOCAL_HTTP:
                status = local_http.LocalHttpSource(listener).status()
            elif mode == TlsMode.DEV_SELFSIGNED:
                status = self_signed.inspect(listener, loaded.state_dir)
            elif mode == TlsMode.PACKAGED_CA:
                status = packaged_ca.inspect(listener, loaded.state_dir)
            else:
                status = acme.inspect(listener, loaded.state_dir)
        except (OSError, ValueError) as exc:
            status = CertificateStatus(listener.name, mode.value, note=f"unreadable: {exc}")
        statuses.append(status)
    return statuses
