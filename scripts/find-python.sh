#!/usr/bin/env bash
# Prints the path of a Python >= 3.12 interpreter (mitmproxy 12 needs it), preferring 3.13.
# Looks at $FLM_PYTHON, then PATH, then pyenv's and the usual install directories.
# Exits 1 with an explanation when there is none.
#
# --floor: prints a Python of exactly the oldest supported version (FLOOR below, the same
# as pyproject.toml's requires-python; a test checks that they agree), so the test suite
# can run on it too. Looks at $FLM_FLOOR_PYTHON, then the same places.
set -euo pipefail

FLOOR=3.12

mode=best
if [ "${1:-}" = "--floor" ]; then
  mode=floor
fi

works() {
  local check="sys.version_info >= (3, 12)"
  [ "$mode" = floor ] && check="sys.version_info[:2] == (${FLOOR%%.*}, ${FLOOR#*.})"
  [ -x "$1" ] || command -v "$1" >/dev/null 2>&1 || return 1
  "$1" -c "import sys, venv, ensurepip; sys.exit(0 if $check else 1)" >/dev/null 2>&1
}

candidates=()
if [ "$mode" = floor ]; then
  versions=("$FLOOR")
  [ -n "${FLM_FLOOR_PYTHON:-}" ] && candidates+=("$FLM_FLOOR_PYTHON")
else
  versions=(3.13 3.14 3.12)
  [ -n "${FLM_PYTHON:-}" ] && candidates+=("$FLM_PYTHON")
fi
for v in "${versions[@]}"; do
  candidates+=("python$v")
  for root in "${PYENV_ROOT:-$HOME/.pyenv}/versions" /root/.pyenv/versions; do
    for dir in "$root"/"$v".*; do
      [ -d "$dir" ] && candidates+=("$dir/bin/python$v")
    done
  done
  candidates+=("/usr/local/bin/python$v" "/usr/bin/python$v" "/opt/homebrew/bin/python$v")
done
[ "$mode" = best ] && candidates+=(python3)

for candidate in "${candidates[@]}"; do
  if works "$candidate"; then
    if command -v "$candidate" >/dev/null 2>&1; then command -v "$candidate"; else echo "$candidate"; fi
    exit 0
  fi
done

if [ "$mode" = floor ]; then
  cat >&2 <<MSG
found no Python $FLOOR (the oldest version flm-gateway supports) to run the tests on.
Install one (\`apt-get install python$FLOOR python$FLOOR-venv\` where the distribution has it,
or \`pyenv install $FLOOR\`), or point FLM_FLOOR_PYTHON at one.
MSG
  exit 1
fi

cat >&2 <<'MSG'
flm-gateway needs Python 3.12 or newer (mitmproxy 12 requires it) and found none.
Install one, e.g. `apt-get install python3.13 python3.13-venv` (Debian 13 / Ubuntu 24.04+),
`brew install python@3.13`, or pyenv; or point FLM_PYTHON at an interpreter.
Or run the container image: docker build -t flm-gateway . && docker run -p 8088:8088 flm-gateway
MSG
exit 1
