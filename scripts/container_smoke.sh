#!/usr/bin/env bash
# Build the project's Dockerfile with rootful podman and run it the way deploy/ does:
# two containers (non-root, read-only root filesystem, every capability dropped) on one
# S3-compatible store (moto_server on the host loopback). An adapter registered on one is
# predicted on the other; a rollback on the second is served by the first; `podman
# healthcheck run` must pass on both. Everything it started is removed at exit.
#
#   sudo scripts/container_smoke.sh            # the Dockerfile route (what CI runs)
#   sudo scripts/container_smoke.sh --bento    # also `bentoml build` + `bentoml containerize
#                                              # --backend podman`, answering /readyz
#
# No image registry is needed: the base image is built from Debian packages with
# debootstrap, from the Debian mirror apt on this machine already uses; pip inside the
# build reaches PyPI through the host network, with the host's CA bundle mounted for the
# build only; torch comes from a local PEP 503 index holding the wheel the host's pip picks.
# Nothing global is configured: podman reads containers.conf/storage.conf from the cache
# folder (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF). Images (and the base rootfs, the torch
# index, the build's layer cache) stay in $TASKSWAP_CONTAINER_CACHE between runs, under
# tags keyed by their inputs, so a second run rebuilds only what changed.
set -euo pipefail
{  # parsed whole before it runs, so editing this file cannot change a run under way

REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${TASKSWAP_CONTAINER_CACHE:-/var/cache/taskswap-containers}
PY=${PYTHON:-python3}
SUITE=bookworm  # Debian 12: python3 is 3.11, the version the torch wheel is built for
TORCH_VERSION=$(sed -n 's/^ARG TORCH_VERSION=//p' "$REPO/Dockerfile")
BENTO=0
for arg in "$@"; do
  case "$arg" in
    --bento) BENTO=1 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown argument $arg (use --bento or --help)" >&2; exit 2 ;;
  esac
done

