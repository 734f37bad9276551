"""Head vs LoRA vs top_layers (k = 1, 2, all) vs scratch vs a plain PEFT script: test accuracy
and training time per labels-per-class budget, several seeds, every fine-tuning run under
one wall-clock cap.

    python -m bench top-layers-compare --per-class 200 --seeds 0 1 2 --test 1000 --cap-min 3 --threads 1

Text: Rotten Tomatoes (2 classes) on MiniLM-L6; vision (``--modality vision``): Fashion-MNIST
(10 classes) on MobileNetV2 at 96 px. The demo's train/test split is fixed (seed 0); per seed,
the labelled set is a stratified sample of ``2 x per-class`` (text) or ``10 x per-class``
(vision) examples of the train split and the test set is the same ``--test`` stratified
examples of the test split for every seed and method. Project methods train through
``training.trainer.train`` with their defaults (``taskswap train``; 20% of the labelled set
validates); ``plain peft`` (:mod:`bench.peft_plain`, text only) trains on the whole labelled
set with no validation. ``--extra '{"name": {TrainConfig overrides}}'`` adds variants;
``{"plain_epochs": 6, "plain_targets": "all", ...}`` is a variant of the plain script
(``plain_`` + a keyword of ``plain_peft``).

Results: ``bench/results/NAME.{md,json,png}`` (the png: test accuracy against training
seconds, mean and seed range per method, one panel per modality and labels per class), saved
after every run; a rerun with the same ``--out-name`` skips the (modality, per-class, method,
seed) rows already there, so a long grid can be run in pieces, and ``--merge OTHER...`` adds
the rows of other result files (pieces run side by side) and rewrites the report.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from adapters.backbones.base import resolve_source
from bench.common import SMOKE_HELP, load, machine, results_dir, save_results, smoke_specs
from bench.peft_plain import plain_peft
from bench.splits import DATASET, labelled_and_test
from training.config import TrainConfig
from training.data import stratified_sample
from training.trainer import train

# name -> TrainConfig overrides; "layers": "all" is every block of the backbone.
METHODS = {
    "head": {},
    "lora": {"method": "lora"},
    "top_layers k=1": {"method": "top_layers", "layers": 1},
    "top_layers k=2": {"method": "top_layers", "layers": 2},
    "top_layers k=all": {"method": "top_layers", "layers": "all"},
    "scratch": {"method": "scratch"},
    "plain peft": None,  # bench.peft_plain
    "plain peft 6 epochs": {"plain_epochs": 6},  # the same script given more of the budget
}
DEFAULT_METHODS = "head,lora,top_layers k=1,top_layers k=2,top_layers k=all,scratch,plain peft"
def _blocks(bb) -> int:
    from adapters.kinds.top_layers import LAYOUTS
    return len(LAYOUTS[bb.model_type].block_modules(bb.model))


def run_one(bb, modality: str, method: str, overrides: dict | None, labelled, test, seed: int,
            cap_min: float) -> dict:
    if _plain(overrides):
        kw = {k.removeprefix("plain_"): v for k, v in (overrides or {}).items()}
        r = plain_peft(resolve_source(bb.spec.source), labelled, test, seed=seed, max_minutes=cap_min,
                       max_length=bb.spec.max_length, **{"epochs": 2, **kw})
        return {"test_accuracy": round(r.test_accuracy, 4), "val_accuracy": None,
                "train_seconds": round(r.train_seconds, 1), "best_epoch": None,
                "epochs_run": round(r.epochs_run, 2), "time_capped": r.time_capped}
    kw = {"method": "head", **overrides}
    all_data = kw.pop("all_data", False)  # probe: train on every labelled example, keep the last epoch
    val = None
    if all_data:  # validation: 2 per class *of the training set*, scored but never used to choose
        kw["select"] = "last"
        val = stratified_sample(labelled, 2 * len(labelled.label_names), seed)
    if kw.get("layers") == "all":
        kw["layers"] = _blocks(bb)
    cfg = TrainConfig(name="bench", seed=seed, progress=False,
                      max_train_minutes=None if kw["method"] == "head" else cap_min, **kw)
    with tempfile.TemporaryDirectory() as tmp:
        r = train(labelled, bb, cfg, Path(tmp) / "a", val=val, test=test, cache_dir=None)
    return {"test_accuracy": round(r.metrics["test"].accuracy, 4),
            "val_accuracy": round(r.metrics["validation"].accuracy, 4),
            "train_seconds": round(r.seconds, 1), "best_epoch": r.history.best_epoch,
            "epochs_run": len(r.history.train_loss), "time_capped": r.history.time_capped,
            "val_loss_curve": [round(x, 4) for x in r.history.val_loss],
            "val_accuracy_curve": [round(x, 4) for x in r.history.val_accuracy]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--modality", choices=sorted(DATASET), default="text")
    ap.add_argument("--per-class", type=int, nargs="+", default=[200])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--cap-min", type=float, default=3.0, help="wall-clock cap per fine-tuning run")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--methods", default=DEFAULT_METHODS, help=f"comma-separated, of: {', '.join(METHODS)}")
    ap.add_argument("--extra", default="{}", help="JSON {name: TrainConfig overrides} of more variants")
    ap.add_argument("--out-name", default=None, help="bench/results/NAME.{md,json} (default top_layers_accuracy)")
    ap.add_argument("--dev", action="store_true", help="score on held-out train-split examples, not the test split")
    ap.add_argument("--merge", nargs="*", default=None,
                    help="train nothing: add the rows of these result names (bench/results/NAME.json) "
                         "to --out-name's and rewrite its report")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP + "; 4 per class, 1 seed, 20 test examples")
    args = ap.parse_args(argv)
    if args.smoke:
        args.per_class, args.seeds, args.test, args.cap_min = [4], [0], 20, 0.2
    args.out_name = args.out_name or ("top_layers_accuracy-smoke" if args.smoke else "top_layers_accuracy")
    torch.set_num_threads(args.threads)
    methods = {**METHODS, **json.loads(args.extra)}
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in methods]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; choose of {list(methods)} or add them with --extra")
    path = results_dir() / f"{args.out_name}.json"
    saved = json.loads(path.read_text()) if path.is_file() else {"rows": [], "methods": {}}
    rows = saved["rows"]
    _adopt_methods(methods, saved)
    done = {_key(r) for r in rows}
    if args.merge is not None:  # --merge alone: rewrite the report from the rows already here
        for other in args.merge:
            piece = json.loads((results_dir() / f"{other}.json").read_text())
            _adopt_methods(methods, piece)
            rows += [r for r in piece["rows"] if _key(r) not in done]
            done = {_key(r) for r in rows}
        _save(rows, args, methods)
        return
    with tempfile.TemporaryDirectory() as tmp:
        spec = smoke_specs(Path(tmp))[args.modality == "vision"] if args.smoke else DATASET[args.modality][1]
        _run_grid(load(spec), args, names, methods, rows, done)


def _run_grid(bb, args, names: list[str], methods: dict, rows: list[dict], done: set) -> None:
    """Every (labels per class, seed, method) not in ``done``; ``rows`` grows and is saved after each."""
    for n in args.per_class:
        for seed in args.seeds:
            labelled, test = labelled_and_test(n, seed, args.test, args.modality, args.dev)
            for name in names:
                if (args.modality, n, name, seed) in done:
                    continue
                if _plain(methods[name]) and args.modality != "text":
                    continue  # the plain PEFT script is a text classifier
                start = time.perf_counter()
                row = run_one(bb, args.modality, name, methods[name], labelled, test, seed, args.cap_min)
                row = {"modality": args.modality, "per_class": n, "method": name, "seed": seed,
                       "labelled": len(labelled), "test": len(test), "cap_min": args.cap_min,
                       **row, "with_eval_seconds": round(time.perf_counter() - start, 1),
                       "load_avg_1m": round(machine()["load_avg"][0], 2)}
                rows.append(row)
                print(row, flush=True)
                _save(rows, args, methods)


def _adopt_methods(methods: dict, saved: dict) -> None:
    """Variants already run keep their recorded overrides, so a rerun or merge need not repeat
    ``--extra``; names given on this command line win."""
    methods.update({m: v for m, v in saved.get("methods", {}).items() if m not in methods})


def _plain(overrides: dict | None) -> bool:
    """A ``plain peft`` variant: None, or ``plain_*`` keyword arguments of ``bench.peft_plain.plain_peft``."""
    return overrides is None or any(k.startswith("plain_") for k in overrides)


def _key(row: dict) -> tuple:
    """What a run is: a rerun or a merge skips a row whose key is already there."""
    return row["modality"], row["per_class"], row["method"], row["seed"]


def summarise(rows: list[dict]) -> list[dict]:
    """Mean, min and max test accuracy and mean training seconds per (modality, per-class, method)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["modality"], r["per_class"], r["method"]), []).append(r)
    order = list(METHODS)

    def key(k):  # modality, labels per class, the built-in methods in their order, then variants by name
        return (k[0], k[1], order.index(k[2]) if k[2] in order else len(order), k[2])
    out = []
    for (modality, n, method), rs in sorted(groups.items(), key=lambda kv: key(kv[0])):
        acc = [r["test_accuracy"] for r in rs]
        out.append({"modality": modality, "per_class": n, "method": method, "seeds": len(rs),
                    "mean": statistics.fmean(acc), "min": min(acc), "max": max(acc),
                    "sd": statistics.stdev(acc) if len(acc) > 1 else None,
                    "train_seconds": statistics.fmean(r["train_seconds"] for r in rs),
                    "capped": sum(bool(r["time_capped"]) for r in rs),
                    "epochs": statistics.fmean(float(r["epochs_run"]) for r in rs)})
    return out


