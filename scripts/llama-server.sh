#!/usr/bin/env bash
# Print the path of a working llama.cpp `llama-server` binary, building it once if needed.
#
# Resolution order (the first candidate whose `--version` exits 0 wins):
#   1. $FLM_LLAMA_SERVER                  an explicit choice: if it does not run, fail
#   2. <repo>/../shared/engines/llama-server  (also <script dir>/../../shared/engines/)
#   3. the cache: ${XDG_CACHE_HOME:-$HOME/.cache}/flm-gateway/llama-server/<version>/llama-server
#   4. build from the llama.cpp sources vendored in the PyPI sdist llama-cpp-python==<version>
#      into that cache (cmake + ninja, about 10 min on 2 cores), then print its path.
#
# Only the path goes to stdout; progress and build output go to stderr.
#
# Environment:
#   FLM_LLAMA_SERVER    path of a binary to use as is
#   FLM_PYTHON          a Python with pip, used for `pip download` (default: python3)
#   FLM_LLAMA_NO_BUILD  if 1, fail instead of building from source
#   XDG_CACHE_HOME      cache root (default: $HOME/.cache)
#
# Builds missing Debian packages (cmake ninja-build g++, python3-pip) with apt-get when run as
# root or with passwordless sudo. Concurrent callers are serialised with flock on the cache.
set -euo pipefail

# The sdist pins the llama.cpp sources; the cache is keyed on it.
readonly LLAMA_CPP_PYTHON_VERSION=0.3.36
readonly APT_OPTS=(-o DPkg::Lock::Timeout=600 -q -y)

log() { printf 'llama-server.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# A candidate counts only if it is an executable file that answers --version.
runs() { [[ -f $1 && -x $1 ]] && "$1" --version >/dev/null 2>&1; }

# The portable build (GGML_NATIVE=OFF) still uses AVX2/FMA on x86-64: a CPU without them gets a
# native build in its own cache directory, and no prebuilt binary (--version would pass, then
# the first matrix multiply would die of SIGILL).
cpu_has_avx2() {
  [[ $(uname -m) != x86_64 ]] && return 0
  grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo
}

try_shared() {
  local dir candidate top
  local -a dirs=()
  if top=$(git -C "$script_dir" rev-parse --show-toplevel 2>/dev/null); then
    dirs+=("$top/../shared/engines")
  fi
  dirs+=("$script_dir/../../shared/engines")
  for dir in "${dirs[@]}"; do
    candidate="$dir/llama-server"
    if runs "$candidate"; then
      realpath "$candidate"
      return 0
    fi
  done
  return 1
}

ensure_build_tools() {
  local -a missing=() sudo=()
  command -v cmake >/dev/null || missing+=(cmake)
  command -v ninja >/dev/null || missing+=(ninja-build)
  command -v g++ >/dev/null || missing+=(g++)
  "$python" -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
  ((${#missing[@]} == 0)) && return 0
  log "missing build tools: ${missing[*]}; installing them with apt-get"
  command -v apt-get >/dev/null || die "apt-get not found; install ${missing[*]} yourself"
  if ((EUID != 0)); then
    sudo -n true 2>/dev/null || die "not root and no passwordless sudo; install ${missing[*]}"
    sudo=(sudo -n)
  fi
  "${sudo[@]}" apt-get "${APT_OPTS[@]}" update >&2
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get "${APT_OPTS[@]}" install --no-install-recommends "${missing[@]}" >&2
  if [[ ${missing[*]} == *python3-pip* ]]; then python=python3; fi
}

build() {
  local dest=$1 native=$2 work src started
  ensure_build_tools
  work=$(mktemp -d "$(dirname "$dest")/build.XXXXXX")
  # shellcheck disable=SC2064  # expand $work now: it is local
  trap "rm -rf '$work'" EXIT
  started=$SECONDS

  log "downloading llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION (sdist, ~76 MB) with pip"
  "$python" -m pip download --quiet --disable-pip-version-check --no-deps \
    --no-binary :all: "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$work/dl" >&2
  tar -xzf "$work/dl/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz" -C "$work"
  src="$work/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp"
  [[ -f $src/CMakeLists.txt ]] || die "no llama.cpp sources in the sdist at $src"

  log "configuring (GGML_NATIVE=$native)"
  cmake -S "$src" -B "$work/build" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DGGML_NATIVE="$native" -DGGML_OPENMP=OFF -DGGML_CCACHE=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF >&2

  log "building llama-server with $(nproc) jobs (about 10 min on 2 cores)"
  cmake --build "$work/build" --target llama-server -j "$(nproc)" >&2

  # Install under a temporary name and rename, so a half-copied binary is never visible.
  install -m 0755 "$work/build/bin/llama-server" "$dest.tmp"
  runs "$dest.tmp" || die "the freshly built $dest.tmp does not run"
  mv -f "$dest.tmp" "$dest"
  rm -rf "$work"
  trap - EXIT
  log "built $dest in $((SECONDS - started)) s"
}

main() {
  script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  python=${FLM_PYTHON:-python3}

  if [[ -n ${FLM_LLAMA_SERVER:-} ]]; then
    runs "$FLM_LLAMA_SERVER" || die "FLM_LLAMA_SERVER=$FLM_LLAMA_SERVER does not run (--version)"
    printf '%s\n' "$FLM_LLAMA_SERVER"
    return 0
  fi

  local native=OFF flavour=$LLAMA_CPP_PYTHON_VERSION
  if cpu_has_avx2; then
    try_shared && return 0
  else
    log "this CPU lacks AVX2/FMA: using a native build"
    native=ON flavour+=-native
  fi

  local cache_dir="${XDG_CACHE_HOME:-$HOME/.cache}/flm-gateway/llama-server/$flavour"
  local dest="$cache_dir/llama-server"
  if runs "$dest"; then
    printf '%s\n' "$dest"
    return 0
  fi

  [[ ${FLM_LLAMA_NO_BUILD:-0} == 1 ]] && die "no llama-server found and FLM_LLAMA_NO_BUILD=1"
  mkdir -p "$cache_dir"
  # One builder at a time; whoever waited finds the binary ready.
  exec 9>"$cache_dir/.lock"
  if command -v flock >/dev/null && ! flock -n 9; then
    log "another process is building; waiting for $cache_dir/.lock"
    flock 9
  fi
  if ! runs "$dest"; then
    log "no llama-server found; building it from source into $cache_dir"
    build "$dest" "$native"
  fi
  printf '%s\n' "$dest"
}

main "$@"
