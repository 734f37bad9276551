"""Transfer report for generation: zero-shot vs few-shot prompt vs LoRA at N pairs, on a
generation demo's held-out split: the translation demo's held-out catalogs (Debian gettext,
split by catalog: training/generation/translation.py) or the man-page summaries' held-out
packages (training/generation/man_pages.py).

    python -m bench generation-transfer --lang fr --sizes 100,1000 --seeds 0 --test-limit 100
    python -m bench generation-transfer --demo summarise-man --sizes 100,500 --test-limit 100
    python -m bench generation-transfer --smoke      # tiny random LM, a few pairs: the code path only

Every variant decodes greedily the same held-out test examples (a seeded sample of
``--test-limit`` from the test split) and is scored with sacrebleu chrF/BLEU
(training/generation/metrics.py). Few-shot: ``--shots`` training pairs as earlier chat turns.
LoRA: ``taskswap train --task-type generation --method lora`` on a seeded sample of N training
pairs, the epoch kept by validation chrF (the validation split). Results, with the machine, its
threads and load average, go to bench/results/generation_transfer.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from adapters.backbones.base import BackboneSpec
from adapters.backbones.causal_lm import load_lm_backbone
from adapters.backbones.tiny import tiny_lm_spec
from bench.common import machine, save_results
from training.config import TrainConfig
from training.generation.demos import DEMOS, held_out_groups
from training.generation.translation import LANGUAGES
from training.generation.data import GenerationData, GenerationExample
from training.generation_run import score_examples, train_generation


def few_shot(test: GenerationData, shots: list[GenerationExample], template: str) -> GenerationData:
    """Each test sentence as the last user turn after ``shots`` as (templated) earlier turns."""
    turns = []
    for s in shots:
        turns += [{"role": "user", "content": template.replace("{input}", s.prompt)},
                  {"role": "assistant", "content": s.completion}]
    return GenerationData([GenerationExample(None, e.completion, (*turns, {"role": "user", "content": e.prompt}))
                           for e in test.examples], test.source)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench generation-transfer", description=__doc__.split("\n\n")[0])
    p.add_argument("--lang", default="fr", choices=sorted(LANGUAGES), help="translation: en->LANG")
    p.add_argument("--demo", choices=sorted(DEMOS), help="a generation demo (default translate-en-LANG)")
    p.add_argument("--sizes", default="100,1000", help="LoRA training pairs, comma-separated")
    p.add_argument("--seeds", default="0", help="seeds, comma-separated (sampling of pairs, init, order)")
    p.add_argument("--test-limit", type=int, default=100)
    p.add_argument("--eval-limit", type=int, default=32, help="validation sentences decoded per epoch")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--shots", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-minutes", type=float, help="budget per LoRA run")
    p.add_argument("--smoke", action="store_true", help="tiny random LM, 8 pairs, 4 test sentences")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    sizes = [int(x) for x in a.sizes.split(",")]
    seeds = [int(x) for x in a.seeds.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="gen-transfer-"))
    if a.smoke:
        sizes, seeds, a.test_limit, a.eval_limit, a.epochs = [8], [0], 4, 2, 1
        spec_bb = tiny_lm_spec(tmp / "tiny-lm")
    else:
        spec_bb = BackboneSpec(name="lm", source="embedded:SmolLM2-135M-Instruct")
    bb = load_lm_backbone(spec_bb)
    name = a.demo or f"translate-en-{a.lang}"
    demo = DEMOS[name].load()
    test = demo["test"].sample(a.test_limit, 0)
    spec = DEMOS[name].spec()
    if a.smoke:
        spec = spec.model_copy(update={"max_new_tokens": 8})
    rows = []
    t0 = time.perf_counter()
    zero, _ = score_examples(bb.model, bb, test, spec)
    rows.append({"variant": "zero-shot", "pairs": 0, "seed": None, **zero, "train_s": 0.0,
                 "eval_s": round(time.perf_counter() - t0, 1)})
    print(rows[-1], flush=True)
    for seed in seeds:
        t0 = time.perf_counter()
        shots = demo["train"].sample(a.shots, seed).examples
        fs, _ = score_examples(bb.model, bb, few_shot(test, shots, spec.prompt_template), spec)
        rows.append({"variant": f"{a.shots}-shot", "pairs": a.shots, "seed": seed, **fs, "train_s": 0.0,
                     "eval_s": round(time.perf_counter() - t0, 1)})
        print(rows[-1], flush=True)
        for n in sizes:
            cfg = TrainConfig(name=f"tr{n}", method="lora", task_type="generation", epochs=a.epochs, lr=a.lr,
                              batch_size=a.batch_size, seed=seed, max_train_minutes=a.max_minutes, progress=False)
            r = train_generation(demo["train"].sample(n, seed), bb, cfg, spec, tmp / f"lora-{n}-{seed}",
                                 val=demo["validation"], test=test, eval_limit=a.eval_limit)
            rows.append({"variant": "lora", "pairs": n, "seed": seed, **r.metrics["test"],
                         "train_s": round(r.seconds, 1), "best_epoch": r.history["best_epoch"],
                         "val_chrf": r.history["val_chrf"], "val_loss": [round(v, 4) for v in r.history["val_loss"]],
                         "steps": r.history["steps"], "time_capped": r.history["time_capped"]})
            print(rows[-1], flush=True)
    m = machine()
    command = "python -m bench generation-transfer " + " ".join(argv if argv is not None else os.sys.argv[2:])
    held = DEMOS[name].held_out
    payload = {"command": command, "machine": m, "demo": name, "test_examples": len(test),
               f"test_{held}": held_out_groups(demo["test"]), "settings": vars(a), "rows": rows,
               "load_avg_end": os.getloadavg()}
    md = [f"# Generation transfer, {name} ({'smoke: tiny random LM' if a.smoke else spec_bb.source})", "",
          f"`{command}`; {m['threads']} torch threads, {m['cpus']} CPUs, load average at the start "
          f"{m['load_avg'][0]:.1f} / end {payload['load_avg_end'][0]:.1f}; test: {len(test)} examples of the "
          f"held-out {held} ({payload[f'test_{held}']}).", "",
          "| variant | pairs | seed | chrF | BLEU | exact match | train s | best epoch |", "|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['variant']} | {r['pairs']} | {r['seed']} | {r['chrf']:.2f} | {r['bleu']:.2f} | "
           f"{r['exact_match']:.2f} | {r['train_s']} | {r.get('best_epoch', '')} |" for r in rows]
    results = f"generation_transfer_{a.lang}" if name.startswith("translate-") else f"generation_transfer_{name}"
    save_results(results + ("-smoke" if a.smoke else ""), payload, "\n".join(md) + "\n")
    print("\n".join(md))
    return 0
