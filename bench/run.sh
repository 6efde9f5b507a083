#!/usr/bin/env bash
# One command for the whole benchmark: direct vs nginx vs flm-gateway, side by side.
#   bench/run.sh                         # every scenario (~15-25 min on 2 cores), tables on stdout
#   bench/run.sh --quick                 # smoke run of every scenario (~1 min)
#   bench/run.sh --scenario standard     # only the rounds (~2.5 min); also gomodel, onthebench,
#                                        # memory, soak, startup, workers (comma-separated)
#   bench/run.sh --workers 1,2,4         # gateway (server.workers) and nginx per worker count
#   bench/run.sh --scenario soak --requests 30000   # a shorter soak
#   bench/run.sh --write-docs            # also put the results into docs/performance.md
# Needs wrk and nginx (Debian: wrk nginx-light) and a Python with the project installed
# ($PYTHON, else .venv/bin/python, else python3); uvloop (extra `bench`) is used if present.
# Every process the run starts is stopped when it ends, fails or is interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
for tool in wrk nginx; do
  command -v "$tool" >/dev/null 2>&1 || { echo "bench: $tool is not installed (apt-get install wrk nginx-light)" >&2; exit 1; }
done
"$PYTHON" -c 'import flm_gateway, mitmproxy, aiohttp' 2>/dev/null || {
  echo "bench: $PYTHON cannot import the project; run scripts/test.sh or pip install -e '.[test,bench]', or set PYTHON" >&2
  exit 1
}

"$PYTHON" -m bench "$@" &
bench_pid=$!
stop() { kill -TERM "$bench_pid" 2>/dev/null || true; wait "$bench_pid" 2>/dev/null || true; }
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM
wait "$bench_pid"