T0=$(date +%s)
log() { printf '[container-smoke %4ds] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
die() { log "FAILED: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "rootful podman: run as root (sudo $0)"

# ---- 1. tools (Debian packages) ----------------------------------------------------------
# slirp4netns (the containers' network) is only a Recommends of podman: named explicitly.
TOOLS="podman buildah debootstrap runc slirp4netns curl"
for tool in $TOOLS; do
  if ! command -v "$tool" >/dev/null; then
    log "installing $TOOLS"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $TOOLS >/dev/null
    break
  fi
done

# ---- 2. podman configured from files in the cache folder only ----------------------------
mkdir -p "$CACHE/storage" "$CACHE/conf"
# tmpfs: podman's run state must not outlive a reboot; one per cache folder.
RUNROOT=/run/taskswap-containers/$(printf %s "$CACHE" | sha256sum | cut -c1-8)
cat > "$CACHE/conf/containers.conf" <<EOF
[containers]
# The VM's hard limits are below podman's defaults.
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"          # crun rejects the hybrid cgroup layout of these VMs
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$RUNROOT/libpod"
EOF
cat > "$CACHE/conf/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$CACHE/storage"
runroot = "$RUNROOT/storage"
EOF
export CONTAINERS_CONF="$CACHE/conf/containers.conf" CONTAINERS_STORAGE_CONF="$CACHE/conf/storage.conf"
export BUILDAH_FORMAT=docker  # keep HEALTHCHECK (the OCI format drops it)

WORK=$(mktemp -d /tmp/taskswap-container-smoke.XXXXXX)
CONTAINERS=()
MOTO_PID=""
cleanup() {
  local rc=$?
  for c in "${CONTAINERS[@]}"; do
    if [ "$rc" != 0 ]; then
      log "--- last log lines of $c"; podman logs --tail 30 "$c" 2>&1 | sed 's/^/    /' || true
    fi
    podman rm -f -t 5 "$c" >/dev/null 2>&1 || true
  done
  [ -n "$MOTO_PID" ] && kill "$MOTO_PID" 2>/dev/null && wait "$MOTO_PID" 2>/dev/null
  rm -rf "$WORK"
  if [ "$rc" = 0 ]; then log "PASSED"; else log "FAILED (exit $rc)"; fi
}
trap cleanup EXIT
trap 'exit 143' TERM INT

# ---- 3. base image from Debian packages ---------------------------------------------------
# The mirror apt already uses for the suite (from the apt sources, via apt itself).
MIRROR=$(apt-get indextargets --format '$(REPO_URI) $(CODENAME) $(COMPONENT)' 2>/dev/null \
         | awk -v s="$SUITE" '$2 == s && $3 == "main" {print $1; exit}')
if [ -z "$MIRROR" ]; then
  apt-get update -qq
  MIRROR=$(apt-get indextargets --format '$(REPO_URI) $(CODENAME) $(COMPONENT)' \
           | awk -v s="$SUITE" '$2 == s && $3 == "main" {print $1; exit}')
fi
[ -n "$MIRROR" ] || die "no Debian $SUITE 'main' source in this machine's apt sources"
INCLUDE=python3,python3-venv,ca-certificates,netbase,tzdata
BASE_KEY=$(printf '%s\n' "$SUITE" "$MIRROR" "$INCLUDE" "v1" | sha256sum | cut -c1-16)
ROOTFS_IMAGE=localhost/taskswap-debian-$SUITE:$BASE_KEY
BASE_IMAGE=localhost/taskswap-python-base:$BASE_KEY
if ! podman image exists "$BASE_IMAGE"; then
  if ! podman image exists "$ROOTFS_IMAGE"; then
    log "debootstrap $SUITE from $MIRROR"
    debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$WORK/rootfs" "$MIRROR" \
      > "$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log"; die "debootstrap"; }
    rm -rf "$WORK/rootfs/var/cache/apt/archives/"*.deb "$WORK/rootfs/var/lib/apt/lists/"*
    tar -C "$WORK/rootfs" -c . | podman import -q - "$ROOTFS_IMAGE" >/dev/null
    rm -rf "$WORK/rootfs"
  fi
  # Debian's python is "externally managed" (PEP 668): a venv first on PATH gives the
  # Dockerfile the `python` and `pip` its BASE_IMAGE argument asks for.
  mkdir -p "$WORK/base"
  cat > "$WORK/base/Containerfile" <<EOF
FROM $ROOTFS_IMAGE
RUN python3 -m venv /opt/python
ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
CMD ["python"]
EOF
  podman build -q --format docker -t "$BASE_IMAGE" "$WORK/base" >/dev/null
fi
log "base image $BASE_IMAGE ($(podman image inspect -f '{{.Size}}' "$BASE_IMAGE" | numfmt --to=si --round=nearest)B)"

# ---- 4. the CPU torch wheel as a local PEP 503 index (mounted at /mnt in the build) -------
INDEX=$CACHE/torch-index-$TORCH_VERSION
if ! ls "$INDEX"/torch/torch-*.whl >/dev/null 2>&1; then
  log "torch $TORCH_VERSION wheel: the one this machine's pip picks"
  rm -rf "$INDEX.tmp"; mkdir -p "$INDEX.tmp/torch"
  "$PY" -m pip download -q --no-deps --only-binary=:all: "torch==$TORCH_VERSION" -d "$INDEX.tmp/torch" \
    2> >(grep -v "is ignored: it is neither" >&2)
  echo '<!DOCTYPE html><html><body><a href="torch/">torch</a></body></html>' > "$INDEX.tmp/index.html"
  ( cd "$INDEX.tmp/torch" && for w in *.whl; do
      printf '<a href="%s#sha256=%s">%s</a><br>\n' "$w" "$(sha256sum "$w" | cut -d' ' -f1)" "$w"
    done > index.html )
  rm -rf "$INDEX"; mv "$INDEX.tmp" "$INDEX"
fi
log "torch index: $(ls "$INDEX"/torch/*.whl | xargs -n1 basename)"

# ---- 5. the project's Dockerfile -----------------------------------------------------------
# Tagged by a hash of the build inputs (what .dockerignore lets in, and the base); podman's
# layer cache keeps the torch and dependency layers while only the code changes.
INPUT_FILES=$(cd "$REPO" && { echo Dockerfile; echo .dockerignore; echo pyproject.toml; echo README.md;
  echo scripts/bake_backbones.py; echo requirements/server.txt; echo requirements/server-no-deps.txt; find adapters service training -type f -not -name '*.pyc' \
  -not -path '*/__pycache__/*'; } | LC_ALL=C sort)
IMAGE_KEY=$( (cd "$REPO" && sha256sum $INPUT_FILES; echo "$BASE_IMAGE $TORCH_VERSION") | sha256sum | cut -c1-16)
IMAGE=localhost/taskswap:smoke-$IMAGE_KEY
CA=/etc/ssl/certs/ca-certificates.crt
if podman image exists "$IMAGE"; then
  log "image $IMAGE is cached"
else
  log "podman build -> $IMAGE"
  B0=$(date +%s)
  # The host's CA bundle (outbound TLS passes a proxy whose CA only it holds) and the
  # torch index are mounted for the build only; the image keeps Debian's own bundle.
  podman build --format docker --network host --layers \
    -v "$CA:$CA:ro" -v "$INDEX:/mnt:ro" \
    --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg TORCH_INDEX_URL=file:///mnt \
    -t "$IMAGE" -f "$REPO/Dockerfile" "$REPO" > "$WORK/build.log" 2>&1 \
    || { tail -40 "$WORK/build.log"; die "podman build"; }
  log "built in $(( $(date +%s) - B0 )) s"
  # Older smoke images of this project: untag them (their shared layers stay cached).
  podman images --format '{{.Repository}}:{{.Tag}}' | grep '^localhost/taskswap:smoke-' \
    | grep -v ":smoke-$IMAGE_KEY\$" | xargs -r podman rmi >/dev/null 2>&1 || true
  podman image prune -f >/dev/null 2>&1 || true  # their layers no current image uses
fi
log "image $IMAGE: $(podman image inspect -f '{{.Size}}' "$IMAGE" | numfmt --to=si --round=nearest)B," \
    "runs as user $(podman image inspect -f '{{.Config.User}}' "$IMAGE")"

# ---- 6. the shared store: moto_server on the host loopback ---------------------------------
MOTO_PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
MOTO=$(dirname "$(command -v "$PY")")/moto_server
[ -x "$MOTO" ] || MOTO=$(command -v moto_server) || die "moto_server missing (pip install 'moto[server]')"
"$MOTO" -H 127.0.0.1 -p "$MOTO_PORT" > "$WORK/moto.log" 2>&1 &
MOTO_PID=$!
BUCKET=taskswap-smoke
"$PY" - "$MOTO_PORT" "$BUCKET" <<'EOF'
import sys, time
import boto3, botocore
c = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}", region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing")
for _ in range(150):
    try:
        c.create_bucket(Bucket=sys.argv[2]); break
    except botocore.exceptions.EndpointConnectionError:
        time.sleep(0.2)
