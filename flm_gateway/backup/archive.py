"""The backup payload: a tar.gz with a manifest, built from files and read back strictly.

Reading validates before anything is trusted: only regular files, only names
under `config/`, `state/` and `store/` (no absolute paths, no `..`, no links or
devices), each one listed in the manifest with the right size and SHA-256,
nothing listed missing, and a bounded total size.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from flm_gateway import __version__

FORMAT_NAME = "flm-gateway-backup"
VERSION = 1
MANIFEST = "manifest.json"
CONFIG_MEMBER = "config/flm.yaml"
STATE_PREFIX = "state/"
STORE_MEMBER = "store/state.db"
"""The SQLite state store when `state.sqlite_path` puts it outside the state directory."""
MAX_TOTAL = 2 * 1024**3


class BackupFormatError(Exception):
    """The backup is not a valid flm-gateway backup; nothing was written."""


@dataclass(frozen=True)
class BackupContents:
    """A validated backup: its manifest, its config text and its state files."""

    manifest: Mapping[str, Any]
    config: str | None
    state_files: Mapping[str, bytes]
    """Relative POSIX path inside the state directory -> content."""
    store: bytes | None = None
    """The state store's SQLite file when it lives outside the state directory."""


def build_payload(
    config: str | None, state_files: Mapping[str, bytes], store: bytes | None = None
) -> bytes:
    """The tar.gz payload of a backup."""
    files: dict[str, bytes] = {}
    if config is not None:
        files[CONFIG_MEMBER] = config.encode("utf-8")
    for name, data in sorted(state_files.items()):
        files[STATE_PREFIX + name] = data
    if store is not None:
        files[STORE_MEMBER] = store
    manifest = {
        "format": FORMAT_NAME,
        "version": VERSION,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "gateway_version": __version__,
        "config": CONFIG_MEMBER if config is not None else None,
        "store": STORE_MEMBER if store is not None else None,
        "files": [
            {"path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for path, data in files.items()
        ],
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path, data in [(MANIFEST, json.dumps(manifest, indent=2).encode()), *files.items()]:
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o600
            info.mtime = int(datetime.datetime.now(datetime.UTC).timestamp())
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _safe_name(name: str) -> str:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or name != str(path) or not path.parts:
        raise BackupFormatError(f"unsafe path in the backup: {name!r}")
    return name


def read_payload(payload: bytes) -> BackupContents:
    """Parse and fully validate a payload. Raises BackupFormatError."""
    members: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(payload), mode="r:gz") as tar:
            for info in tar:
                name = _safe_name(info.name)
                if not info.isfile():
                    raise BackupFormatError(f"{name!r} is not a regular file")
                if name in members:
                    raise BackupFormatError(f"{name!r} appears twice")
                total += info.size
                if total > MAX_TOTAL:
                    raise BackupFormatError("the backup is larger than any gateway state")
                handle = tar.extractfile(info)
                if handle is None:
                    raise BackupFormatError(f"{name!r} cannot be read")
                members[name] = handle.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BackupFormatError(f"not a readable backup archive: {exc}") from None
    try:
        manifest = json.loads(members.pop(MANIFEST))
    except KeyError:
        raise BackupFormatError("the backup has no manifest.json") from None
    except ValueError as exc:
        raise BackupFormatError(f"manifest.json is not JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise BackupFormatError("this is not an flm-gateway backup")
    if manifest.get("version") != VERSION:
        raise BackupFormatError(
            f"backup format version {manifest.get('version')!r}; this gateway reads {VERSION}"
        )
    listed = {entry["path"]: entry for entry in manifest.get("files", [])}
    if set(listed) != set(members):
        missing = sorted(set(listed) - set(members))
        extra = sorted(set(members) - set(listed))
        raise BackupFormatError(
            f"files do not match the manifest (missing {missing}, extra {extra})"
        )
    for name, data in members.items():
        entry = listed[name]
        if len(data) != entry.get("size") or hashlib.sha256(data).hexdigest() != entry.get(
            "sha256"
        ):
            raise BackupFormatError(f"{name!r} is damaged (size or checksum differs)")
        if name not in (CONFIG_MEMBER, STORE_MEMBER) and not name.startswith(STATE_PREFIX):
            raise BackupFormatError(f"unexpected file {name!r} in the backup")
    config_bytes = members.pop(CONFIG_MEMBER, None)
    store = members.pop(STORE_MEMBER, None)
    try:
        config = config_bytes.decode("utf-8") if config_bytes is not None else None
    except UnicodeDecodeError:
        raise BackupFormatError("the config in the backup is not UTF-8") from None
    state = {name[len(STATE_PREFIX) :]: data for name, data in members.items()}
    return BackupContents(manifest=manifest, config=config, state_files=state, store=store)
