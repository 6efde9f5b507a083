#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: installs the Debian packages the tests need
# (real peers: pebble, microsocks, dante, tor, redis, nginx, curl, openssl; wrk for the
# benchmark's smoke test), creates .venv with Python >= 3.12, installs the project with its
# test extras, then runs ruff, mypy (strict), the import contracts and pytest. Then it runs
# pytest again on the oldest supported Python (3.12, pyproject's requires-python) in
# .venv-floor, so the floor stays true: `scripts/find-python.sh --floor` finds it (or
# Debian's python3.12 package is installed where the distribution has one); with none,
# the run fails. FLM_SKIP_FLOOR=1
# skips that second run (say so when you report a result). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(curl openssl pebble bind9 microsocks dante-server tor redis-server nginx-light wrk iproute2 util-linux tmux)
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# apt_install PACKAGE...: install Debian packages (after one `apt-get update`).
apt_updated=""
apt_install() {
  echo "installing Debian packages: $*" >&2
  [ -n "$apt_updated" ] || $sudo apt-get update -qq -o DPkg::Lock::Timeout=600
  apt_updated=1
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq -o DPkg::Lock::Timeout=600 \
    --no-install-recommends "$@" >/dev/null
}

# venv_for PYTHON VENV CHECK: (re)create VENV from PYTHON unless its python passes the
# Python expression CHECK, then install the project with its test extras.
venv_for() {
  if [ ! -x "$2/bin/python" ] || ! "$2/bin/python" -c "import sys; sys.exit(not ($3))"; then
    rm -rf "$2"
    "$1" -m venv "$2"
  fi
  "$2/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
  "$2/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
}

missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    apt_install "${missing[@]}"
  else
    echo "warning: not a Debian system; tests that need ${missing[*]} will fail" >&2
  fi
fi

VENV="${FLM_VENV:-.venv}"
venv_for "$(scripts/find-python.sh)" "$VENV" "sys.version_info >= (3, 12)"

echo "== ruff" >&2
"$VENV/bin/ruff" check .
echo "== mypy (strict)" >&2
"$VENV/bin/mypy"
echo "== import contracts (import-linter, pyproject.toml)" >&2
"$VENV/bin/lint-imports" --no-cache
echo "== pytest ($("$VENV/bin/python" -V))" >&2
"$VENV/bin/python" -m pytest -p no:cacheprovider "$@"

# The same tests on the oldest Python that pyproject.toml admits.
if [ "${FLM_SKIP_FLOOR:-}" = 1 ]; then
  echo "== pytest on the oldest supported Python: skipped (FLM_SKIP_FLOOR=1)" >&2
  exit 0
fi
floor="$(sed -n 's/^FLOOR=//p' scripts/find-python.sh)"
if ! FLOOR_PYTHON="$(scripts/find-python.sh --floor 2>/dev/null)"; then
  if command -v apt-get >/dev/null 2>&1; then
    [ -n "$apt_updated" ] || $sudo apt-get update -qq -o DPkg::Lock::Timeout=600 || true
    apt_updated=1
    if apt-cache policy "python$floor" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
      apt_install "python$floor" "python$floor-venv"
    fi
  fi
  if ! FLOOR_PYTHON="$(scripts/find-python.sh --floor)"; then
    echo "set FLM_SKIP_FLOOR=1 to skip the run on Python $floor" >&2
    exit 1
  fi
fi
FLOOR_VENV="${FLM_FLOOR_VENV:-.venv-floor}"
venv_for "$FLOOR_PYTHON" "$FLOOR_VENV" "sys.version_info[:2] == (${floor%%.*}, ${floor#*.})"
echo "== pytest ($("$FLOOR_VENV/bin/python" -V), the oldest supported)" >&2
exec "$FLOOR_VENV/bin/python" -m pytest -p no:cacheprovider "$@"
