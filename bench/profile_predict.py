"""Where a served request's CPU goes, stage by stage, under concurrent load.

    python -m bench profile --threads 1                     # /predict, 64 head tasks, 32 clients, 3 x 10 s
    python -m bench profile --threads 1 --route embed       # POST /embed instead
    python -m bench profile --smoke                         # tiny random backbone, seconds

One real Taskswap server (``bench.profiled_service:Taskswap``: the project's service with
:mod:`bench.stack_sampler` in its worker) on the embedded MiniLM over a store with
``--heads`` head tasks, ``--clients`` concurrent clients (one request in flight each, one
review snippet per request, each for a head drawn at random). During each ``--seconds``
phase the sampler adds every Python thread's *CPU time* to the stage its stack is in (HTTP
parsing, middleware, request validation, thread hand-offs, prepare, batcher, tokenisation,
trunk, heads, answers, response serialisation, metrics, ...); the table is CPU ms per
request (each phase's totals over its answered requests, median over phases) and each
stage's share of the process's CPU. CPU time, not wall time: a stage's figure does not grow
when other processes keep the server off the cores, so it reads the same under load
(the wall-clock requests/s beside it does not, and is printed for the record only).

Results go to ``bench/results/profile-<route>.{md,json}`` (``--out`` to change the name).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from adapters.registry import Registry
from adapters.store import open_store
from bench.common import SMOKE_HELP, TEXT_SPEC, load, machine, review_snippets, save_results, smoke_specs, write_heads
from bench.http_bench import Served, run_load
from bench.stack_sampler import split

ROUTES = {  # route: (path, body maker given (texts, heads, rng))
    "predict": ("/predict", lambda texts, heads, rng: {"task": rng.choice(heads), "texts": rng.sample(texts, 1)}),
    "embed": ("/embed", lambda texts, heads, rng: {"texts": rng.sample(texts, 1)}),
    "openai": ("/v1/embeddings", lambda texts, heads, rng: {"model": "text", "input": rng.sample(texts, 1),
                                                            "encoding_format": "base64"}),
}


def read_profile(prefix: Path) -> dict:
    """The worker's sampler totals: of the per-process files, the one that saw the batch worker."""
    best: dict = {}
    for f in prefix.parent.glob(prefix.name + ".*"):
        if f.suffix == ".tmp":
            continue
        try:
            d = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if "batch worker thread" in d["roles_cpu_ns"] or not best:
            best = d
    return best


def phase(url: str, path: str, bodies, clients: int, seconds: float, prefix: Path, dump_s: float) -> dict:
    time.sleep(dump_s * 2)  # the sampler's file is at most dump_s old: let it catch up
    before = read_profile(prefix)
    res = run_load(url, bodies, clients, seconds, path=path)
    time.sleep(dump_s * 2)
    after = read_profile(prefix)
    res.pop("_latencies", None)
    n = max(res["ok"], 1)
    res["stages_ms"] = {f"{role}: {stage}": ns / 1e6 / n for role, stages in split(before, after).items()
                        for stage, ns in stages.items() if ns > 0}
    old = before.get("detail", {})
    res["frames"] = dict(sorted(((k, v - old.get(k, 0)) for k, v in after.get("detail", {}).items()
                                 if v > old.get(k, 0)), key=lambda kv: -kv[1])[:40])
    res["sampler_cpu_ms"] = (after["sampler_cpu_ns"] - before["sampler_cpu_ns"]) / 1e6 / n
    res["process_cpu_ms"] = (after["process_cpu_ns"] - before["process_cpu_ns"]) / 1e6 / n
    print(f"  {res['requests_per_s']:.1f} req/s, p50 {res['p50_ms']:.0f} ms, {res['process_cpu_ms']:.2f} ms "
          f"process CPU per request, errors {res['errors']}", flush=True)
    return res


