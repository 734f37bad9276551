#!/usr/bin/env bash
# Serve Taskswap on the configured backbones: scripts/serve.sh [STORE] [PORT]
#
# Settings come from TASKSWAP_* environment variables (see service/settings.py); this
# script only sets the store, and makes sure admin calls are possible: without
# TASKSWAP_ADMIN_TOKEN it creates a random token once in var/admin-token (mode 600)
# and uses it. Bind address: HOST (default 0.0.0.0).
set -euo pipefail
cd "$(dirname "$0")/.."
STORE=${1:-${TASKSWAP_STORE:-var/store}}
PORT=${2:-3000}
PY=${PYTHON:-python3}

if [ -z "${TASKSWAP_ADMIN_TOKEN:-}" ]; then
  TOKEN_FILE=var/admin-token
  if [ ! -s "$TOKEN_FILE" ]; then
    mkdir -p var
    (umask 077 && "$PY" -c "import secrets; print(secrets.token_hex(24))" > "$TOKEN_FILE")
    echo "taskswap: created an admin token in $TOKEN_FILE (mode 600)"
  fi
  chmod 600 "$TOKEN_FILE"
  TASKSWAP_ADMIN_TOKEN=$(cat "$TOKEN_FILE")
  export TASKSWAP_ADMIN_TOKEN
  echo "taskswap: admin calls (register/activate/delete/pin) need the token in $TOKEN_FILE:"
  echo "  curl -H \"Authorization: Bearer \$(cat $TOKEN_FILE)\" ..."
fi

export TASKSWAP_STORE="$STORE"
# Unless configured, serve the default backbones plus the optional audio one when its
# packages are installed (so the spoken-digits demo task is served too).
if [ -z "${TASKSWAP_BACKBONES:-}" ]; then
  TASKSWAP_BACKBONES=$("$PY" -m training.demo --backbones-json)
  export TASKSWAP_BACKBONES
fi
# And the embedded language model the generation demo task (translate-fr) decodes on.
if [ -z "${TASKSWAP_LM_BACKBONES:-}" ]; then
  TASKSWAP_LM_BACKBONES=$("$PY" -m training.demo --lm-backbones-json)
  export TASKSWAP_LM_BACKBONES
fi
# Offline and quiet: no model hub at run time, no progress bars in the server log.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 \
       TRANSFORMERS_VERBOSITY=error TOKENIZERS_PARALLELISM=false
echo "taskswap: serving store $STORE on http://${HOST:-0.0.0.0}:$PORT (ready when /readyz answers 200)"
exec "$PY" -m bentoml serve service.service:Taskswap --host "${HOST:-0.0.0.0}" --port "$PORT"
