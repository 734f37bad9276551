# The two commands a newcomer needs: `make serve` and `make test`.
PY ?= python3
STORE ?= var/store
PORT ?= 3000

.PHONY: setup serve test test-fast demo bench container-smoke

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

# Build the Dockerfile with rootful podman and run two containers on one S3 store
# (docs/containers.md). Needs root; images are cached in /var/cache/taskswap-containers.
container-smoke: setup
	@scripts/container_smoke.sh
