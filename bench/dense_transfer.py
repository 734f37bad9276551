"""Transfer report for dense tasks: a head on the frozen trunk vs LoRA on the trunk + head vs the
top blocks' own copy + head vs a from-scratch conv net with the same head, at three training-set
sizes, over seeds, each run under the same cap on its training time (maps included; for LoRA and
top layers the warm start's head fit too, :mod:`training.dense.warm`).

    python -m bench dense-transfer                     # the full report, ~20 min on 1 thread
    python -m bench dense-transfer --smoke             # a tiny random backbone: checks it runs

- detection: ``shapes-detect`` canvases (Fashion-MNIST objects on clutter, exact boxes),
  ``--det-sizes`` training canvases drawn with each seed, the same ``--det-test`` held-out
  canvases for every run; COCO mAP@.5 and mAP@[.5:.95] of the served decoding (pycocotools,
  as the trainer scores);
- segmentation: ``brain-regions`` (Colin27 T1 slices, grouped AAL regions), ``--seg-sizes``
  training slices drawn at random (seeded) from the training range, scored on the held-out
  slices (mIoU, scikit-learn's ``jaccard_score`` as the trainer) and on the same slices of the
  skull-stripped volume (a domain shift).

Every run goes through the training-method table (``fits_dense``: head, lora, top_layers,
scratch) exactly as
``taskswap train --task-type ... --method ...`` does, with ``max_seconds`` = ``--cap``; the
order of the methods rotates from run to run so that a change of machine load falls on each.
The goal checked: the frozen-trunk head's detection mAP@[.5:.95] (and mAP@.5) at the smallest size
at least 2x the scratch model's. Results: ``bench/results/dense_transfer.{md,json}``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from bench.common import SMOKE_HELP, VISION_SPEC, load, machine, mean_sd, save_results, smoke_specs
from training.dense import demos
from training.dense.fit import DenseFitConfig
from training.dense_run import score
from training.methods import METHODS
from training.tasks import training_task

GOAL = 2.0  # head mAP / scratch mAP at the smallest size
METRICS = {"detection": ("map50", "map"), "segmentation": ("miou", "pixel_accuracy")}
WORDS = {"map50": "mAP@.5", "map": "mAP@[.5:.95]", "miou": "mIoU", "pixel_accuracy": "pixel acc.",
         "miou_ch2bet": "mIoU ch2bet"}


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--det-sizes", type=_ints, default=[50, 200, 800], help="training canvases (detection)")
    ap.add_argument("--seg-sizes", type=_ints, default=[10, 30, 100], help="training slices (segmentation)")
    ap.add_argument("--det-test", type=int, default=60, help="held-out canvases (detection)")
    ap.add_argument("--seeds", type=_ints, default=[0, 1, 2])
    ap.add_argument("--cap", type=float, default=15.0, help="seconds of training per run, maps included")
    ap.add_argument("--epochs", type=int, default=40, help="epochs when the cap does not stop a run first")
    ap.add_argument("--input-size", type=int, default=96, help="square input size of every run")
    ap.add_argument("--flip", action="store_true", help="add every training image's mirror image (twice the "
                    "trunk work per epoch; off by default)")
    ap.add_argument("--types", default="detection,segmentation")
    ap.add_argument("--methods", default=",".join(k for k, m in METHODS.items() if m.fits_dense))
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP + "; 1 seed, sizes 4/8, 1 s cap")
    args = ap.parse_args(argv)
    if args.smoke:
        args.det_sizes, args.seg_sizes, args.det_test, args.seeds = [4, 8], [4, 8], 4, [0]
        args.cap, args.epochs, args.input_size = 1.0, 2, 64
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="dense-transfer-") as tmp:
        run(args, Path(tmp))


def _data(task_type: str, args):
    """``(train_for(size, seed), tests)`` of ``task_type``'s demo."""
    if task_type == "detection":  # the bench names its two data sets; the trainers do not
        tests = {"test": demos.shapes_detect("test", args.det_test, 0)}
        return (lambda n, seed: demos.shapes_detect("train", n, seed)), tests
    full = demos.brain_regions("train")
    tests = {"test": demos.brain_regions("test"), "ch2bet": demos.brain_regions("test", "ch2bet")}

    def slices(n: int, seed: int):
        return full.subset(sorted(random.Random(seed).sample(range(len(full)), min(n, len(full)))))
    return slices, tests


