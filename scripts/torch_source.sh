# Sourced by scripts/setup.sh, scripts/lock.sh and scripts/check_latest.sh: where uv finds the
# CPU build of torch (torch==2.13.0+cpu, the version the lock names).
#
# PyPI's torch for Linux is the CUDA build (it pulls ~3 GB of nvidia-* packages), so the CPU
# wheel comes from PyTorch's CPU index (TORCH_INDEX_URL), or from a local folder of wheels
# when pip on this machine is configured with one that holds it (find-links): uv reads
# neither pip's configuration nor an unreachable index gracefully, so it is told here.
# Sets the array UV_TORCH_ARGS.
TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}
UV_TORCH_ARGS=()
_torch_links=$("${PYTHON:-python3}" -m pip config list 2>/dev/null \
  | sed -n "s/^[a-z:]*\.find-links='\(.*\)'$/\1/p" | tr ' ' '\n' | sed 's#^file://##' | sort -u)
for _dir in ${TORCH_WHEELS:-} $_torch_links; do
  if compgen -G "$_dir/torch-2.13.0+cpu-*.whl" >/dev/null; then
    UV_TORCH_ARGS=(--find-links "$_dir")
    break
  fi
done
if [ ${#UV_TORCH_ARGS[@]} = 0 ]; then
  # Best match across indexes: torch (and only what PyTorch's index also hosts) may come from it.
  UV_TORCH_ARGS=(--extra-index-url "$TORCH_INDEX_URL" --index-strategy unsafe-best-match)
fi
unset _torch_links _dir
