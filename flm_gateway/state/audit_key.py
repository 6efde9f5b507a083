"""The audit log's MAC key: read from the environment or a file, never from the store.

Sources, first match wins (`state.audit` in flm.yaml):
1. `key`: the secret itself, normally written `${VAR}` so it lives in the
   gateway's environment;
2. `key_file`: a file holding it (a container or systemd credential); it must exist;
3. default: `audit.key` in the state directory, created on first use with 32
   random bytes (hex) by whichever writer opens the store first (gateway or CLI),
   mode 0600, published with a hard link so two writers starting together agree
   on one key and neither reads it half written.

The MAC key is derived from the text (`AuditKey.derive`), so any secret of 32
or more characters works. What each source protects against is spelled out in
docs/security.md ("Audit log: tamper evidence and durability").
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

from flm_gateway.config.state_settings import MIN_AUDIT_KEY_LENGTH, AuditLogSettings
from flm_gateway.state.chain import AuditKey
from flm_gateway.state.store import StateError


def load_audit_key(settings: AuditLogSettings, path: Path) -> AuditKey:
    """The key of `settings`; `path` is the key file (configured or default). Raises StateError."""
    if settings.key is not None:
        return AuditKey.derive(settings.key.get_secret_value())
    if settings.key_file is None and not path.exists():
        _create(path)
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise StateError(
            f"the audit key file {path} (state.audit.key_file) does not exist"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not text"
        raise StateError(f"cannot read the audit key file {path}: {reason}") from None
    if len(text) < MIN_AUDIT_KEY_LENGTH:
        raise StateError(
            f"the audit key file {path} holds fewer than {MIN_AUDIT_KEY_LENGTH} characters"
        )
    return AuditKey.derive(text)


def _create(path: Path) -> None:
    """Write a random key to `path` unless it exists: written whole to a temporary file,
    then linked into place, so a reader never sees it half written."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            os.write(fd, (secrets.token_hex(32) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another writer created it first: use theirs
        finally:
            os.unlink(temporary)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as exc:
        raise StateError(f"cannot create the audit key file {path}: {exc.strerror}") from None