def summarise(phases: list[dict]) -> dict:
    names = sorted({k for p in phases for k in p["stages_ms"]})
    med = {k: statistics.median(p["stages_ms"].get(k, 0.0) for p in phases) for k in names}
    proc = statistics.median(p["process_cpu_ms"] for p in phases)
    sampler = statistics.median(p["sampler_cpu_ms"] for p in phases)
    attributed = sum(med.values()) + sampler
    rows = dict(sorted(med.items(), key=lambda kv: -kv[1]))
    return {"stages_ms": rows, "process_cpu_ms": proc, "sampler_cpu_ms": sampler, "attributed_ms": attributed,
            "unattributed_ms": proc - attributed,
            "requests_per_s": statistics.median(p["requests_per_s"] for p in phases),
            "p50_ms": statistics.median(p["p50_ms"] for p in phases),
            "p99_ms": statistics.median(p["p99_ms"] for p in phases),
            "errors": sum(sum(p["errors"].values()) for p in phases)}


def markdown(res: dict) -> str:
    s, a, m = res["summary"], res["args"], res["machine"]
    la = f"{res['load_avg_start'][0]:.1f} → {res['load_avg_end'][0]:.1f}"
    lines = [f"# Where a `{ROUTES[a['route']][0]}` request's CPU goes", "",
             f"Machine: {m['cpus']} CPUs, torch {m['torch']}; load average {la}. Command: `{res['command']}` "
             f"({a['clients']} clients, 1 text per request, {a['heads']} head tasks, {a['rounds']} phases of "
             f"{a['seconds']:.0f} s, torch threads {a['threads']}; server settings {res['server_env']}).", "",
             f"Throughput for the record (wall clock, under this load): {s['requests_per_s']:.1f} req/s, "
             f"p50 {s['p50_ms']:.0f} ms, p99 {s['p99_ms']:.0f} ms, errors {s['errors']}.", "",
             "CPU ms per answered request, median over phases: each thread role's own CPU time "
             "(exact), split over the stages its threads were sampled working in "
             "(`bench/stack_sampler.py`); share of the server process's CPU time:", "",
             "| thread: stage | CPU ms / request | share |", "|---|---|---|"]
    total = s["process_cpu_ms"] or 1.0
    lines += [f"| {k} | {v:.3f} | {100 * v / total:.1f}% |" for k, v in s["stages_ms"].items()]
    lines += [f"| the sampler's own thread (measurement overhead) | {s['sampler_cpu_ms']:.3f} | "
              f"{100 * s['sampler_cpu_ms'] / total:.1f}% |",
              f"| not in a Python thread (torch/tokenizer threads), or threads that ended | {s['unattributed_ms']:.3f} | "
              f"{100 * s['unattributed_ms'] / total:.1f}% |",
              f"| **server process, all threads** | **{s['process_cpu_ms']:.3f}** | 100% |", ""]
    if "compare" in res:
        c = res["compare"]
        lines += [f"## Beside `--compare-checkout {a['compare_checkout']}` (phases interleaved, same load)", "",
                  f"Its throughput for the record: {c['summary']['requests_per_s']:.1f} req/s, p50 "
                  f"{c['summary']['p50_ms']:.0f} ms, p99 {c['summary']['p99_ms']:.0f} ms. CPU ms per request; "
                  "the last column is the median over rounds of this checkout's over the other's, same round:", "",
                  "| thread: stage | this checkout | compare checkout | ratio (same round) |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['ours']:.3f} | {v['compare']:.3f} | {v['ratio']:.3f} |" for k, v in c["by_stage"].items()]
        lines.append("")
    return "\n".join(lines) + "\n"


