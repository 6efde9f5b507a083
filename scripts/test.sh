#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: installs the Debian packages the
# tests need (real peers: pebble, microsocks, dante, tor, redis, nginx, curl, openssl;
# wrk for the benchmark's smoke test),
# creates .venv with Python >= 3.12, installs the project with its test extras, then
# runs ruff, mypy (strict) and pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(curl openssl pebble bind9 microsocks dante-server tor redis-server nginx-light wrk iproute2 util-linux tmux)

missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing Debian packages: ${missing[*]}" >&2
    $sudo apt-get update -qq -o DPkg::Lock::Timeout=600
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq -o DPkg::Lock::Timeout=600 \
      --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "warning: not a Debian system; tests that need ${missing[*]} will fail" >&2
  fi
fi

PYTHON="$(scripts/find-python.sh)"
VENV="${FLM_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'

echo "== ruff" >&2
"$VENV/bin/ruff" check .
echo "== mypy (strict)" >&2
"$VENV/bin/mypy"
echo "== pytest" >&2
exec "$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