else:
    sys.exit("moto_server did not answer")
EOF
log "moto_server on 127.0.0.1:$MOTO_PORT, bucket $BUCKET"

# ---- 7. two containers, as deploy/deployment.yaml runs them --------------------------------
ADMIN_TOKEN=$("$PY" -c 'import secrets; print(secrets.token_hex(24))')
STORE_URL=s3://$BUCKET/smoke-$(date +%s)
run_replica() {  # NAME HOST_PORT IMAGE
  local name=$1 port=$2 image=$3
  CONTAINERS+=("$name")
  # The emptyDirs of deploy/deployment.yaml are tmpfs mounts owned by the container's user
  # (U=true, as fsGroup makes them writable there); the image's VOLUMEs are not mounted.
  # slirp4netns with allow_host_loopback: the container reaches the host's 127.0.0.1 (moto)
  # as 10.0.2.2 and is published on the host's loopback only.
  podman run -d --name "$name" \
    --network slirp4netns:allow_host_loopback=true -p "127.0.0.1:$port:3000" \
    --user 10001:10001 --read-only --cap-drop ALL --security-opt no-new-privileges \
    --image-volume ignore --tmpfs /tmp:rw,exec,mode=1777 \
    --mount type=tmpfs,destination=/var/lib/taskswap,U=true \
    --mount type=tmpfs,destination=/var/cache/taskswap,U=true \
    -e HOME=/tmp -e XDG_CACHE_HOME=/tmp/.cache -e MPLCONFIGDIR=/tmp/matplotlib \
    -e TASKSWAP_REPLICA_ID="$name" -e TASKSWAP_ADMIN_TOKEN="$ADMIN_TOKEN" \
    -e TASKSWAP_STORE="$STORE_URL" -e TASKSWAP_S3_ENDPOINT_URL="http://10.0.2.2:$MOTO_PORT" \
    -e AWS_ACCESS_KEY_ID=testing -e AWS_SECRET_ACCESS_KEY=testing -e AWS_REGION=us-east-1 \
    -e TASKSWAP_SYNC_INTERVAL_S=0.5 \
    "$image" > /dev/null 2> "$WORK/run-$name.err" || { cat "$WORK/run-$name.err"; die "podman run $name"; }
  # (podman's healthcheck timers need systemd, absent here: it logs that, and
  # `podman healthcheck run` below runs the check by hand.)
}
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RUN_ID=$$
A=taskswap-smoke-a-$RUN_ID B=taskswap-smoke-b-$RUN_ID
PORT_A=$(free_port) PORT_B=$(free_port)
R0=$(date +%s)
run_replica "$A" "$PORT_A" "$IMAGE"
run_replica "$B" "$PORT_B" "$IMAGE"
log "started $A (127.0.0.1:$PORT_A) and $B (127.0.0.1:$PORT_B)"

