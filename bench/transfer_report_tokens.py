"""The token task of the transfer report: head vs LoRA vs scratch taggers at label budgets.

Run through ``python -m bench transfer-report --task tokens`` (one program with the pooled
report; this file keeps the token part apart). For each tagging set on the embedded
MiniLM-L6 and each budget of training sentences (20% carved off for validation, the
budgets nested: the first N of one seeded shuffle), it trains through the public API
(:func:`training.tokens.train_tokens`)

- ``head``: frozen trunk, first-sub-token features computed once, linear head;
- ``lora``: PEFT LoRA (r=8, query/value) + head, warm-started from the head;
- ``scratch``: a BiGRU tagger from random weights on the same sub-tokens
  (:mod:`training.token_scratch`);

and scores the same held-out test sentences with entity-level F1 (seqeval's definition)
and token accuracy. Sets:

- ``punctuation``: punctuation restoration on Rotten Tomatoes snippets (exact labels);
- ``silver-pos`` / ``silver-ner``: Universal POS tags / OntoNotes entities on the same
  snippets, **tagged by spaCy's small English model** (model-made "silver" labels,
  :mod:`training.data.silver`; needs the ``silver`` extra).

Writes ``bench/results/transfer_report_tokens.{json,md}``.

    python -m bench transfer-report --task tokens                       # all sets, budgets 50,200,1000
    python -m bench transfer-report --task tokens --token-sets punctuation --budgets 20 \\
        --test-size 50 --methods head,scratch                             # a smoke run
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch

from adapters.backbones.base import load_backbone
from bench.common import machine
from bench.transfer_config import backbone_spec
from bench.transfer_config import config_for as pooled_config_for
from training.config import TrainConfig
from training.data.tokens import TokenData
from training.tokens import train_tokens

DEFAULT_BUDGETS = "50,200,1000"
SETS = ("punctuation", "silver-pos", "silver-ner")


def load_set(name: str, split: str, limit: int, seed: int) -> TokenData:
    if name == "punctuation":
        from training.data.tokens import load_punctuation
        return load_punctuation(split, limit=limit, seed=seed)
    if name in ("silver-pos", "silver-ner"):
        from training.data.silver import load_silver
        return load_silver(name.split("-")[1], split, limit=limit, seed=seed)
    raise SystemExit(f"unknown token set {name!r}; choose from {SETS}")


def config_for(method: str, args, name: str) -> TrainConfig:
    return pooled_config_for(method, args, name, task_type="token_classification")


def run_tokens(args) -> dict:
    """Train every (set, budget, method) and return the payload written to the results."""
    if args.threads:
        torch.set_num_threads(args.threads)
    budgets = [int(b) for b in (args.budgets or DEFAULT_BUDGETS).split(",")]
    methods = args.methods.split(",")
    bb = load_backbone(backbone_spec("text", args))
    rows, start, load_start = [], time.perf_counter(), machine()["load_avg"]
    for set_name in args.token_sets.split(","):
        test = load_set(set_name, "test", args.test_size, args.seed)
        pool = load_set(set_name, "train", max(budgets), args.seed)
        counts = test.tag_counts()
        floor = max(counts.values()) / sum(counts.values())
        for n in budgets:
            data = pool.subset(list(range(min(n, len(pool)))))
            for method in methods:
                cfg = config_for(method, args, f"{set_name}-{method}-{n}")
                with tempfile.TemporaryDirectory() as tmp:
                    r = train_tokens(data, bb, cfg, Path(tmp) / "out", test=test)
                m = r.metrics["test"]
                o = data.label_names.index("O") if "O" in data.label_names else None
                tagged = [(i, row) for i, row in enumerate(m.confusion) if i != o]  # gold tag not O
                right = sum(row[i] for i, row in tagged)
                rows.append({"set": set_name, "method": method, "train_sentences": len(data),
                             "train_words": sum(len(s) for s in data.sentences),
                             "test_sentences": m.sentences, "test_words": m.n,
                             "token_accuracy": round(m.accuracy, 4), "entity_f1": round(m.f1, 4),
                             "entity_precision": round(m.precision, 4), "entity_recall": round(m.recall, 4),
                             "per_type": {t.label: [round(t.f1, 4), t.support] for t in m.per_type},
                             "tagged_word_accuracy": round(right / max(1, sum(map(sum, (r_ for _, r_ in tagged)))), 4),
                             "labels": list(data.label_names), "confusion": m.confusion,
                             "train_seconds": round(r.seconds, 1), "epochs_run": len(r.history.train_loss),
                             "best_epoch": r.history.best_epoch, "capped": r.history.time_capped,
                             "majority_token_accuracy": round(floor, 4), "silver": bool(data.label_note)})
                print(f"{set_name:12} {method:8} {n:5} sentences  token acc {m.accuracy:.3f}  entity F1 "
                      f"{m.f1:.3f}  train {r.seconds:6.1f}s", flush=True)
    mc = machine()
    return {"machine": mc, "load_avg_start": load_start, "seconds": round(time.perf_counter() - start, 1),
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "rows": rows}


def markdown(payload: dict) -> str:
    mc, a, rows = payload["machine"], payload["args"], payload["rows"]
    cmd = (f"python -m bench transfer-report --task tokens --token-sets {a['token_sets']} --budgets "
           f"{a['budgets'] or DEFAULT_BUDGETS} --methods {a['methods']} --test-size {a['test_size']} "
           + (f"--lora-epochs {a['lora_epochs']} " if a["lora_epochs"] else "")
           + f"--scratch-epochs {a['scratch_epochs']} --max-minutes {a['max_minutes']}" + (f" --threads {a['threads']}" if a.get("threads") else ""))
    out = ["# Transfer report, token task: head vs LoRA vs scratch taggers on MiniLM-L6", "",
           f"Command: `{cmd}`. Machine: {mc['cpus']} CPUs shared with other jobs, torch {mc['torch']}, "
           f"{mc['threads']} threads; load average {payload['load_avg_start'][0]:.1f} at the start, "
           f"{mc['load_avg'][0]:.1f} at the end; {payload['seconds'] / 60:.1f} min in all. One seed, one run.", "",
           "Cells: token accuracy / entity F1 (micro, seqeval's definition) / accuracy on the words "
           "whose gold tag is not `O` (tagged words), on the held-out test sentences; * = stopped by the per-run time cap (the state with the lowest validation "
           "loss is kept). LoRA r=8 on query/value, warm-started from the head, at most "
           f"{a['lora_epochs'] or 'its default'} epochs; scratch = a BiGRU tagger from random weights, at most "
           f"{a['scratch_epochs']} epochs; both capped at {a['max_minutes']} min of training per run.", ""]
    for set_name in dict.fromkeys(r["set"] for r in rows):
        rs = [r for r in rows if r["set"] == set_name]
        silver = " — **silver labels (tagged by spaCy's small English model, not people)**" if rs[0]["silver"] else ""
        out += [f"## {set_name}{silver}", "",
                f"{rs[0]['test_sentences']} test sentences, {rs[0]['test_words']} words; always answering "
                f"the most frequent tag scores token accuracy {rs[0]['majority_token_accuracy']:.3f} "
                "(entity F1 0).", "",
                "| train sentences | train words | head | LoRA | scratch | train s (head / LoRA / scratch) |",
                "|---|---|---|---|---|---|"]
        for n in dict.fromkeys(r["train_sentences"] for r in rs):
            by = {r["method"]: r for r in rs if r["train_sentences"] == n}
            cell = [f"{by[m]['token_accuracy']:.3f} / {by[m]['entity_f1']:.3f} / {by[m]['tagged_word_accuracy']:.3f}"
                    f"{'*' if by[m]['capped'] else ''}"
                    if m in by else "–" for m in ("head", "lora", "scratch")]
            secs = " / ".join(f"{by[m]['train_seconds']:.0f}" if m in by else "–" for m in ("head", "lora", "scratch"))
            words = next(iter(by.values()))["train_words"]
            out.append(f"| {n} | {words} | {' | '.join(cell)} | {secs} |")
        biggest = max(r["train_sentences"] for r in rs)
        by = {r["method"]: r for r in rs if r["train_sentences"] == biggest}
        support = next(iter(by.values()))["per_type"]
        types = sorted((t for t, (_, s) in support.items() if s >= 5), key=lambda t: -support[t][1])
        if types:
            methods = [m for m in ("head", "lora", "scratch") if m in by]
            out += ["", f"F1 per type at {biggest} training sentences (types with at least 5 test entities):", "",
                    "| type | test entities | " + " | ".join(methods) + " |",
                    "|---|---|" + "---|" * len(methods)]
            for t in types:
                out.append(f"| {t} | {support[t][1]} | "
                           + " | ".join(f"{by[m]['per_type'].get(t, [0.0])[0]:.3f}" for m in methods) + " |")
        out.append("")
    return "\n".join(out) + "\n"


def main_tokens(args) -> int:
    """``transfer_report.py --task tokens``: run (or ``--replot``) and write the results."""
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "transfer_report_tokens.json"
    payload = json.loads(path.read_text()) if args.replot else run_tokens(args)
    if not args.replot:
        path.write_text(json.dumps(payload, indent=2) + "\n")
    md = args.out / "transfer_report_tokens.md"
    md.write_text(markdown(payload))
    print(md.read_text())
    print(f"wrote {path}, {md}")
    return 0
