"""Where a server's cold start goes: ``bentoml serve`` exec to ``/readyz``, stage by stage.

    python -m bench cold-start --store /var/tmp/cold/store100k --baseline-tree /var/tmp/cold/base --rounds 3
    python -m bench cold-start --smoke

Each start is timed from the exec of ``bentoml serve`` to (marks watched every 50 ms):

1. ``worker``: the serving worker process exists — the ``bentoml serve`` process's own
   start (interpreter, BentoML, importing the service module to read its definition);
2. ``engine``: the engine logs its first line — the worker's interpreter, imports
   (the service module again, with the model code) and the service's ``__init__``;
3. ``ready log``: the engine's "ready in" line (its stages: backbones, table, warm-up, gc);
4. ``readyz``: ``/readyz`` answers 200.

With ``--baseline-tree`` (another source tree, e.g. ``git archive REV | tar -x -C DIR``)
its server and this checkout's start in turn, ``--rounds`` times each, on the same store
and settings: the ratios compare starts that saw the same load.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import SMOKE_HELP, TEXT_SPEC, load, machine, save_results, smoke_specs
from bench.http_bench import REPO, Served, tree_cpu_s
from bench.scale import ready_line
from bench.scale_populate import populate

MARKS = ("worker", "engine", "ready log", "readyz")
LOG_MARKS = {"engine": "loading backbone", "ready log": "ready in"}


def child_has_worker(pid: int) -> bool:
    """True once ``pid`` has a child running BentoML's service worker (Linux /proc)."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            if int(stat[stat.rfind(")") + 2:].split()[1]) == pid and b"worker.service" in (d / "cmdline").read_bytes():
                return True
        except (OSError, ValueError):
            continue
    return False


def timed_start(tree: Path, env: dict, root: Path, name: str, timeout_s: float) -> dict:
    """Start a server from ``tree``; seconds from exec to each mark, and its ready log line."""
    t0 = time.perf_counter()
    srv = Served("service.service:Taskswap", env, root, name, cwd=tree)
    marks: dict[str, float] = {}
    cpu: dict[str, float] = {}  # CPU seconds (user + system) of the server's processes at each mark
    try:
        with httpx.Client(timeout=2) as client:
            while "readyz" not in marks:
                now = time.perf_counter() - t0
                if now > timeout_s or srv.proc.poll() is not None:
                    raise SystemExit(f"{name}: not ready ({srv.log.read_text(errors='replace')[-3000:]})")
                if "worker" not in marks and child_has_worker(srv.proc.pid):
                    marks["worker"], cpu["worker"] = now, tree_cpu_s(srv.proc.pid)
                text = srv.log.read_text(errors="replace")
                for mark, needle in LOG_MARKS.items():
                    if mark not in marks and needle in text:
                        marks[mark], cpu[mark] = now, tree_cpu_s(srv.proc.pid)
                try:
                    if client.get(srv.url + "/readyz").status_code == 200:
                        marks["readyz"], cpu["readyz"] = time.perf_counter() - t0, tree_cpu_s(srv.proc.pid)
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        deadline = time.monotonic() + 5  # the ready line is logged just after /readyz turns 200
        while "ready log" not in marks and time.monotonic() < deadline:
            if LOG_MARKS["ready log"] in srv.log.read_text(errors="replace"):
                marks["ready log"], cpu["ready log"] = marks["readyz"], cpu["readyz"]
            time.sleep(0.05)
    finally:
        srv.stop()
    marks = {m: marks[m] for m in MARKS if m in marks}  # in stage order
    cpu = {m: cpu[m] for m in MARKS if m in cpu}
    return {"marks_s": marks, "cpu_s": cpu, "log_line": ready_line(srv), "load_avg": os.getloadavg()}


def stages(marks: dict[str, float]) -> dict[str, float]:
    """The seconds between consecutive marks (``worker`` counts from exec)."""
    out, prev = {}, 0.0
    for mark in MARKS:
        if mark in marks:
            out[mark] = marks[mark] - prev
            prev = marks[mark]
    return out


def median_stages(runs: list[dict], key: str) -> dict[str, float]:
    """Median seconds per stage over the runs that saw both of its marks."""
    out = {}
    for m in MARKS:
        vals = [stages(r[key])[m] for r in runs if m in r[key] and (m == MARKS[0] or MARKS[MARKS.index(m) - 1] in r[key])]
        out[m] = statistics.median(vals) if vals else float("nan")
    return out


def summarize(runs: list[dict]) -> dict:
    """Median wall and CPU seconds per stage over ``runs``, and each run's time to ``/readyz``."""
    return {"stages_median_s": median_stages(runs, "marks_s"), "stages_cpu_median_s": median_stages(runs, "cpu_s"),
            "readyz_s": [r["marks_s"]["readyz"] for r in runs],
            "cpu_to_readyz_s": [r["cpu_s"]["readyz"] for r in runs]}


