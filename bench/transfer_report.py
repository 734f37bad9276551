"""What transfer learning buys: head vs LoRA vs from-scratch at several label budgets.

For each data set (Fashion-MNIST on the ``vision`` backbone, Rotten Tomatoes on ``text``;
spoken-digits on the optional ``audio`` backbone with ``--datasets spoken-digits``: trained
on espeak-ng voices, tested on the 10 real recordings) and each budget of labelled examples
per class, trains

- ``head``: frozen pretrained backbone, features computed once, linear head;
- ``lora``: PEFT LoRA on the pretrained backbone + head (the method's default recipe,
  ``training.config.METHOD_DEFAULTS``, under the wall-clock cap);
- ``scratch``: the same architecture from random weights, trained end to end;

through the public training API (``training.trainer.train``), then scores a fixed,
stratified held-out test split that no run sees while training. Writes
``bench/results/transfer_report.{csv,md,png}``.

Costs on a shared 2-core CPU decide the settings: LoRA and scratch pass the whole trunk
forwards and backwards per step, so they get few epochs and a wall-clock cap per run
(``--max-minutes``); the caps and epochs are printed in the report. The feature cache is
off, so every ``head`` time includes its feature extraction.

    python -m bench transfer-report                       # the default, ~45 min here (shared CPU)
    python -m bench transfer-report --budgets 10 --test-size 100 --methods head   # a short run
    python -m bench transfer-report --smoke               # every method on tiny random backbones

``--task methods`` runs the fine-tuning comparison instead: head / LoRA / top_layers
(k = 1, 2, all) / scratch / a plain PEFT script, several seeds, both modalities, accuracy
against training time (``bench/top_layers_compare.py``; the arguments after ``--task methods``
are that script's, see ``--task methods --help``).

``--task tokens`` runs the token-classification part instead (taggers: head vs LoRA vs a
from-scratch BiGRU at budgets of training sentences, entity F1 and token accuracy on
punctuation restoration and silver POS / NER sets): see ``bench/transfer_report_tokens.py``.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import torch  # noqa: E402

from adapters.backbones.base import load_backbone  # noqa: E402
from bench.common import SMOKE_HELP, results_dir  # noqa: E402
from bench.top_layers_compare import main as main_methods  # noqa: E402
from bench.transfer_config import backbone_spec, config_for  # noqa: E402
from bench.transfer_report_tokens import main_tokens  # noqa: E402
from training.data import load_demo, take_per_class  # noqa: E402
from training.trainer import train  # noqa: E402

DATASETS = {"fashion-mnist": "vision", "rotten-tomatoes": "text", "spoken-digits": "audio"}
FIELDS = ["dataset", "backbone", "method", "per_class", "n_train", "n_test", "test_accuracy",
          "test_macro_f1", "train_seconds", "epochs_run", "best_epoch", "rows_seen", "capped"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", default="fashion-mnist,rotten-tomatoes",
                   help=f"comma-separated, of {list(DATASETS)}")
    p.add_argument("--methods", default="head,lora,scratch")
    p.add_argument("--task", default="pooled", choices=["pooled", "tokens", "methods"],
                   help="pooled: the classification data sets; tokens: taggers (bench/transfer_report_tokens.py); "
                        "methods: head vs LoRA vs top_layers vs scratch vs plain PEFT over seeds "
                        "(bench/top_layers_compare.py, which takes the arguments after it)")
    p.add_argument("--token-sets", default="punctuation,silver-pos,silver-ner",
                   help="--task tokens: comma-separated of punctuation, silver-pos, silver-ner")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--budgets", default=None,
                   help="labelled examples per class (default 10,50,200); --task tokens: training "
                        "sentences (default 50,200,1000)")
    p.add_argument("--head-budgets", default="500",
                   help="extra budgets for the cheap head method only ('' for none)")
    p.add_argument("--test-size", type=int, default=500, help="held-out test examples per data set")
    p.add_argument("--lora-epochs", type=int, default=None, help="default: the method's (the schedule fits the cap)")
    p.add_argument("--scratch-epochs", type=int, default=100, help="upper bound; the cap usually ends it")
    p.add_argument("--max-minutes", type=float, default=2.5, help="training-time cap per lora/scratch run")
    p.add_argument("--patience", type=int, default=1000,
                   help="lora/scratch early-stopping patience in epochs (default: none, the cap ends "
                        "the run; the state with the lowest validation loss is still the one kept)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="results folder (default: bench/results)")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--replot", action="store_true",
                   help="train nothing: rewrite the markdown and plot from the CSV in --out")
    p.add_argument("--smoke", action="store_true", help=SMOKE_HELP + (
        "; 2 per class (tokens: 10 sentences of punctuation), 20 test examples, 2 epochs; "
        "results under bench/results/transfer_report-smoke/"))
    args = p.parse_args(argv)
    if args.smoke:
        args.budgets = args.budgets or ("10" if args.task == "tokens" else "2")
        args.head_budgets, args.test_size, args.max_minutes = "", min(args.test_size, 20), 0.2
        args.lora_epochs, args.scratch_epochs = 2, 2
        if args.task == "tokens" and "--token-sets" not in (argv or []):
            args.token_sets = "punctuation"
    args.out = args.out or (results_dir() / "transfer_report-smoke" if args.smoke else results_dir())
    return args


def run(args) -> list[dict]:
    rows: list[dict] = []
    args.out.mkdir(parents=True, exist_ok=True)
    csv_path = args.out / "transfer_report.csv"
    budgets = [int(b) for b in (args.budgets or "10,50,200").split(",")]
    head_budgets = [int(b) for b in args.head_budgets.split(",") if b]
    methods = args.methods.split(",")
    plan = [(b, m) for b in budgets for m in methods]
    plan += [(b, "head") for b in head_budgets if "head" in methods and b not in budgets]
    with open(csv_path, "w", newline="") as f, tempfile.TemporaryDirectory() as tmp:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        for dataset in args.datasets.split(","):
            bb_name = DATASETS[dataset]
            backbone = load_backbone(backbone_spec(bb_name, args))
            # One pool big enough for the largest budget; budgets are per-class samples of it.
            pool = load_demo(dataset, "train", limit=max(b for b, _ in plan) * 12, seed=args.seed)
            test = load_demo(dataset, "test", limit=args.test_size, seed=args.seed)
            for per_class, method in plan:
                data = take_per_class(pool, per_class, seed=args.seed)
                cfg = config_for(method, args, f"{dataset}-{method}-{per_class}")
                start = time.perf_counter()
                r = train(data, backbone, cfg, Path(tmp) / cfg.name, test=test, cache_dir=None)
                m = r.metrics["test"]
                row = {"dataset": dataset, "backbone": backbone.spec.source, "method": method,
                       "per_class": per_class, "n_train": len(data), "n_test": len(test),
                       "test_accuracy": round(m.accuracy, 4), "test_macro_f1": round(m.macro_f1, 4),
                       "train_seconds": round(r.seconds, 1), "epochs_run": len(r.history.train_loss),
                       "best_epoch": r.history.best_epoch, "rows_seen": r.history.rows_seen,
                       "capped": r.history.time_capped}
                rows.append(row)
                writer.writerow(row)
                f.flush()
                print(f"{dataset:16} {method:8} {per_class:4}/class  acc {m.accuracy:.3f}  "
                      f"train {r.seconds:6.1f}s  (total {time.perf_counter() - start:.0f}s)", flush=True)
    return rows


def majority_rate(dataset: str, args) -> float:
    """Accuracy of always answering the test split's most frequent class (the floor to beat)."""
    test = load_demo(dataset, "test", limit=args.test_size, seed=args.seed)
    counts = test.class_counts()
    return max(counts.values()) / sum(counts.values())