wait_ready() {  # NAME PORT
  local deadline=$(( $(date +%s) + 300 ))
  until curl -fs -o /dev/null "http://127.0.0.1:$2/readyz"; do
    [ "$(podman inspect -f '{{.State.Running}}' "$1")" = true ] || die "$1 exited"
    [ "$(date +%s)" -lt "$deadline" ] || die "$1 not ready after 300 s"
    sleep 1
  done
}
wait_ready "$A" "$PORT_A"; wait_ready "$B" "$PORT_B"
log "both ready $(( $(date +%s) - R0 )) s after podman run"

for c in "$A" "$B"; do
  podman healthcheck run "$c" >/dev/null || die "podman healthcheck run $c: unhealthy"
  uid=$(podman exec "$c" id -u)
  [ "$uid" = 10001 ] || die "$c runs as uid $uid, not 10001"
  podman exec "$c" sh -c 'touch /opt/taskswap/x 2>/dev/null || touch /app/x 2>/dev/null' \
    && die "$c: the root filesystem is writable"
  [ "$(podman inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$c")" = true ] || die "$c: not read-only"
done
log "healthcheck healthy on both; uid 10001; root filesystem read-only"

"$PY" "$REPO/scripts/container_smoke_check.py" --token "$ADMIN_TOKEN" \
  "http://127.0.0.1:$PORT_A" "http://127.0.0.1:$PORT_B" || die "two-replica checks"

