#!/usr/bin/env bash
# `make check-latest`: install the newest versions pyproject.toml's ranges allow (ignoring
# requirements/lock.txt) into a throw-away virtual environment and run the fast suite there
# (no server subprocesses, no real backbones), so raising a range or refreshing the lock is
# a measured decision. Prints the versions that differ from the lock, then pytest's summary.
# Extra pytest arguments: scripts/check_latest.sh -x -k top_layers
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${PYTHON_BASE:-python3.11}
command -v "$BASE" >/dev/null || BASE=python3
WORK=$(mktemp -d /tmp/taskswap-latest.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
"$BASE" -m venv "$WORK/venv"
PY="$WORK/venv/bin/python"
UV_VERSION=$(sed -n 's/^uv==//p' requirements/lock.txt)
"$PY" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION" 2>&1 \
  | grep -vE "as the .root. user|^WARNING: Location" || true
PYTHON=$PY source scripts/torch_source.sh
export UV_PYTHON="$PY"
echo "torch==2.13.0+cpu" > "$WORK/override.txt"
"$WORK/venv/bin/uv" pip install -q "${UV_TORCH_ARGS[@]}" --override "$WORK/override.txt" \
  --upgrade -e ".[dev,bench,s3,tracing,silver]"
"$WORK/venv/bin/uv" pip install -q --no-deps -r requirements/no-deps.txt
echo "check-latest: versions that differ from requirements/lock.txt:"
"$WORK/venv/bin/uv" pip freeze --exclude-editable | sort > "$WORK/latest.txt"
grep '==' requirements/lock.txt | sort | comm -13 - "$WORK/latest.txt" | sed 's/^/  /'
"$PY" -m pytest -q -m "not real and not server" -p no:cacheprovider "$@"