def run(args, root: Path) -> None:
    spec = smoke_specs(root / "backbones")[1] if args.smoke else VISION_SPEC
    bb = load(replace(spec, image_size=args.input_size))
    methods = args.methods.split(",")
    rows, started, loads = [], time.perf_counter(), []
    turn = 0
    for task_type in args.types.split(","):
        task = training_task(task_type)
        train_for, tests = _data(task_type, args)
        sizes = args.det_sizes if task_type == "detection" else args.seg_sizes
        for n in sizes:
            for seed in args.seeds:
                train = train_for(n, seed)
                order = methods[turn % len(methods):] + methods[:turn % len(methods)]
                turn += 1
                for method in order:
                    cfg = DenseFitConfig(task_type, list(task.default_strides), method=method,
                                         input_size=args.input_size, epochs=args.epochs, seed=seed,
                                         max_seconds=args.cap, progress=False, width=32, flip=args.flip)
                    fit = METHODS[method].fit_dense(bb, train, cfg, task)
                    scores = {split: score(fit, d, cfg) for split, d in tests.items()}
                    warm = fit.notes.get("warm_start") or {}
                    row = {"task_type": task_type, "size": n, "seed": seed, "method": method,
                           "epochs_run": len(fit.history), "warm_epochs": warm.get("head_epochs", 0), "fit_s": round(fit.seconds["fit"] + fit.seconds["trunk"], 1),
                           **{k: scores["test"][k] for k in METRICS[task_type]}}
                    if "ch2bet" in scores:
                        row["miou_ch2bet"] = scores["ch2bet"]["miou"]
                    rows.append(row)
                    loads.append(machine()["load_avg"][0])
                    print(f"{task_type} n={n} seed={seed} {method}: "
                          + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                      for k, v in row.items() if k not in ("task_type", "size", "seed", "method")),
                          flush=True)
    report(args, rows, loads, time.perf_counter() - started)


def _warm(rows: list[dict]) -> str:
    """`` (+ k)``: the mean epochs of the warm start's head fit, when the method has one."""
    k = statistics.mean(r.get("warm_epochs", 0) for r in rows)
    return f" (+ {k:.0f})" if k else ""


def _summary(rows: list[dict], key: str) -> tuple[float, float]:
    return mean_sd([r[key] for r in rows])


def report(args, rows: list[dict], loads: list[float], seconds: float) -> None:
    m = machine()
    cmd = "python -m bench dense-transfer" + (" --smoke" if args.smoke else
                                             (f" --det-sizes {','.join(map(str, args.det_sizes))} --seg-sizes {','.join(map(str, args.seg_sizes))}"
                                              f" --det-test {args.det_test} --cap {args.cap:g} --input-size {args.input_size}"
                                              f" --threads {args.threads}{' --flip' if args.flip else ''}"))
    md = [f"# Dense transfer: frozen-trunk head vs LoRA vs top layers vs from scratch ({'tiny random backbone' if args.smoke else 'MobileNetV2, ImageNet weights'})",
          "", f"`{cmd}`; {m['cpus']} CPUs, torch {m['torch']}, {args.threads} thread(s), "
          f"{args.input_size} px, flips {'on' if args.flip else 'off'}, training capped at {args.cap:g} s per run (maps included, at most "
          f"{args.epochs} epochs), seeds {args.seeds}; load average (1 min) {min(loads):.1f}-{max(loads):.1f} "
          f"over the run ({seconds / 60:.1f} min). Mean ± sd over seeds.", ""]
    goal = {}
    for task_type in dict.fromkeys(r["task_type"] for r in rows):
        keys = list(METRICS[task_type]) + (["miou_ch2bet"] if task_type == "segmentation" else [])
        md += [f"## {task_type}", "", "| train size | method | " + " | ".join(WORDS[k] for k in keys)
               + " | epochs run (+ warm-start head epochs) | seconds |", "|---" * (len(keys) + 4) + "|"]
        sizes = list(dict.fromkeys(r["size"] for r in rows if r["task_type"] == task_type))
        for n in sizes:
            for method in dict.fromkeys(r["method"] for r in rows):
                sel = [r for r in rows if r["task_type"] == task_type and r["size"] == n and r["method"] == method]
                if not sel:
                    continue
                cells = ["{:.3f} ± {:.3f}".format(*_summary(sel, k)) for k in keys]
                md.append(f"| {n} | {method} | " + " | ".join(cells)
                          + f" | {statistics.mean(r['epochs_run'] for r in sel):.0f}{_warm(sel)} "
                          f"| {statistics.mean(r['fit_s'] for r in sel):.1f} |")
        first = [r for r in rows if r["task_type"] == task_type and r["size"] == sizes[0]]
        head = [r for r in first if r["method"] == "head"]
        scratch = [r for r in first if r["method"] == "scratch"]
        if head and scratch:
            for k in METRICS[task_type][:2]:
                h, s = _summary(head, k)[0], _summary(scratch, k)[0]
                goal[f"{task_type}_{k}"] = round(h / s, 2) if s > 0 else None
                md.append("")
                ratio = f"{h / s:.2f}x the scratch model's" if s > 0 else "against a scratch model that scored 0"
                md.append(f"At {sizes[0]} {task_type} training images the frozen-trunk head's {WORDS[k]} is "
                          f"{ratio} ({h:.3f} vs {s:.3f})"
                          + (f"; goal {GOAL:g}x." if task_type == "detection" else "."))
        md.append("")
    md.append("Under load: every figure here was taken on a shared machine at the load average stated "
              "above; the cap counts wall time, so a loaded machine gives every method fewer steps.")
    print("\n".join(md))
    save_results("dense_transfer" + ("-smoke" if args.smoke else ""),
                 {"machine": m, "args": vars(args), "rows": rows, "head_over_scratch_smallest": goal,
                  "goal": GOAL, "load_avg_range": [min(loads), max(loads)], "seconds": round(seconds, 1)},
                 "\n".join(md) + "\n")