def compare_stages(ours: list[dict], other: list[dict]) -> dict:
    """Per stage (and the process total): both medians and the median same-round ratio."""
    def get(p, k):
        return p["process_cpu_ms"] if k == "process, all threads" else p["stages_ms"].get(k, 0.0)
    keys = sorted({k for p in ours + other for k in p["stages_ms"]}, key=lambda k: -statistics.median(
        get(p, k) for p in ours)) + ["process, all threads"]
    out = {}
    for k in keys:
        a, b = [get(p, k) for p in ours], [get(p, k) for p in other]
        if statistics.median(a) < 0.005 and statistics.median(b) < 0.005:
            continue
        ratios = [x / y for x, y in zip(a, b) if y > 0]
        out[k] = {"ours": statistics.median(a), "compare": statistics.median(b),
                  "ratio": statistics.median(ratios) if ratios else float("nan")}
    return out


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--route", choices=sorted(ROUTES), default="predict")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the server")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--heads", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3, help="load phases")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of one load phase")
    ap.add_argument("--env", action="append", default=[], metavar="TASKSWAP_X=V",
                    help="extra server setting (repeatable), e.g. TASKSWAP_MAX_WAIT_MS=2")
    ap.add_argument("--compare-checkout", default=None, metavar="PATH", help=(
        "a checkout of other code (with bench/profiled_service.py), served as a second profiled server on "
        "the same store, phases alternating with ours"))
    ap.add_argument("--out", default=None, help="results name under bench/results (default profile-<route>)")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP + "; 3 heads, 4 clients, one 2 s phase")
    args = ap.parse_args(argv)
    if args.smoke:
        args.heads, args.clients, args.rounds, args.seconds = 3, 4, 1, 2.0
    args.out = args.out or (f"profile-{args.route}" + ("-smoke" if args.smoke else ""))
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="taskswap-profile-"))
    res: dict = {"machine": machine(), "args": vars(args),
                 "command": "python -m bench profile " + " ".join(argv if argv is not None else sys.argv[1:])}
    spec = smoke_specs(root / "backbones")[0] if args.smoke else TEXT_SPEC
    bb = load(spec)
    reg = Registry(open_store(str(root / "store")), {bb.name: bb})
    for p in write_heads(root / "heads", bb, args.heads):
        reg.register(p)
    heads = [f"head-{i:04d}" for i in range(args.heads)]
    texts = review_snippets(512, bb.preprocessor.tokenizer)
    prefix, dump_s = root / "profile", 0.5
    extra = dict(e.split("=", 1) for e in args.env)
    res["server_env"] = extra or "defaults"
    def served(name: str, out: Path, cwd: Path | None) -> Served:
        return Served("bench.profiled_service:Taskswap", {
            "TASKSWAP_TORCH_THREADS": str(args.threads), "TASKSWAP_STORE": str(root / "store"),
            "TASKSWAP_ADMIN_TOKEN": secrets.token_hex(16), "TASKSWAP_METRICS_MAX_TASKS": "50",
            "TASKSWAP_BACKBONES": json.dumps([{"name": bb.name, "source": spec.source, "max_length": spec.max_length}]),
            "TASKSWAP_BENCH_PROFILE": str(out), **extra}, root, name, **({"cwd": cwd} if cwd else {}))

    servers = {"ours": (served("taskswap", prefix, None), prefix)}
    if args.compare_checkout:
        servers["compare"] = (served("compare", root / "profile-compare", Path(args.compare_checkout)),
                              root / "profile-compare")
    path, make = ROUTES[args.route]
    rng = random.Random(5)
    phases: dict[str, list[dict]] = {k: [] for k in servers}
    try:
        for srv, _ in servers.values():
            srv.wait_ready()
            with httpx.Client(base_url=srv.url, timeout=120) as c:  # every task once: lazy loads happen here
                for t in heads:
                    c.post("/predict", json={"task": t, "texts": texts[:1]}).raise_for_status()
            run_load(srv.url, lambda: make(texts, heads, rng), args.clients, min(2.0, args.seconds), path=path)
        res["load_avg_start"] = os.getloadavg()
        names = list(servers)
        for rnd in range(args.rounds):  # with a compare server: alternating, the order rotating
            for name in names[rnd % len(names):] + names[: rnd % len(names)]:
                srv, out = servers[name]
                phases[name].append(phase(srv.url, path, lambda: make(texts, heads, rng), args.clients,
                                          args.seconds, out, dump_s))
        res["load_avg_end"] = os.getloadavg()
        res["phases"], res["summary"] = phases["ours"], summarise(phases["ours"])
        if "compare" in phases:
            res["compare"] = {"phases": phases["compare"], "summary": summarise(phases["compare"]),
                              "by_stage": compare_stages(phases["ours"], phases["compare"])}
    finally:
        for srv, _ in servers.values():
            srv.stop()
        shutil.rmtree(root, ignore_errors=True)
    md = markdown(res)
    print(md)
    save_results(args.out, res, md)
    return res