def rerender(path: Path) -> None:
    """Recompute the summaries and the markdown of a saved result (``path``: its JSON)."""
    res = json.loads(path.read_text())
    res["trees"] = {t: {"path": v["path"], **summarize(res["runs"][t])} for t, v in res["trees"].items()}
    path.write_text(json.dumps(res, indent=2) + "\n")
    path.with_suffix(".md").write_text(markdown(res))


def markdown(res: dict) -> str:
    lines = [f"# Cold start, stage by stage ({res['tasks']} tasks)", "",
             f"`{res['command']}`; load average {res['load_start'][0]:.1f} -> {res['load_end'][0]:.1f}, "
             f"{res['machine']['cpus']} CPUs, {res['threads']} torch thread(s); starts interleaved.", ""]
    trees = list(res["trees"])
    for key, what in (("stages_median_s", "wall s"), ("stages_cpu_median_s", "CPU s of the server's processes")):
        lines += ["", f"| stage ({what}, median) | " + " | ".join(trees) + (" | ratio |" if len(trees) == 2 else " |"),
                  "|---|" + "---|" * (len(trees) + (len(trees) == 2))]
        for m in MARKS:
            vals = [res["trees"][t][key][m] for t in trees]
            ratio = f" {vals[1] / vals[0]:.2f} |" if len(trees) == 2 and vals[0] else ""
            lines.append(f"| {m} | " + " | ".join(f"{v:.1f}" for v in vals) + (" |" + ratio if ratio else " |"))
    for t in trees:
        lines.append("")
        tr = res["trees"][t]
        lines.append(f"{t}: `/readyz` after " + ", ".join(f"{x:.1f}" for x in tr["readyz_s"]) + " s (CPU of its "
                     "processes by then: " + ", ".join(f"{x:.1f}" for x in tr.get("cpu_to_readyz_s", [])) + " s)")
        lines += [f"- {r['log_line']}" for r in res["runs"][t]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", default=None, help="local store to start on; default: a temporary one of --tasks")
    ap.add_argument("--tasks", type=int, default=100, help="tasks in the temporary store (without --store)")
    ap.add_argument("--baseline-tree", default=None, help="another source tree started in turn with this one")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--timeout-s", type=float, default=600)
    ap.add_argument("--out", default=None, help="results name (default cold-start)")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP + "; a store of 5 tasks, 1 round")
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="taskswap-cold-"))
    spec = smoke_specs(root / "backbones")[0] if args.smoke else TEXT_SPEC
    if args.smoke:
        args.tasks, args.rounds, args.out = 5, 1, args.out or "cold-start-smoke"
    store = Path(args.store) if args.store else root / "store"
    if not args.store:
        populate(str(store), load(spec), 0, args.tasks, report_every=10_000)
    env = {"TASKSWAP_STORE": str(store), "TASKSWAP_ADMIN_TOKEN": "cold-start-" + "0" * 24,
           "TASKSWAP_TORCH_THREADS": str(args.threads), "TASKSWAP_METRICS_MAX_TASKS": "50",
           "TASKSWAP_BACKBONES": json.dumps([{"name": spec.name, "source": spec.source,
                                              "max_length": spec.max_length}])}
    trees = {"this checkout": REPO}
    if args.baseline_tree:
        trees = {"baseline": Path(args.baseline_tree).resolve(), **trees}
    res: dict = {"tasks": None if args.store else args.tasks, "threads": args.threads, "machine": machine(), "load_start": os.getloadavg(),
                 "command": "python -m bench cold-start " + " ".join(argv if argv is not None else sys.argv[1:]),
                 "trees": {}, "runs": {t: [] for t in trees}}
    for i in range(args.rounds):
        for label, tree in trees.items():
            run = timed_start(tree, env, root, f"cold-{i}-{label.split()[0]}", args.timeout_s)
            res["runs"][label].append(run)
            print(f"  round {i} {label}: {json.dumps({k: round(v, 1) for k, v in run['marks_s'].items()})}",
                  file=sys.stderr, flush=True)
    counts = re.search(r"(\d+) tasks from", res["runs"]["this checkout"][0]["log_line"])
    res["tasks"] = int(counts.group(1)) if counts else res["tasks"]
    res["trees"] = {t: {"path": str(p), **summarize(res["runs"][t])} for t, p in trees.items()}
    res["load_end"] = os.getloadavg()
    md = markdown(res)
    print(md)
    save_results(args.out or "cold-start", res, md)
    return res
