"""Trust-store plans for every system (the commands are data, so all are checked here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flm_gateway.tls import trust_store
from flm_gateway.tls.pki import generate_key, make_root_ca, sha1_fingerprint

KEY = generate_key()
ROOT = make_root_ca(KEY, "flm-gateway local CA test", days=30)
PEM = Path("/state/tls/packaged-ca/root.pem")
STEM = trust_store.file_stem(ROOT)


def commands(plan: trust_store.Plan) -> list[str]:
    return [step.describe() for step in plan.steps]


def test_debian() -> None:
    assert commands(trust_store.install_plan("debian", ROOT, PEM)) == [
        f"write /usr/local/share/ca-certificates/{STEM}.crt",
        "update-ca-certificates",
    ]
    assert commands(trust_store.uninstall_plan("debian", ROOT, PEM)) == [
        f"remove /usr/local/share/ca-certificates/{STEM}.crt",
        "update-ca-certificates",
    ]


def test_rhel_and_arch() -> None:
    assert commands(trust_store.install_plan("rhel", ROOT, PEM)) == [
        f"write /etc/pki/ca-trust/source/anchors/{STEM}.pem",
        "update-ca-trust extract",
    ]
    assert commands(trust_store.uninstall_plan("arch", ROOT, PEM)) == [
        f"remove /etc/ca-certificates/trust-source/anchors/{STEM}.crt",
        "update-ca-trust extract",
    ]


def test_macos() -> None:
    [install] = trust_store.install_plan("macos", ROOT, PEM).steps
    assert install.command == (
        "security",
        "add-trusted-cert",
        "-d",
        "-r",
        "trustRoot",
        "-k",
        "/Library/Keychains/System.keychain",
        str(PEM),
    )
    remove_trust, delete = trust_store.uninstall_plan("macos", ROOT, PEM).steps
    assert remove_trust.command == ("security", "remove-trusted-cert", "-d", str(PEM))
    assert delete.command == (
        "security",
        "delete-certificate",
        "-Z",
        sha1_fingerprint(ROOT),
        "/Library/Keychains/System.keychain",
    )
    assert len(sha1_fingerprint(ROOT)) == 40


def test_windows() -> None:
    [install] = trust_store.install_plan("windows", ROOT, PEM).steps
    assert install.command == ("certutil", "-addstore", "-f", "Root", str(PEM))
    [remove] = trust_store.uninstall_plan("windows", ROOT, PEM).steps
    assert remove.command == ("certutil", "-delstore", "Root", format(ROOT.serial_number, "x"))


def test_unknown_system() -> None:
    with pytest.raises(trust_store.TrustStoreError, match="choose one of debian"):
        trust_store.install_plan("beos", ROOT, PEM)
    with pytest.raises(trust_store.TrustStoreError, match="choose one of debian"):
        trust_store.uninstall_plan("beos", ROOT, PEM)


@pytest.mark.parametrize(
    ("platform", "os_release", "expected"),
    [
        ("darwin", "", "macos"),
        ("win32", "", "windows"),
        ("linux", "ID=ubuntu\nID_LIKE=debian\n", "debian"),
        ("linux", 'ID="rocky"\nID_LIKE="rhel centos fedora"\n', "rhel"),
        ("linux", "ID=fedora\n", "rhel"),
        ("linux", "ID=arch\n", "arch"),
    ],
)
def test_detect_system(tmp_path: Path, platform: str, os_release: str, expected: str) -> None:
    release = tmp_path / "os-release"
    release.write_text(os_release)
    assert trust_store.detect_system(platform, release, lambda _: None) == expected


def test_detect_system_falls_back_to_the_tools_then_gives_up(tmp_path: Path) -> None:
    missing = tmp_path / "none"
    assert (
        trust_store.detect_system(
            "linux", missing, lambda n: "/x" if n == "update-ca-trust" else None
        )
        == "rhel"
    )
    with pytest.raises(trust_store.TrustStoreError, match="ca export"):
        trust_store.detect_system("linux", missing, lambda _: None)


def test_execute_writes_runs_and_reports_failures(tmp_path: Path) -> None:
    target = tmp_path / "anchors" / "root.crt"
    plan = trust_store.Plan(
        "test", (trust_store.Step(write=target), trust_store.Step(command=("true",)))
    )
    assert trust_store.execute(plan, ROOT) == [f"write {target}", "true"]
    assert target.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert target.stat().st_mode & 0o777 == 0o644
    failing = trust_store.Plan(
        "test",
        (
            trust_store.Step(remove=target),
            trust_store.Step(command=("sh", "-c", "echo nope >&2; exit 3")),
        ),
    )
    with pytest.raises(trust_store.TrustStoreError, match="status 3: nope"):
        trust_store.execute(failing, ROOT)
    assert not target.exists()
    with pytest.raises(trust_store.TrustStoreError, match="No such file"):
        trust_store.execute(
            trust_store.Plan("test", (trust_store.Step(command=("no-such-tool-xyz",)),)), ROOT
        )