def _save(rows, args, methods) -> None:
    loads = [r["load_avg_1m"] for r in rows]
    md = ["# Head vs LoRA vs top layers vs scratch vs plain PEFT", "",
          f"Rows of one or more invocations of `python -m bench top-layers-compare ... --out-name "
          f"{args.out_name}{' --dev' if args.dev else ''}` (a rerun skips the rows already here; `--merge` "
          f"joins pieces run side by side); each run's modality, labels per class, seed, cap and load are in "
          f"the runs table. {machine()['cpus']} CPUs, torch {machine()['torch']}, 1-minute load average "
          f"{min(loads):.1f}-{max(loads):.1f} at the end of the runs. Fine-tuning capped at the first step "
          "past the cap" + (f" ({args.cap_min} min)" if len({r['cap_min'] for r in rows}) == 1 else "")
          + (". Scored on held-out texts of the train split (`--dev`), not the test split." if args.dev else ".")
          , "",
          "## Summary (test accuracy over seeds)", "",
          "| modality | labels/class | method | seeds | mean | sd | min-max | train s (mean) | epochs (mean) | capped |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summarise(rows):
        sd = f"{s['sd']:.3f}" if s["sd"] is not None else "-"
        md.append(f"| {s['modality']} | {s['per_class']} | {s['method']} | {s['seeds']} | {s['mean']:.4f} | {sd} | "
                  f"{s['min']:.3f}-{s['max']:.3f} | {s['train_seconds']:.0f} | {s['epochs']:.1f} | "
                  f"{s['capped']}/{s['seeds']} |")
    md += ["", "## Runs", "",
           "| modality | labels/class | method | seed | test acc | val acc | train s | best epoch / run | cap min | capped | load |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        val = f"{r['val_accuracy']:.4f}" if r["val_accuracy"] is not None else "-"
        md.append(f"| {r['modality']} | {r['per_class']} | {r['method']} | {r['seed']} | {r['test_accuracy']:.4f} | "
                  f"{val} | {r['train_seconds']} | {r['best_epoch']} / {r['epochs_run']} | {r['cap_min']} | {r['time_capped']} | "
                  f"{r['load_avg_1m']} |")
    md += ["", "Methods (TrainConfig overrides on the defaults; plain peft: `bench/peft_plain.py`):", ""]
    md += [f"- {name}: `{json.dumps(methods.get(name))}`" for name in dict.fromkeys(r["method"] for r in rows)]
    used = {r["method"] for r in rows}
    save_results(args.out_name, {"machine": machine(), "args": vars(args), "rows": rows,
                                 "methods": {m: methods.get(m) for m in sorted(used)},
                                 "summary": summarise(rows)}, "\n".join(md) + "\n")
    plot(rows, results_dir() / f"{args.out_name}.png")


def plot(rows: list[dict], path: Path) -> None:
    """Test accuracy (mean over seeds, bar = min-max) against mean training seconds, one panel
    per (modality, labels per class)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarise(rows)
    panels = sorted({(s["modality"], s["per_class"]) for s in summary})
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2), squeeze=False)
    for ax, (modality, n) in zip(axes[0], panels):
        for s in (s for s in summary if (s["modality"], s["per_class"]) == (modality, n)):
            ax.errorbar([s["train_seconds"]], [s["mean"]], yerr=[[s["mean"] - s["min"]], [s["max"] - s["mean"]]],
                        fmt="o", capsize=3)
            ax.annotate(f"{s['method']} ({s['seeds']})", (s["train_seconds"], s["mean"]), fontsize=7,
                        xytext=(4, 2), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("training seconds (mean; this machine)")
        ax.set_ylabel("test accuracy (mean, min-max over seeds)")
        ax.set_title(f"{modality}, {n} labels per class")
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)

