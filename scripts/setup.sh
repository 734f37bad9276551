#!/usr/bin/env bash
# Install everything Taskswap needs into a virtual environment (.venv, or $TASKSWAP_VENV),
# at the versions in requirements/lock.txt: idempotent, and a no-op (under a second) when
# the environment already matches the lock.
#
#   1. Debian packages, once: data for the Fashion-MNIST and spoken-digits demos, and
#      HAProxy (the task-affinity proxy in deploy/haproxy/, used by its test and bench);
#   2. the virtual environment, from CPython 3.11 (the version the lock is resolved for);
#   3. uv (the lock's version) inside it: it installs the ~200 locked packages in seconds,
#      where pip's resolver backtracked for over 18 minutes on the same ranges;
#   4. exactly the lock (`uv pip sync`: extra packages are removed), torch's CPU build
#      from scripts/torch_source.sh; then the packages installed without their metadata's
#      dependencies (requirements/no-deps.txt) and the project itself, editable.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${TASKSWAP_VENV:-.venv}

# ---- 1. Debian packages: espeak-ng and Asterisk's recorded prompts (the spoken-digits demo:
# synthetic voices to train, a real speaker to test), Fashion-MNIST (also the shapes-detect
# demo's objects), mricron-data (the brain-regions demo: Colin27 T1 MRI and the AAL atlas);
# HAProxy (deploy/haproxy/, the affinity routing test and bench).
if { [ ! -d /usr/share/datasets/fashion-mnist ] || ! command -v espeak-ng >/dev/null \
     || [ ! -d /usr/share/asterisk/sounds/en_US_f_Allison/digits ] \
     || ! dpkg -s mricron-data >/dev/null 2>&1 || ! command -v haproxy >/dev/null; } \
   && command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
    dataset-fashion-mnist espeak-ng asterisk-core-sounds-en-wav mricron-data haproxy >/dev/null
fi

# ---- 2. the virtual environment
if [ ! -x "$VENV/bin/python" ]; then
  BASE=${PYTHON_BASE:-}
  if [ -z "$BASE" ]; then
    for candidate in python3.11 python3; do
      if command -v "$candidate" >/dev/null && "$candidate" -c \
          'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then BASE=$candidate; break; fi
    done
  fi
  [ -n "$BASE" ] || { echo "setup: CPython 3.11 is needed (the lock is resolved for it);" \
                           "set PYTHON_BASE=/path/to/python3.11" >&2; exit 1; }
  "$BASE" -m venv "$VENV"
fi
PY="$VENV/bin/python"

STAMP="$VENV/.taskswap-lock"
WANT=$(cat requirements/*.txt pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat "$STAMP" 2>/dev/null)" = "$WANT" ]; then
  exit 0
fi

# ---- 3. uv, the lock's version, inside the environment (pip reads this machine's own config)
UV_VERSION=$(sed -n 's/^uv==//p' requirements/lock.txt)
if [ "$("$VENV/bin/uv" --version 2>/dev/null | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  "$PY" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION" 2>&1 \
    | grep -vE "as the .root. user|^WARNING: Location" || true
fi
UV="$VENV/bin/uv"

# ---- 4. exactly the lock, then the --no-deps packages and the project
PYTHON=$PY source scripts/torch_source.sh
export UV_PYTHON="$PY"
"$UV" pip sync -q "${UV_TORCH_ARGS[@]}" requirements/lock.txt
"$UV" pip install -q --no-deps -r requirements/no-deps.txt
"$UV" pip install -q --no-deps -e .
"$PY" -c "import adapters, service, training" >/dev/null
echo "$WANT" > "$STAMP"
echo "setup: $VENV matches requirements/lock.txt ($(grep -c '==' requirements/lock.txt) packages)"
