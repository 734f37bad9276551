"""Serving cost of ``top_layers`` adapters in mixed traffic, as throughput ratios to the raw
backbone, next to the ratio the block count predicts.

    python -m bench top-layers --threads 1 --rounds 5
    python -m bench top-layers --smoke --lora   # every variant on a tiny random backbone

MiniLM-L6 (6 blocks) on 64 Rotten Tomatoes snippets of 16-64 tokens per call, 8 heads and
8 top-layers adapters per k (random perturbations of the backbone's own blocks: cost does
not depend on the values). Variants, all interleaved (``bench.common.interleave``):

- ``raw``: the backbone alone (preprocess + forward + mean pooling) on the 64 inputs, padded;
- ``heads``: 64 one-input requests, each a random head (the like-for-like reference: the
  runtime's own length-sorted sub-batches);
- ``mix kK``: 64 one-input requests, each a random task of 8 heads + 8 top_layers (k=K):
  every row still passes each block once (below the split shared, above it its task's
  copy), so the predicted ratio to ``heads`` is ~1.0;
- ``3 tasks kK``: 64 one-input requests each asking [a head, two top_layers tasks of
  k=K]: the trunk runs once per input plus k blocks per extra task, predicted ratio to
  ``heads`` L / (L + 2k) (0.75 for k=1, 0.60 for k=2; embeddings and heads ignored).

``--lora`` adds the LoRA kinds to the same run (``bench/results/top_layers_bench_lora``):
``LoRA qv`` / ``LoRA all``: 64 one-input requests, each a random one of 8 rank-8 LoRA
adapters on query/value or on every Linear of the blocks (the training default), run with
per-row deltas; ``... x1``: every request on one adapter (a batch on one adapter runs on
merged weights). Predicted vs heads: the trunk's multiply-adds over those plus the LoRA
products' (r x (in + out) per adapted Linear per token: +0.7% for query/value, +3.1% for
every Linear on MiniLM-L6); the x1 variants 1.0.

Results: ``bench/results/top_layers_bench.{md,json}``.
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

import torch

from adapters.format import BackboneRef, HeadSpec, Manifest
from adapters.heads import Head
from adapters.kinds.top_layers import blocks_state_of, num_blocks, write_top_layers_adapter
from adapters.registry import Registry
from adapters.runtime import Runtime
from adapters.store import open_store
from bench.common import (SMOKE_HELP, TEXT_SPEC, inputs_for, interleave, load, machine, save_results, smoke_specs,
                          write_heads, write_loras)
from training.lora import block_linear_targets, resolve_targets

BATCH = 64


def write_tops(root: Path, bb, n: int, k: int) -> list[Path]:
    L = num_blocks(bb.model, bb.model_type)
    blocks = list(range(L - k, L))
    spec = HeadSpec(pooling=bb.default_pooling, input_dim=bb.hidden_size)
    out = []
    for i in range(n):
        torch.manual_seed(100 * k + i)
        state = {name: t + 0.01 * torch.randn_like(t) if t.is_floating_point() else t
                 for name, t in blocks_state_of(bb.model, bb.model_type, blocks).items()}
        m = Manifest(name=f"top{k}-{i:02d}", kind="top_layers", labels=["neg", "pos"],
                     backbone=BackboneRef(name=bb.name, fingerprint=bb.fingerprint), head=spec,
                     preprocessing=bb.preprocessing_settings(), top_layers={"blocks": blocks})
        out.append(write_top_layers_adapter(root / m.name, m, state, Head(spec, 2).state_for_file()))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tasks", type=int, default=8, help="heads and top_layers adapters per k")
    ap.add_argument("--lora", action="store_true", help="add LoRA on query/value and on every block Linear")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP + "; 2 tasks per k, 1 round")
    args = ap.parse_args(argv)
    if args.smoke:
        args.tasks, args.rounds = 2, 1
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="tl-bench-") as tmp:
        run(args, Path(tmp))


def run(args, root: Path) -> None:
    """The variants interleaved, on adapters written under ``root``; prints and saves the table."""
    bb = load(smoke_specs(root / "backbones")[0] if args.smoke else TEXT_SPEC)
    L = num_blocks(bb.model, bb.model_type)
    inputs = inputs_for(bb, BATCH)
    reg = Registry(open_store(str(root / "store")), {bb.name: bb}, adapter_budget_bytes=4 << 30)
    heads = [reg.register(p).name for p in write_heads(root / "h", bb, args.tasks)]
    tops = {k: [reg.register(p).name for p in write_tops(root / f"t{k}", bb, args.tasks, k)] for k in (1, 2)}
    rt = Runtime(reg)
    rng = random.Random(0)

    def raw():
        with torch.inference_mode():
            bb.forward(bb.preprocess(inputs)).get("mean")

    def one_task_each(pool):
        def call():
            rt.run([rt.prepare([rng.choice(pool)], [x], "text") for x in inputs])
        return call

    def three_tasks(k):
        def call():
            rt.run([rt.prepare([rng.choice(heads)] + rng.sample(tops[k], 2), [x], "text") for x in inputs])
        return call

    variants = {"raw": raw, "heads": one_task_each(heads),
                "mix k1": one_task_each(heads + tops[1]), "mix k2": one_task_each(heads + tops[2]),
                "3 tasks k1": three_tasks(1), "3 tasks k2": three_tasks(2)}
    predicted = {"raw": 1.0, "heads": 1.0, "mix k1": 1.0, "mix k2": 1.0,
                 "3 tasks k1": L / (L + 2), "3 tasks k2": L / (L + 4)}
    if args.lora:
        variants, predicted = lora_variants(bb, reg, root, args.tasks, one_task_each, variants, predicted)
    t = interleave(variants, BATCH, rounds=args.rounds)
    rows = {n: {"rows_per_s": round(t.median(n), 1), "ratio_to_raw": round(t.ratio(n, "raw"), 3),
                "cpu_ratio_to_raw": round(t.ratio(n, "raw", cpu=True), 3),
                "ratio_to_heads": round(t.ratio(n, "heads"), 3),
                "cpu_ratio_to_heads": round(t.ratio(n, "heads", cpu=True), 3),
                "predicted_vs_heads": round(predicted[n], 3)} for n in variants}
    m = machine()
    md = ["# Serving cost of top_layers in mixed traffic (MiniLM-L6, CPU)", "",
          f"`python -m bench top-layers --threads {args.threads} --rounds {args.rounds}"
          f"{' --lora' if args.lora else ''}`; "
          f"{m['cpus']} CPUs, torch {m['torch']}, {m['threads']} thread(s), load average "
          f"{m['load_avg'][0]:.1f}; {BATCH} inputs per call, {args.tasks} heads and {args.tasks} "
          f"top_layers adapters per k; L = {L} blocks. Ratios are medians over interleaved rounds of "
          "(variant inputs/s) / (reference inputs/s) in the same round. The runtime sorts text rows "
          "by length into sub-batches, the raw backbone pads all 64 to the longest, so the runtime's "
          "own heads-only traffic is the like-for-like reference; 'predicted' (vs heads) is L over "
          "the blocks the variant runs per input."
          + (" LoRA (8 rank-8 adapters per target set; x1: every request on one adapter): 'predicted' is "
             "the trunk's Linear multiply-adds over those plus the LoRA products' (query/value +0.7%, every "
             "block Linear +3.1%)." if args.lora else ""), "",
          "| variant | inputs/s | vs raw (wall) | vs raw (CPU) | vs heads (wall) | vs heads (CPU) | predicted vs heads |",
          "|---|---|---|---|---|---|---|"]
    for n, r in rows.items():
        md.append(f"| {n} | {r['rows_per_s']} | {r['ratio_to_raw']} | {r['cpu_ratio_to_raw']} | "
                  f"{r['ratio_to_heads']} | {r['cpu_ratio_to_heads']} | {r['predicted_vs_heads']} |")
    print("\n".join(md))
    name = "top_layers_bench" + ("_lora" if args.lora else "") + ("-smoke" if args.smoke else "")
    save_results(name, {"machine": m, "args": vars(args), "results": rows, "timing": t.as_dict()},
                 "\n".join(md) + "\n")


def lora_variants(bb, reg, root: Path, n: int, one_task_each, variants: dict, predicted: dict):
    """LoRA on query/value and on every block Linear, mixed (per-row deltas) and single (merged)."""
    model = bb.model
    every = block_linear_targets(model)
    macs = flops_share(model, every)
    for label, targets in (("qv", ["query", "value"]), ("all", every)):
        names = [reg.register(p, name=f"lora-{label}-{i:02d}", labels=["neg", "pos"]).name
                 for i, p in enumerate(write_loras(root / f"lora-{label}", bb, n, 8, targets))]
        variants[f"LoRA {label} x{n}"] = one_task_each(names)
        variants[f"LoRA {label} x1"] = one_task_each(names[:1])
        predicted[f"LoRA {label} x{n}"] = 1 / (1 + macs[label])
        predicted[f"LoRA {label} x1"] = 1.0
    return variants, predicted


def flops_share(model, every: list[str], r: int = 8) -> dict[str, float]:
    """Rank-``r`` LoRA multiply-adds per token over the blocks' Linear multiply-adds, for
    query/value and for ``every`` target (attention's own score products ignored)."""
    modules = dict(model.named_modules())
    base = sum(m.in_features * m.out_features for m in (modules[n] for n in resolve_targets(model, every)))

    def lora(targets):
        return sum(r * (modules[n].in_features + modules[n].out_features) for n in resolve_targets(model, targets))
    return {"qv": lora(["query", "value"]) / base, "all": lora(every) / base}

