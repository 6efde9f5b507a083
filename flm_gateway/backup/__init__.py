"""Backups of one gateway: its config and its state directory, in one file.

Format (version 1). The payload is a gzip-compressed tar holding:
- `manifest.json`: `{"format": "flm-gateway-backup", "version": 1, "created",
  "gateway_version", "config": "config/flm.yaml" or null, "files": [{"path",
  "size", "sha256"}, ...]}`;
- `config/flm.yaml`: the config file as written (secrets given as `${VAR}`
  stay references: the environment is not backed up);
- `state/...`: the state directory: the state database (keys, block list,
  audit log; copied with SQLite's online backup, so a running gateway is fine;
  request log rows left out unless asked for), and every other file such as
  the TLS material of the packaged CA and the ACME account, minus the pid file,
  the reload status, SQLite journals and temporary files.

With a passphrase the payload is sealed: `FLMGW-BACKUP\\0`, a format byte (1),
a two-byte length and a JSON header (`kdf` scrypt with `n`, `r`, `p`, `salt`;
`cipher` AES-256-GCM with `nonce`), then the ciphertext with its tag. The key is
scrypt(passphrase); the header is authenticated as associated data, so neither
it nor the payload can be changed unnoticed. Without a passphrase the file is the
plain payload (created with mode 0600).

Restore validates everything before it writes anything (see `restore`).
"""
