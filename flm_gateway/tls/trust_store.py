"""Putting the packaged-ca root into the operating system's trust store, and taking it out.

A plan is data (files to write or remove, commands to run), built per system
and then executed, so every system's commands are unit-tested on any machine:
- debian (Debian, Ubuntu): /usr/local/share/ca-certificates/<name>.crt + update-ca-certificates
- rhel (RHEL, Fedora, CentOS, Rocky, Alma, SUSE-likes with update-ca-trust):
  /etc/pki/ca-trust/source/anchors/<name>.pem + update-ca-trust extract
- arch: /etc/ca-certificates/trust-source/anchors/<name>.crt + update-ca-trust extract
- macos: security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain;
  removal: security remove-trusted-cert -d, then security delete-certificate -Z <SHA-1>
- windows: certutil -addstore -f Root <file>; removal: certutil -delstore Root <serial>
The file name carries the root's fingerprint, so uninstall removes exactly this
root. Browsers with their own store (Firefox, Chrome's NSS on Linux) are not
covered; docs/tls.md says how. All of this needs administrator rights.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from flm_gateway.tls.pki import certs_to_pem, fingerprint, sha1_fingerprint

SYSTEMS = ("debian", "rhel", "arch", "macos", "windows")
MACOS_KEYCHAIN = "/Library/Keychains/System.keychain"
_LINUX_ANCHORS = {
    "debian": (Path("/usr/local/share/ca-certificates"), ".crt", ("update-ca-certificates",)),
    "rhel": (Path("/etc/pki/ca-trust/source/anchors"), ".pem", ("update-ca-trust", "extract")),
    "arch": (
        Path("/etc/ca-certificates/trust-source/anchors"),
        ".crt",
        ("update-ca-trust", "extract"),
    ),
}


class TrustStoreError(Exception):
    """The trust store could not be changed; the message says what to do."""


@dataclass(frozen=True)
class Step:
    """One action: write the root to `write`, remove `remove`, or run `command`."""

    write: Path | None = None
    remove: Path | None = None
    command: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.write is not None:
            return f"write {self.write}"
        if self.remove is not None:
            return f"remove {self.remove}"
        return " ".join(self.command)


@dataclass(frozen=True)
class Plan:
    system: str
    steps: tuple[Step, ...] = field(default_factory=tuple)


def file_stem(cert: x509.Certificate) -> str:
    return f"flm-gateway-root-{fingerprint(cert)[:16]}"


def detect_system(
    platform: str = sys.platform,
    os_release: Path = Path("/etc/os-release"),
    which: Callable[[str], str | None] = shutil.which,
) -> str:
    """debian, rhel, arch, macos or windows; raises TrustStoreError when unknown."""
    if platform == "darwin":
        return "macos"
    if platform.startswith(("win", "cygwin")):
        return "windows"
    ids: list[str] = []
    if os_release.exists():
        for line in os_release.read_text(errors="replace").splitlines():
            key, _, value = line.partition("=")
            if key in ("ID", "ID_LIKE"):
                ids += value.strip().strip('"').lower().split()
    for system, names in (
        ("debian", ("debian", "ubuntu")),
        ("rhel", ("rhel", "fedora", "centos", "rocky", "almalinux", "suse", "opensuse")),
        ("arch", ("arch",)),
    ):
        if any(name in ids for name in names):
            return system
    if which("update-ca-certificates"):
        return "debian"
    if which("update-ca-trust"):
        return "rhel"
    raise TrustStoreError(
        "cannot tell how this system manages trusted CAs; install the root by hand "
        "(flm-gateway ca export FILE) or pass --system"
    )


def install_plan(system: str, cert: x509.Certificate, pem_path: Path) -> Plan:
    """Steps that make `cert` (stored at `pem_path`) a trusted root on `system`."""
    if system in _LINUX_ANCHORS:
        anchor, command = _linux_anchor(system, cert)
        return Plan(system, (Step(write=anchor), Step(command=command)))
    pem = str(pem_path)
    macos = ("security", "add-trusted-cert", "-d", "-r", "trustRoot", "-k", MACOS_KEYCHAIN, pem)
    return _command_plan(
        system, {"macos": [macos], "windows": [("certutil", "-addstore", "-f", "Root", pem)]}
    )


def uninstall_plan(system: str, cert: x509.Certificate, pem_path: Path) -> Plan:
    """Steps that remove `cert` from the trust store of `system`."""
    if system in _LINUX_ANCHORS:
        anchor, command = _linux_anchor(system, cert)
        return Plan(system, (Step(remove=anchor), Step(command=command)))
    return _command_plan(
        system,
        {
            "macos": [
                ("security", "remove-trusted-cert", "-d", str(pem_path)),
                ("security", "delete-certificate", "-Z", sha1_fingerprint(cert), MACOS_KEYCHAIN),
            ],
            "windows": [("certutil", "-delstore", "Root", format(cert.serial_number, "x"))],
        },
    )


def _linux_anchor(system: str, cert: x509.Certificate) -> tuple[Path, tuple[str, ...]]:
    """Where `system` keeps `cert` as an anchor file, and the command that rebuilds its store."""
    directory, suffix, command = _LINUX_ANCHORS[system]
    return directory / f"{file_stem(cert)}{suffix}", command


def _command_plan(system: str, commands: dict[str, list[tuple[str, ...]]]) -> Plan:
    """The plan of a system whose store is changed by commands alone (macOS, Windows)."""
    if system not in commands:
        raise TrustStoreError(f"unknown system {system!r}; choose one of {', '.join(SYSTEMS)}")
    return Plan(system, tuple(Step(command=command) for command in commands[system]))


def execute(
    plan: Plan,
    cert: x509.Certificate,
    run: Callable[[Sequence[str]], subprocess.CompletedProcess[str]] | None = None,
) -> list[str]:
    """Carry out `plan`; the descriptions of the steps done. Raises TrustStoreError."""
    runner = run or _run
    done: list[str] = []
    for step in plan.steps:
        try:
            if step.write is not None:
                step.write.parent.mkdir(parents=True, exist_ok=True)
                step.write.write_bytes(certs_to_pem([cert]))
                step.write.chmod(0o644)
            elif step.remove is not None:
                step.remove.unlink(missing_ok=True)
            else:
                result = runner(step.command)
                if result.returncode != 0:
                    output = (result.stderr or result.stdout or "").strip()[-400:]
                    raise TrustStoreError(
                        f"{step.describe()} failed with status {result.returncode}"
                        + (f": {output}" if output else "")
                    )
        except PermissionError as exc:
            raise TrustStoreError(
                f"{step.describe()}: permission denied ({exc.filename}); changing the system "
                "trust store needs administrator rights (run with sudo)"
            ) from None
        except FileNotFoundError as exc:
            raise TrustStoreError(f"{step.describe()}: {exc.strerror}: {exc.filename}") from None
        done.append(step.describe())
    return done


def _run(command: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(command), capture_output=True, text=True, timeout=120, check=False)