def read_csv(path: Path) -> list[dict]:
    """Rows of an earlier run (numbers and flags parsed back)."""
    ints = {"per_class", "n_train", "n_test", "epochs_run", "best_epoch", "rows_seen"}
    floats = {"test_accuracy", "test_macro_f1", "train_seconds"}
    with open(path, newline="") as f:
        return [{k: int(v) if k in ints else float(v) if k in floats else (v == "True") if k == "capped"
                 else v for k, v in r.items()} for r in csv.DictReader(f)]


def write_markdown(rows: list[dict], args, seconds: float) -> Path:
    lines = ["| data set | labels / class | train examples | head acc / F1 | LoRA acc / F1 | scratch acc / F1 | "
             "train s (head / LoRA / scratch) | rows trained (LoRA / scratch) |",
             "|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["dataset"], r["per_class"]) for r in rows}, key=lambda k: (k[0], k[1]))
    for ds, pc in keys:
        by = {r["method"]: r for r in rows if r["dataset"] == ds and r["per_class"] == pc}
        acc = [f"{by[m]['test_accuracy']:.3f} / {by[m]['test_macro_f1']:.3f}{'*' if by[m]['capped'] else ''}"
               if m in by else "–" for m in ("head", "lora", "scratch")]
        secs = " / ".join(f"{by[m]['train_seconds']:.0f}" if m in by else "–" for m in ("head", "lora", "scratch"))
        seen = " / ".join(str(by[m]["rows_seen"]) if m in by else "–" for m in ("lora", "scratch"))
        n = next(iter(by.values()))["n_train"]
        lines.append(f"| {ds} | {pc} | {n} | {' | '.join(acc)} | {secs} | {seen} |")
    notes = [
        "",
        f"Test accuracy and macro-F1 on {rows[0]['n_test'] if rows else '?'} held-out examples per data set "
        f"(stratified, seed {args.seed}; always guessing the most frequent class scores "
        + ", ".join(f"{ds} {majority_rate(ds, args):.3f}" for ds in sorted({r['dataset'] for r in rows}))
        + f" accuracy); 20% of each budget is the validation split used for early stopping. "
        f"Settings: head up to 200 epochs (early stopping); LoRA r=8 on every Linear of the encoder blocks (text) "
        f"or every 1x1 convolution (vision) or every convolution of the embedder (audio), the method's default "
        f"recipe ({config_for('lora', args, 'x').epochs} epochs, warm-up and decay "
        f"fitted to the cap, the epoch of the best validation accuracy kept); scratch at most "
        f"{args.scratch_epochs} epochs, keeping the state with the lowest validation loss seen (patience "
        f"{args.patience} epochs); both capped at {args.max_minutes} min of training per run "
        f"(* = stopped by the cap, mid-epoch if need be; 'rows trained' counts training rows passed through the "
        f"trunk, so rows < 0.8 x examples means less than one epoch). "
        f"Training seconds include feature extraction (no cache). "
        f"One run, {platform.machine()} CPU, {torch.get_num_threads()} torch threads, on a machine shared "
        f"with other jobs: times are indicative. Sum of the training times: "
        f"{sum(r['train_seconds'] for r in rows) / 60:.1f} min" + (f"; whole run {seconds / 60:.1f} min." if seconds else "."),
    ]
    path = args.out / "transfer_report.md"
    path.write_text("\n".join(lines + notes) + "\n")
    return path


def plot(rows: list[dict], args) -> Path:
    """Top row: test accuracy per budget; bottom row: training seconds (log scale)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r["dataset"] for r in rows})
    fig, axes = plt.subplots(2, len(datasets), figsize=(5.5 * len(datasets), 7), squeeze=False)
    for col, ds in enumerate(datasets):
        acc_ax, time_ax = axes[0][col], axes[1][col]
        for method, style in (("head", "o-"), ("lora", "s-"), ("scratch", "^--")):
            pts = sorted((r["per_class"], r["test_accuracy"], r["train_seconds"]) for r in rows
                         if r["dataset"] == ds and r["method"] == method)
            if pts:
                acc_ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=method)
                time_ax.plot([p[0] for p in pts], [p[2] for p in pts], style, label=method)
        acc_ax.axhline(majority_rate(ds, args), color="grey", linestyle=":", label="most frequent class")
        acc_ax.set_ylabel("test accuracy")
        acc_ax.set_ylim(0, 1)
        acc_ax.set_title(f"{ds} ({DATASETS[ds]} backbone)")
        time_ax.set_ylabel("training seconds (shared CPU)")
        time_ax.set_yscale("log")
        for ax in (acc_ax, time_ax):
            ax.set_xscale("log")
            ax.set_xlabel("labelled examples per class")
            ax.legend(fontsize=8)
    fig.tight_layout()
    path = args.out / "transfer_report.png"
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--task" in argv and argv[argv.index("--task") + 1:][:1] == ["methods"]:
        at = argv.index("--task")
        main_methods(argv[:at] + argv[at + 2:])
        return 0
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        args.tiny_root = tmp  # the --smoke backbones
        return main_tokens(args) if args.task == "tokens" else main_pooled(args)


def main_pooled(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows = read_csv(args.out / "transfer_report.csv") if args.replot else run(args)
    md = write_markdown(rows, args, 0.0 if args.replot else time.perf_counter() - start)
    png = plot(rows, args)
    print(md.read_text())
    print(f"wrote {args.out / 'transfer_report.csv'}, {md}, {png}")
    return 0

