#!/usr/bin/env bash
# `make check-latest` / `make check-lowest`: install the newest (or, for every package
# pyproject.toml names, the lowest) versions its ranges allow, ignoring requirements/lock.txt,
# into a throw-away virtual environment and run the fast suite there (no server
# subprocesses, no real backbones): raising a range, refreshing the lock or claiming a lower
# bound is then a measured decision. Prints the versions that differ from the lock, then
# pytest's summary. Extra pytest arguments follow: scripts/check_versions.sh latest -x
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:?usage: scripts/check_versions.sh latest|lowest [pytest args]}; shift
case "$MODE" in
  latest) RESOLVE=(--upgrade) ;;
  lowest) RESOLVE=(--resolution lowest-direct) ;;
  *) echo "check_versions.sh: latest or lowest, not $MODE" >&2; exit 2 ;;
esac
BASE=${PYTHON_BASE:-python3.11}
command -v "$BASE" >/dev/null || BASE=python3
WORK=$(mktemp -d /tmp/taskswap-$MODE.XXXXXX)
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
  "${RESOLVE[@]}" -e ".[dev,bench,s3,tracing,silver]"
"$WORK/venv/bin/uv" pip install -q --no-deps -r requirements/no-deps.txt
"$WORK/venv/bin/uv" pip freeze -q --exclude-editable | grep -v '^pip==' | sort > "$WORK/installed.txt"
DIFF=$(cat requirements/*.txt | grep -E '^[A-Za-z0-9_.-]+==' | sort | comm -13 - "$WORK/installed.txt" || true)
echo "check-$MODE: versions that differ from requirements/lock.txt: ${DIFF:-none}" | sed '2,$s/^/  /'
# (the lock's own check is the one test that must fail on other versions)
PATH="$WORK/venv/bin:$PATH" "$PY" -m pytest -q -m "not real and not server" -p no:cacheprovider \
  --deselect tests/project/test_lock.py::test_the_suite_runs_on_the_locked_versions "$@"
