# The two commands a newcomer needs: `make serve` and `make test`.
# Both install first (scripts/setup.sh): a virtual environment in .venv at the versions of
# requirements/lock.txt, in seconds with uv; a no-op once it matches the lock.
VENV ?= .venv
PY ?= $(VENV)/bin/python
STORE ?= var/store
PORT ?= 3000
export TASKSWAP_VENV := $(VENV)
export PYTHON := $(PY)
# The environment's tools (bentoml, moto_server, hadolint, ...) first, as `activate` does.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup serve test test-fast demo lock check-latest check-lowest container-smoke

setup:
	@scripts/setup.sh

# Serve the embedded default backbones with demo tasks ready to call.
serve: setup demo
	@scripts/serve.sh $(STORE) $(PORT)

# Build (once) and register the demo adapters into the local store.
demo: setup
	@$(PY) -m training.demo --store $(STORE)

test: setup
	@$(PY) -m pytest -q

test-fast: setup
	@$(PY) -m pytest -q -m "not real and not server"

# Re-resolve requirements/{lock,server}.txt from pyproject.toml's ranges, keeping locked
# versions that still fit; `make lock UPGRADE=1` takes the newest (docs/install.md).
lock:
	@UV=$$(command -v uv || echo $(VENV)/bin/uv) UPGRADE=$(UPGRADE) scripts/lock.sh

# The newest (lowest) versions pyproject.toml's ranges allow, in a throw-away environment,
# against the fast suite: run before raising a range, refreshing the lock or lowering a bound.
check-latest:
	@scripts/check_versions.sh latest

check-lowest:
	@scripts/check_versions.sh lowest

# Container image smoke test with rootful podman (docs/containers.md); needs root.
container-smoke: setup
	@scripts/container_smoke.sh
