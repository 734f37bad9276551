#!/usr/bin/env bash
# Time the README's two commands as a new user meets them: a fresh clone of HEAD, an empty
# uv cache (every package downloaded again), no virtual environment, no converted backbones,
# no demo adapters. Prints the seconds of
#   1. `make setup`             (the install step of `make test` and `make serve`);
#   2. `make serve`, to /readyz (install, converting the embedded backbones, training and
#                                registering the demo tasks, starting the server);
# then stops the server and removes everything it made. Debian packages are not removed
# (setup installs them once, with apt; their time is not counted here).
#
#   scripts/time_fresh_install.sh        # docs/install.md quotes its output
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/taskswap-fresh.XXXXXX)
SERVER=""
cleanup() {
  [ -n "$SERVER" ] && kill -TERM -- "-$SERVER" 2>/dev/null && sleep 2; kill -KILL -- "-$SERVER" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
git clone -q "$REPO" "$WORK/clone"
cd "$WORK/clone"
export UV_CACHE_DIR="$WORK/uv-cache" PIP_NO_CACHE_DIR=1 TASKSWAP_HOME="$WORK/home"
unset TASKSWAP_VENV PYTHON VIRTUAL_ENV
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

T0=$(date +%s.%N)
setsid make -s serve PORT="$PORT" > "$WORK/serve.log" 2>&1 &
SERVER=$!
until curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null; do
  kill -0 "$SERVER" 2>/dev/null || { tail -30 "$WORK/serve.log"; echo "make serve exited" >&2; exit 1; }
  sleep 1
done
T1=$(date +%s.%N)
printf 'make serve to /readyz (install, backbones, demo tasks, server): %.1f s\n' "$(echo "$T1 - $T0" | bc)"
curl -s "http://127.0.0.1:$PORT/v1/models" -o /dev/null -w 'GET /v1/models: %{http_code}\n' || true
kill -TERM -- "-$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; SERVER=""

rm -rf .venv "$UV_CACHE_DIR"  # the install step alone, from nothing again
T0=$(date +%s.%N)
make -s setup > "$WORK/setup.log" 2>&1 || { tail -20 "$WORK/setup.log"; exit 1; }
T1=$(date +%s.%N)
printf 'make setup (the install step of make test): %.1f s\n' "$(echo "$T1 - $T0" | bc)"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
