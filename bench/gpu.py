"""The runtime and HTTP benches on a CUDA device, in float32 and float16, in one command.

    python -m bench gpu                      # quick runtime + HTTP bench, fp32 then fp16
    python -m bench gpu --full --dtypes fp16 # the full benches, float16 only
    python -m bench gpu --dry-run            # print the commands it would run (works without CUDA)

Each (dtype, bench) pair runs as its own child process (``python -m bench runtime
--device cuda --half ...`` and ``python -m bench http ...``), so every one starts with
a clean device; their results land in ``bench/results/gpu-<dtype>-{runtime,http}.{md,json}``
and this command writes ``bench/results/gpu.{md,json}``: which runs succeeded, their
headline ratios, the device name, and the tail of the log of any that failed. On a GPU the
absolute rows/s and requests/s mean something too (no neighbours share the device).

Without CUDA it refuses at once (exit status 2) instead of measuring the CPU under a GPU
label. The fp16 path casts the backbone to float16 (``BackboneSpec.half``); heads and
pooling stay float32 (``Features.get``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench.common import results_dir

REPO = Path(__file__).resolve().parents[1]
DTYPES = ("fp32", "fp16")
BENCHES = ("runtime", "http")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dtypes", default="fp32,fp16", help="comma-separated: fp32, fp16")
    ap.add_argument("--benches", default="runtime,http", help="comma-separated: runtime, http")
    ap.add_argument("--device", default="cuda", help="a CUDA device: cuda or cuda:N")
    ap.add_argument("--full", action="store_true", help="the full benches (default: their --quick runs)")
    ap.add_argument("--timeout-s", type=float, default=1800, help="per child bench")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    ap.add_argument("--results", default=str(results_dir()), help="folder for the result files")
    args = ap.parse_args(argv)
    args.dtypes = _pick(args.dtypes, DTYPES, "--dtypes", ap)
    args.benches = _pick(args.benches, BENCHES, "--benches", ap)
    if not (args.device == "cuda" or args.device.startswith("cuda:") and args.device[5:].isdigit()):
        ap.error(f"--device {args.device!r}: this command measures a CUDA device; use cuda or cuda:N")
    return args


def _pick(raw: str, allowed: tuple[str, ...], flag: str, ap: argparse.ArgumentParser) -> list[str]:
    got = [x.strip() for x in raw.split(",") if x.strip()]
    bad = [x for x in got if x not in allowed]
    if bad or not got:
        ap.error(f"{flag} {raw!r}: choose from {', '.join(allowed)}")
    return got


def commands(args: argparse.Namespace) -> list[tuple[str, str, list[str]]]:
    """``(dtype, bench, argv)`` for every child run, in order."""
    out = []
    for dtype in args.dtypes:
        half = ["--half"] if dtype == "fp16" else []
        for bench in args.benches:
            argv = [sys.executable, "-m", "bench", bench, "--device", args.device, *half,
                    "--out", f"gpu-{dtype}-{bench}"]
            if not args.full:
                argv.append("--quick")
            out.append((dtype, bench, argv))
    return out


def require_cuda() -> str:
    """The CUDA device's name, or exit with status 2 and a message saying why not."""
    import torch
    if not torch.cuda.is_available():
        built = torch.version.cuda or "none (a CPU-only build)"
        print(f"bench.gpu needs a CUDA device: torch {torch.__version__} reports "
              f"torch.cuda.is_available() == False (CUDA runtime: {built}). Run it on a machine "
              "with an NVIDIA GPU and a CUDA build of torch; nothing was measured.", file=sys.stderr)
        raise SystemExit(2)
    return torch.cuda.get_device_name(0)


def headline(bench: str, result: dict) -> dict:
    """The figures worth a glance from one child's JSON result (absent parts are skipped)."""
    if bench == "runtime":
        out = {}
        for part in ("text", "vision"):
            for k, v in result.get(part, {}).get("rows", {}).items():
                out[f"{part}: {k}"] = {"rows_per_s": v["rows_per_s"], "ratio": v["ratio"]}
        return out
    return {k: {"requests_per_s": v["requests_per_s"], "ratio": v["ratio"], "p99_ms": v["p99_ms"]}
            for k, v in result.get("throughput", {}).items()}


def write_summary(results_dir: Path, device_name: str, runs: list[dict]) -> Path:
    """``gpu.json`` and ``gpu.md`` from the child runs (``dtype, bench, rc, seconds, log_tail``)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    for run in runs:
        path = results_dir / f"gpu-{run['dtype']}-{run['bench']}.json"
        run["headline"] = headline(run["bench"], json.loads(path.read_text())) if (
            run["rc"] == 0 and path.exists()) else {}
    payload = {"device": device_name, "runs": runs}
    (results_dir / "gpu.json").write_text(json.dumps(payload, indent=2) + "\n")
    lines = [f"# GPU benches on {device_name}", "",
             "Produced by `python -m bench gpu`; each row's full table is in the named result file.", ""]
    for run in runs:
        name = f"gpu-{run['dtype']}-{run['bench']}"
        state = "ok" if run["rc"] == 0 else f"**failed** (exit {run['rc']})"
        lines += [f"## {run['dtype']} {run['bench']} bench: {state}, {run['seconds']:.0f} s (`{name}.md`)", ""]
        if run["headline"]:
            unit = "rows/s" if run["bench"] == "runtime" else "requests/s"
            lines += [f"| variant | {unit} | ratio | ", "|---|---|---|"]
            for k, v in run["headline"].items():
                lines.append(f"| {k} | {v.get('rows_per_s', v.get('requests_per_s')):.1f} | {v['ratio']:.3f} |")
        elif run.get("log_tail"):
            lines += ["```", run["log_tail"].rstrip(), "```"]
        lines.append("")
    md = results_dir / "gpu.md"
    md.write_text("\n".join(lines) + "\n")
    return md


def main(argv=None) -> int:
    args = parse_args(argv)
    plan = commands(args)
    if args.dry_run:
        for _, _, cmd in plan:
            print(" ".join(cmd))
        return 0
    device_name = require_cuda()
    runs = []
    for dtype, bench, cmd in plan:
        print(f"[{dtype} {bench}] {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        try:
            p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=args.timeout_s)
            rc, log = p.returncode, p.stdout + p.stderr
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout or ""
            out = out.decode(errors="replace") if isinstance(out, bytes) else out
            rc, log = 124, f"{out}\ntimed out after {args.timeout_s:.0f} s"
        runs.append({"dtype": dtype, "bench": bench, "rc": rc, "seconds": time.perf_counter() - t0,
                     "command": " ".join(cmd[1:]), "log_tail": log[-3000:] if rc else ""})
        print(log[-2000:], flush=True)
    md = write_summary(Path(args.results), device_name, runs)
    print(md.read_text())
    return 0 if all(r["rc"] == 0 for r in runs) else 1
