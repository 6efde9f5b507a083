#!/usr/bin/env bash
# Install flm-gateway into .venv (finding a Python >= 3.12 by itself) and run it.
# Arguments go to flm-gateway; with none it serves ./flm.yaml, or the built-in
# default (127.0.0.1:8088 in front of engines on their default local ports).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${FLM_VENV:-$here/.venv}"
if [ ! -x "$VENV/bin/flm-gateway" ]; then
  PYTHON="$("$here/scripts/find-python.sh")"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$here"
fi
exec "$VENV/bin/flm-gateway" "$@"
