#!/usr/bin/env bash
# Refresh the lock files from pyproject.toml's ranges (`make lock`), with uv:
#   requirements/lock.txt    every dependency of the server and of each extra (dev, bench,
#                            s3, tracing, silver): the one version set setup, CI and the
#                            tests use; pip users pass it as a constraints file;
#   requirements/server.txt  the server alone (+ s3), at the same versions: the container
#                            image (Dockerfile) and the Bento (bentofile.yaml) install it.
# requirements/no-deps.txt (packages installed without their metadata's dependencies) is
# written by hand. Target: CPython 3.11 on Linux x86_64 (manylinux_2_28), torch's CPU build.
# Versions already locked are kept where the ranges allow; UPGRADE=1 takes the newest.
# Takes a few seconds; review the diff, then run `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-uv}
source scripts/torch_source.sh
TARGET=(--python-version 3.11 --python-platform x86_64-manylinux_2_28)
OVERRIDE=$(mktemp); trap 'rm -f "$OVERRIDE"' EXIT
echo "torch==2.13.0+cpu" > "$OVERRIDE"   # the CPU build: no nvidia-* packages in the lock
COMMON=("${TARGET[@]}" "${UV_TORCH_ARGS[@]}" --override "$OVERRIDE" --quiet
        --no-annotate --custom-compile-command "make lock")
$UV pip compile pyproject.toml "${COMMON[@]}" ${UPGRADE:+--upgrade} \
  --extra dev --extra bench --extra s3 --extra tracing --extra silver -o requirements/lock.txt
$UV pip compile pyproject.toml "${COMMON[@]}" --extra s3 \
  --constraint requirements/lock.txt -o requirements/server.txt
if grep -q '^nvidia-[a-z0-9-]*-cu' requirements/lock.txt; then
  echo "lock.sh: CUDA runtime packages in the lock: torch's CPU build was not found" >&2; exit 1
fi
echo "lock.sh: $(grep -c '==' requirements/lock.txt) packages in requirements/lock.txt," \
     "$(grep -c '==' requirements/server.txt) in requirements/server.txt"
