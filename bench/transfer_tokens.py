"""What transfer buys a tagger: head vs LoRA on punctuation restoration at a few label budgets.

The token-classification counterpart of ``bench/transfer_report.py``: the ``punctuation``
demo data (Rotten Tomatoes snippets, tags from their own punctuation; see
``training/data/tokens.py``) on the embedded MiniLM-L6, each budget a number of training
sentences (20% of them carved off for validation), the same held-out test sentences for
every run, trained through the public API (``training.tokens.train_tokens``). LoRA runs
get a wall-clock cap (``--max-minutes``) and few epochs on a shared CPU. Writes
``bench/results/transfer_tokens.{json,md}``.

    python -m bench.transfer_tokens                      # budgets 50,200; ~10 min on 2 busy cores
    python -m bench.transfer_tokens --budgets 20 --test-size 50 --methods head   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

from adapters.backbones.base import load_backbone  # noqa: E402
from adapters.backbones.defaults import default_spec  # noqa: E402
from bench.common import machine  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.data.tokens import load_punctuation  # noqa: E402
from training.tokens import train_tokens  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budgets", default="50,200", help="training sentences per run")
    p.add_argument("--methods", default="head,lora")
    p.add_argument("--test-size", type=int, default=200, help="held-out test sentences")
    p.add_argument("--lora-epochs", type=int, default=4)
    p.add_argument("--max-minutes", type=float, default=1.5, help="training-time cap per LoRA run")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="transfer_tokens")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    bb = load_backbone(default_spec("text"))
    test = load_punctuation("test", limit=args.test_size, seed=0)
    rows, start = [], time.perf_counter()
    for n in [int(x) for x in args.budgets.split(",")]:
        data = load_punctuation("train", limit=n, seed=0)
        for method in args.methods.split(","):
            extra = {"epochs": args.lora_epochs, "max_train_minutes": args.max_minutes} if method == "lora" else {}
            cfg = TrainConfig(name=f"punct-{method}-{n}", task_type="token_classification", method=method,
                              progress=False, **extra)
            with tempfile.TemporaryDirectory() as tmp:
                r = train_tokens(data, bb, cfg, Path(tmp) / "out", test=test)
            m = r.metrics["test"]
            rows.append({"method": method, "train_sentences": n, "test_sentences": m.sentences,
                         "test_words": m.n, "token_accuracy": m.accuracy, "entity_f1": m.f1,
                         "per_type_f1": {t.label: t.f1 for t in m.per_type},
                         "train_seconds": round(r.seconds, 1), "epochs_run": len(r.history.train_loss),
                         "time_capped": r.history.time_capped})
            print(rows[-1], flush=True)
    payload = {"machine": machine(), "args": vars(args), "seconds": round(time.perf_counter() - start, 1),
               "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / f"{args.out}.md").write_text(markdown(payload))
    print(markdown(payload))
    return rows


def markdown(payload: dict) -> str:
    mc, a = payload["machine"], payload["args"]
    types = sorted({k for r in payload["rows"] for k in r["per_type_f1"]})
    lines = ["# Punctuation restoration: head vs LoRA on MiniLM-L6", "",
             f"Machine: {mc['cpus']} CPUs, torch {mc['torch']}, {mc['threads']} threads, load average at the end "
             f"{mc['load_avg'][0]:.1f}. Test: {payload['rows'][0]['test_sentences']} held-out "
             f"sentences. LoRA: at most {a['lora_epochs']} epochs, {a['max_minutes']} min per run. "
             f"Total {payload['seconds']:.0f} s. Command: `python -m bench.transfer_tokens "
             f"--budgets {a['budgets']} --methods {a['methods']} --test-size {a['test_size']}`.", "",
             "| method | train sentences | token accuracy | entity F1 (micro) | "
             + " | ".join(f"F1 {t}" for t in types) + " | train s | epochs |",
             "|---|---|---|---|" + "---|" * len(types) + "---|---|"]
    for r in payload["rows"]:
        lines.append(f"| {r['method']} | {r['train_sentences']} | {r['token_accuracy']:.4f} | "
                     f"{r['entity_f1']:.4f} | " + " | ".join(f"{r['per_type_f1'].get(t, 0):.3f}" for t in types)
                     + f" | {r['train_seconds']:.0f}{' (capped)' if r['time_capped'] else ''} | {r['epochs_run']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
