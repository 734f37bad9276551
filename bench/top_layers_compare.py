"""Head vs top_layers (k = 1, 2) vs LoRA on Rotten Tomatoes with MiniLM-L6: test accuracy and
training time, one seed, per labels-per-class budget, fine-tuning capped in wall-clock time.

    python -m bench.top_layers_compare --per-class 200 --cap-min 2.5 --threads 1

Every method trains through ``training.trainer.train`` with its defaults (``taskswap
train``); validation is 20% carved off the labelled set; the test set is a fixed
stratified sample of the demo's test split. Results: ``bench/results/top_layers_compare.{md,json}``,
saved after every run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from bench.common import TEXT_SPEC, load, machine, save_results
from training.config import TrainConfig
from training.data.demo import load_demo
from training.trainer import train

# "warm": the head fitted on frozen features first; "cold" (the default): a random head.
METHODS = {"head": {}, "lora": {"method": "lora"},
           "top_layers k=1 warm": {"method": "top_layers", "layers": 1, "warm_start": True},
           "top_layers k=2 warm": {"method": "top_layers", "layers": 2, "warm_start": True},
           "top_layers k=1 cold": {"method": "top_layers", "layers": 1, "warm_start": False},
           "top_layers k=2 cold": {"method": "top_layers", "layers": 2, "warm_start": False},
           "top_layers k=2 warm lr 3e-4": {"method": "top_layers", "layers": 2, "lr": 3e-4, "warm_start": True}}
DEFAULT_METHODS = "head,top_layers k=1 warm,top_layers k=2 warm,lora"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-class", type=int, nargs="+", default=[200])
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--cap-min", type=float, default=2.5, help="wall-clock cap per fine-tuning run")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--methods", default=DEFAULT_METHODS, help=f"comma-separated, of: {', '.join(METHODS)}")
    ap.add_argument("--out-name", default="top_layers_compare", help="bench/results/NAME.{md,json}")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    bb = load(TEXT_SPEC)
    test = load_demo("rotten-tomatoes", "test", limit=args.test, seed=args.seed)
    rows = []
    for n in args.per_class:
        data = load_demo("rotten-tomatoes", "train", limit=2 * n, seed=args.seed)
        for name in args.methods.split(","):
            kw = {"method": "head", **METHODS[name]}
            cfg = TrainConfig(name="rt", seed=args.seed, progress=False,
                              max_train_minutes=None if kw["method"] == "head" else args.cap_min, **kw)
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                r = train(data, bb, cfg, Path(tmp) / "a", test=test, cache_dir=None)
                total = time.perf_counter() - start
            rows.append({"per_class": n, "method": name, "test_accuracy": round(r.metrics["test"].accuracy, 4),
                         "val_accuracy": round(r.metrics["validation"].accuracy, 4),
                         "train_seconds": round(r.seconds, 1), "with_eval_seconds": round(total, 1),
                         "best_epoch": r.history.best_epoch, "epochs_run": len(r.history.train_loss),
                         "time_capped": r.history.time_capped})
            print(rows[-1], flush=True)
            _save(rows, args)


def _save(rows, args) -> None:
    md = ["# Head vs top layers vs LoRA on Rotten Tomatoes (MiniLM-L6, one seed)", "",
          f"`python -m bench.top_layers_compare --per-class {' '.join(map(str, args.per_class))} "
          f"--methods '{args.methods}' --out-name {args.out_name} "
          f"--cap-min {args.cap_min} --threads {args.threads}`; machine: {_machine()}; "
          f"test: {args.test} stratified texts of the demo's test split; validation: 20% of the "
          "labelled set; fine-tuning capped at the first step past the cap (time_capped).", "",
          "| labels/class | method | test acc | val acc | train s | best epoch / run | capped |",
          "|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['per_class']} | {r['method']} | {r['test_accuracy']:.4f} | {r['val_accuracy']:.4f} | "
                  f"{r['train_seconds']} | {r['best_epoch']} / {r['epochs_run']} | {r['time_capped']} |")
    save_results(args.out_name, {"machine": machine(), "args": vars(args), "rows": rows}, "\n".join(md) + "\n")


def _machine() -> str:
    m = machine()
    return (f"{m['cpus']} CPUs, torch {m['torch']}, {m['threads']} thread(s), "
            f"load average {m['load_avg'][0]:.1f} at the last save")


if __name__ == "__main__":
    main()
