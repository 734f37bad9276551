"""Domain adaptation on real shifts: how much of the source-only -> target-supervised gap
each unsupervised method closes.

Shifts (:mod:`bench.domain_shifts`): ``drugs`` (film reviews -> drug reviews, MiniLM) and
``fashion`` (Fashion-MNIST photos -> the same garments rendered as negatives, MobileNetV2).
Per shift and seed:

- ``source-only``: a head trained on the source data (``taskswap train --method head``),
  scored on the target test split;
- ``coral``: that head adapted with the target *training* inputs, labels unused
  (:func:`training.adapt.adapt`, a head adapter);
- ``pseudo_label``: that head's trunk self-trained with a LoRA on a subsample of the same
  unlabelled target inputs (``--adapt-rows``; a LoRA adapter);
- ``label_shift``: that head with the target class prior re-estimated by EM over its
  calibrated posteriors of the target training inputs, folded into its bias (a head adapter);
- ``coral+label_shift``, ``pseudo_label+label_shift``: the first method, then the prior;
- ``target-supervised``: a head trained on the labelled target training inputs (the same
  label budget as the source), scored on the same test split.

``gap closed = (method - source-only) / (target-supervised - source-only)`` on accuracy and
on macro-F1. Writes ``bench/results/domain.{json,md}``.

    python -m bench domain --threads 1                  # both shifts, 3 seeds
    python -m bench domain --shifts fashion --seeds 0 --threads 1
    python -m bench domain --methods coral,label_shift,coral+label_shift --threads 1
    python -m bench domain --smoke                      # a tiny random backbone, made-up texts
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
from training.adapt import adapt  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.domain import ADAPTATIONS, AdaptConfig, adaptation_method  # noqa: E402
from training.trainer import train  # noqa: E402

METHODS = tuple(ADAPTATIONS)  # every method in the table, unless --methods names fewer
DEFAULT_ROWS = {"drugs": 546, "fashion": 500, "fashion-prior": 500}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench domain", description=__doc__.split("\n")[0])
    p.add_argument("--shifts", default="drugs,fashion",
                   help="comma-separated: drugs, fashion, fashion-prior (a pure class-prior shift)")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated adaptation methods (default: all, {', '.join(METHODS)})")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (source sample, head init, LoRA)")
    p.add_argument("--rows", type=int, default=None,
                   help="source and target training rows per shift (default: drugs 546 = all, fashion 500)")
    p.add_argument("--adapt-rows", type=int, default=256,
                   help="methods that train the trunk (pseudo_label): the unlabelled target inputs they "
                        "train on (a seeded subsample)")
    p.add_argument("--shrinkage", type=float, default=0.1, help="CORAL covariance shrinkage")
    p.add_argument("--epochs", type=int, default=2, help="pseudo_label: epochs over the target inputs")
    p.add_argument("--lr", type=float, default=5e-4, help="pseudo_label: LoRA learning rate")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--results", default="domain",
                   help="results file name under bench/results (default domain; --smoke adds -smoke)")
    p.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    p.add_argument("--tiny-root", default=None, help="--smoke: where the tiny backbone is written")
    return p.parse_args(argv)


def _adapt(args, method, src, target_train, target_test, seed, work, backbone, cache):
    inputs = list(target_train.inputs)
    if adaptation_method(method).trunk_changed and len(inputs) > args.adapt_rows:  # a bench setting
        order = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(seed)).tolist()
        inputs = [inputs[i] for i in order[:args.adapt_rows]]
    cfg = AdaptConfig(method=method, shrinkage=args.shrinkage, seed=seed, progress=False, epochs=args.epochs,
                      lr=args.lr, batch_size=8 if args.smoke else 16)
    return adapt(src.path, inputs, work / f"{method}-{seed}", cfg, backbone, target_labelled=target_test,
                 target_description=target_train.source, cache_dir=cache)


def run_seed(args, shift: str, backbone, seed: int, work: Path, cache) -> dict:
    rows = args.rows or (40 if args.smoke else DEFAULT_ROWS[shift])
    source, target_train, target_test = load_shift(shift, seed, rows)
    cfg = dict(seed=seed, progress=False, **({"epochs": 30} if args.smoke else {}))
    t0 = time.perf_counter()
    src = train(source, backbone, TrainConfig(name="source", **cfg), work / f"{shift}-src-{seed}", cache_dir=cache)
    tgt = train(target_train, backbone, TrainConfig(name="target", **cfg), work / f"{shift}-tgt-{seed}",
                test=target_test, cache_dir=cache)
    row = {"shift": shift, "seed": seed, "n_source": len(source), "n_target_train": len(target_train),
           "n_target_test": len(target_test), "adapt_rows": min(args.adapt_rows, len(target_train))}
    for method in args.method_list:
        r = _adapt(args, method, src, target_train, target_test, seed, work / shift, backbone, cache)
        row[f"{method}_seconds"] = round(r.seconds, 1)
        for metric in ("accuracy", "macro_f1"):
            s, c = getattr(r.metrics["source"], metric), getattr(r.metrics["adapted"], metric)
            t = getattr(tgt.metrics["test"], metric)
            row.update({f"source_only_{metric}": s, f"{method}_{metric}": c, f"target_supervised_{metric}": t,
                        f"{method}_gap_closed_{metric}": (c - s) / (t - s) if abs(t - s) > 1e-9 else None})
    row["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"{shift} seed {seed}: accuracy source-only {row['source_only_accuracy']:.4f}, "
          + ", ".join(f"{m} {row[f'{m}_accuracy']:.4f}" for m in args.method_list)
          + f", target-supervised {row['target_supervised_accuracy']:.4f} ({row['seconds']}s)", flush=True)
    return row


def _mean_sd(rows, key) -> tuple[float | None, float | None]:
    vals = [r[key] for r in rows if r[key] is not None]
    return mean_sd(vals) if vals else (None, None)


def report(rows, meta) -> str:
    methods = meta["methods"]
    f = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    lines = ["# Domain adaptation: the share of the source-only -> target-supervised gap each method closes", "",
             f"Command: `{meta['command']}`; backbones {meta['backbones']}; torch threads "
             f"{meta['machine']['threads']}, {meta['machine']['cpus']} CPUs; load average before / after: "
             f"{meta['load_before']} / {meta['load_after']} (a shared machine: the accuracies do not depend "
             "on load, the seconds do).", "",
             "| shift | seed | source-only acc | " + " | ".join(f"{m} acc" for m in methods)
             + " | target-supervised acc | " + " | ".join(f"{m} gap closed (acc / F1)" for m in methods) + " |",
             "|---" * (4 + 2 * len(methods)) + "|"]
    for r in rows:
        lines.append(f"| {r['shift']} | {r['seed']} | {f(r['source_only_accuracy'])} | "
                     + " | ".join(f(r[f"{m}_accuracy"]) for m in methods)
                     + f" | {f(r['target_supervised_accuracy'])} | "
                     + " | ".join(f"{f(r[f'{m}_gap_closed_accuracy'])} / {f(r[f'{m}_gap_closed_macro_f1'])}"
                                  for m in methods) + " |")
    lines += ["", "| shift | method | gap closed, accuracy (mean ± sd) | gap closed, macro-F1 (mean ± sd) | seeds |",
              "|---|---|---|---|---|"]
    for shift in dict.fromkeys(r["shift"] for r in rows):
        mine = [r for r in rows if r["shift"] == shift]
        for m in methods:
            cells = []
            for metric in ("accuracy", "macro_f1"):
                mean, sd = _mean_sd(mine, f"{m}_gap_closed_{metric}")
                cells.append(f"{f(mean)} ± {f(sd)}")
            lines.append(f"| {shift} | {m} | {cells[0]} | {cells[1]} | {len(mine)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    args.method_list = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.method_list if m not in ADAPTATIONS]
    if unknown or not args.method_list:
        raise SystemExit(f"unknown methods {unknown}; use some of {', '.join(METHODS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    shifts = chosen_shifts(args)
    load_before = [round(x, 2) for x in os.getloadavg()]
    rows, names = [], {}
    with tempfile.TemporaryDirectory(prefix="taskswap-domain-") as tmp:
        work = Path(tmp)
        for shift in shifts:
            backbone, names[shift], cache = shift_backbone(shift, args, work)
            rows += [run_seed(args, shift, backbone, int(s), work, cache) for s in args.seeds.split(",")]
    meta = {"command": "python -m bench domain " + " ".join(sys.argv[2:] if argv is None else argv),
            "backbones": names, "machine": machine(), "load_before": load_before,
            "load_after": [round(x, 2) for x in os.getloadavg()], "methods": args.method_list,
            "shrinkage": args.shrinkage,
            "pseudo_label": {"epochs": args.epochs, "lr": args.lr, "adapt_rows": args.adapt_rows}}
    name = args.results + ("-smoke" if args.smoke else "")
    save_results(name, {"meta": meta, "rows": rows}, report(rows, meta))
    print(report(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