# ---- 8. the Bento route (optional): bentoml build + bentoml containerize --backend podman --
if [ "$BENTO" = 1 ]; then
  podman rm -f -t 5 "$A" "$B" >/dev/null 2>&1; CONTAINERS=()  # free the two cores for the build
  # The Bento's generated Dockerfile starts FROM python:3.11-slim: the local base stands in.
  podman tag "$BASE_IMAGE" docker.io/library/python:3.11-slim
  # uv (the Bento's installer) fails hard on an unreachable extra index where pip skips it,
  # so this copy of bentofile.yaml carries the CPU torch wheel inside the Bento instead of
  # naming the PyTorch index, and uv trusts the system CA store (UV_NATIVE_TLS), into which
  # the host's bundle is mounted for the build only.
  mkdir -p "$WORK/bento-src"
  (cd "$REPO" && git ls-files -z adapters service training deploy scripts/bake_backbones.py \
     requirements pyproject.toml README.md bentofile.yaml | xargs -0 cp --parents -t "$WORK/bento-src")
  WHEEL=$(ls "$INDEX"/torch/torch-*.whl | head -1)
  mkdir -p "$WORK/bento-src/wheels"  # bentoml takes wheels from inside the build context only
  ln "$WHEEL" "$WORK/bento-src/wheels/" 2>/dev/null || cp "$WHEEL" "$WORK/bento-src/wheels/"
  "$PY" - "$WORK/bento-src/bentofile.yaml" "wheels/$(basename "$WHEEL")" <<'PYEOF'
import sys, yaml
path, wheel = sys.argv[1], sys.argv[2]
cfg = yaml.safe_load(open(path))
cfg["python"].pop("extra_index_url", None)
cfg["python"]["wheels"] = [wheel]
cfg["python"]["find_links"] = ["/home/bentoml/bento/env/python/wheels"]
cfg["envs"].append({"name": "UV_NATIVE_TLS", "value": "1"})
yaml.safe_dump(cfg, open(path, "w"), sort_keys=False)
PYEOF
  export BENTOML_HOME="$WORK/bentoml-home"
  BENTO_KEY=$( (cd "$WORK/bento-src" && find . -type f | LC_ALL=C sort | xargs sha256sum; echo "$BASE_IMAGE") \
               | sha256sum | cut -c1-16)
  BENTO_IMAGE=localhost/taskswap-bento:smoke-$BENTO_KEY
  if podman image exists "$BENTO_IMAGE"; then
    log "bento image $BENTO_IMAGE is cached"
  else
    (cd "$WORK/bento-src" && bentoml build > "$WORK/bento-build.log" 2>&1) \
      || { tail -20 "$WORK/bento-build.log"; die "bentoml build"; }
    log "bentoml build done; bentoml containerize --backend podman -> $BENTO_IMAGE"
    B0=$(date +%s)
    bentoml containerize taskswap:latest --backend podman -t "$BENTO_IMAGE" \
      --opt network=host --opt format=docker --opt layers \
      --opt "volume=$CA:$CA:ro" > "$WORK/bento-containerize.log" 2>&1 \
      || { tail -40 "$WORK/bento-containerize.log"; die "bentoml containerize"; }
    log "containerized in $(( $(date +%s) - B0 )) s"
    podman images --format '{{.Repository}}:{{.Tag}}' | grep '^localhost/taskswap-bento:smoke-' \
      | grep -v ":smoke-$BENTO_KEY\$" | xargs -r podman rmi >/dev/null 2>&1 || true
  fi
  log "bento image $BENTO_IMAGE: $(podman image inspect -f '{{.Size}}' "$BENTO_IMAGE" | numfmt --to=si --round=nearest)B"
  C=taskswap-smoke-bento-$RUN_ID PORT_C=$(free_port)
  R0=$(date +%s)
  CONTAINERS+=("$C")
  podman run -d --name "$C" -p "127.0.0.1:$PORT_C:3000" "$BENTO_IMAGE" > /dev/null 2> "$WORK/run-$C.err" \
    || { cat "$WORK/run-$C.err"; die "podman run $C"; }
  wait_ready "$C" "$PORT_C"
  log "bento container ready $(( $(date +%s) - R0 )) s after podman run" \
      "(uid $(podman exec "$C" id -u)): $(curl -fsS "http://127.0.0.1:$PORT_C/backbones" | head -c 120)..."
fi
exit 0
}
