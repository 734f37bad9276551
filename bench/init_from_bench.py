"""Few-label warm start: a head started from a related task's head (``--init-from``) against
one started from zero, at a few target-label budgets.

Per shift (:mod:`bench.domain_shifts`: ``drugs``, film -> drug reviews, MiniLM; ``fashion``,
Fashion-MNIST -> its negatives, MobileNetV2) and seed, a source head is trained on the
source data; then for each budget ``k`` (default 10, 50, 200 labels, a stratified sample of
the target training set) two heads are trained on the same ``k`` labelled target examples:
``zero`` (a fresh head) and ``warm`` (``TrainConfig(init_from=source head)``), both with the
``head`` method's defaults, and scored on the target test split. No label beyond the budget
is used: the ``k`` examples are also the validation data the epoch is kept on.

    python -m bench init-from --threads 1
    python -m bench init-from --shifts drugs --budgets 10,50 --seeds 0
    python -m bench init-from --smoke
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import torch  # noqa: E402

from bench.common import SMOKE_HELP, machine, mean_sd, save_results  # noqa: E402
from bench.domain_shifts import chosen_shifts, load_shift, shift_backbone  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.data import stratified_sample  # noqa: E402
from training.trainer import train  # noqa: E402

DEFAULT_ROWS = {"drugs": 546, "fashion": 500, "fashion-prior": 500, "smoke": 40}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench init-from", description=__doc__.split("\n")[0])
    p.add_argument("--shifts", default="drugs,fashion", help="comma-separated: drugs, fashion")
    p.add_argument("--budgets", default="10,50,200", help="comma-separated target-label budgets")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (samples, head init)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    p.add_argument("--tiny-root", default=None, help="--smoke: where the tiny backbone is written")
    return p.parse_args(argv)


def run_seed(args, shift, backbone, seed, budgets, work, cache) -> list[dict]:
    source, target_train, target_test = load_shift(shift, seed, DEFAULT_ROWS[shift])
    cfg = dict(seed=seed, progress=False, **({"epochs": 30} if args.smoke else {}))
    src = train(source, backbone, TrainConfig(name="source", **cfg), work / f"{shift}-src-{seed}", cache_dir=cache)
    rows = []
    for k in budgets:
        few = stratified_sample(target_train, min(k, len(target_train)), seed)
        row = {"shift": shift, "seed": seed, "labels": len(few)}
        for start, init in (("zero", None), ("warm", str(src.path))):
            t0 = time.perf_counter()
            r = train(few, backbone, TrainConfig(name="target", init_from=init, **cfg),
                      work / f"{shift}-{start}-{k}-{seed}", val=few, test=target_test, cache_dir=cache)
            row[f"{start}_accuracy"] = r.metrics["test"].accuracy
            row[f"{start}_macro_f1"] = r.metrics["test"].macro_f1
            row[f"{start}_seconds"] = round(time.perf_counter() - t0, 2)
            if init is not None:  # what the manifest says it started from
                row["warm_from"] = r.manifest.training["init_from"]["task"]
        row["gain_accuracy"] = row["warm_accuracy"] - row["zero_accuracy"]
        print(f"{shift} seed {seed} k={len(few)}: zero {row['zero_accuracy']:.4f}, warm {row['warm_accuracy']:.4f}",
              flush=True)
        rows.append(row)
    return rows


def report(rows, meta) -> str:
    lines = ["# Warm start (--init-from) vs from zero at a few target labels", "",
             f"Command: `{meta['command']}`; backbones {meta['backbones']}; torch threads "
             f"{meta['machine']['threads']}, {meta['machine']['cpus']} CPUs; load average before / after: "
             f"{meta['load_before']} / {meta['load_after']} (a shared machine: the accuracies do not depend on load).",
             "", "| shift | target labels | from zero acc (mean ± sd) | warm start acc (mean ± sd) | "
             "gain (mean ± sd) | from zero F1 | warm start F1 | seeds |", "|---|---|---|---|---|---|---|---|"]
    keys = dict.fromkeys((r["shift"], r["labels"]) for r in rows)
    for shift, k in keys:
        mine = [r for r in rows if r["shift"] == shift and r["labels"] == k]
        cells = [mean_sd([r[key] for r in mine]) for key in
                 ("zero_accuracy", "warm_accuracy", "gain_accuracy", "zero_macro_f1", "warm_macro_f1")]
        lines.append(f"| {shift} | {k} | " + " | ".join(f"{m:.4f} ± {sd:.4f}" for m, sd in cells[:3]) + " | "
                     + " | ".join(f"{m:.4f}" for m, _ in cells[3:]) + f" | {len(mine)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shifts = chosen_shifts(args)
    budgets = [int(b) for b in args.budgets.split(",")]
    load_before = [round(x, 2) for x in os.getloadavg()]
    rows, names = [], {}
    with tempfile.TemporaryDirectory(prefix="taskswap-init-from-") as tmp:
        work = Path(tmp)
        for shift in shifts:
            backbone, names[shift], cache = shift_backbone(shift, args, work)
            for s in args.seeds.split(","):
                rows += run_seed(args, shift, backbone, int(s), budgets, work, cache)
    meta = {"command": "python -m bench init-from " + " ".join(sys.argv[2:] if argv is None else argv),
            "backbones": names, "machine": machine(), "load_before": load_before,
            "load_after": [round(x, 2) for x in os.getloadavg()]}
    name = "init-from-smoke" if args.smoke else "init-from"
    save_results(name, {"meta": meta, "rows": rows}, report(rows, meta))
    print(report(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
