"""Serving cost of asking several tasks about the same inputs: tasks riding on one shared
LoRA adaptation vs the same number of separate LoRA tasks, as throughput ratios.

    python -m bench multitask --threads 1 --rounds 5
    python -m bench multitask --smoke        # a tiny random backbone, 1 round
    python -m bench multitask --accuracy     # accuracy joint vs alone (bench/multitask_accuracy.py)

MiniLM-L6 on 64 Rotten Tomatoes snippets (16-64 tokens) per call, one request per call
asking ``--tasks`` tasks (default 3) about all 64 inputs. Variants, interleaved
(``bench.common.interleave``):

- ``raw``: the backbone alone on the 64 inputs (preprocess + forward + mean pooling);
- ``shared xN``: N ``multitask`` tasks riding on one rank-8 query/value ``shared_lora``
  adaptation: one adapted trunk row per input (64 rows);
- ``separate xN``: N ordinary ``lora`` tasks, each its own rank-8 query/value LoRA: one row
  per input per task (64 x N rows, per-row deltas).

Rows/s counts inputs answered for all N tasks per second. The goal of issue #29 is
``shared`` >= 2.5x ``separate`` at N = 3 (predicted: about N, since the trunk dominates and
heads are tiny). Results: ``bench/results/multitask.{md,json}``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the shared adapter builders (support.multitask_factories)

import torch  # noqa: E402

from adapters.registry import Registry  # noqa: E402
from adapters.runtime import Runtime  # noqa: E402
from adapters.store import open_store  # noqa: E402
from bench import multitask_accuracy  # noqa: E402
from bench.common import SMOKE_HELP, TEXT_SPEC, inputs_for, interleave, load, machine, save_results, smoke_specs  # noqa: E402
from support.multitask_factories import lora_task_dir, multitask_task_dir, shared_lora_dir  # noqa: E402

BATCH = 64


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--accuracy" in argv:  # the other half of the report: accuracy joint vs alone
        multitask_accuracy.main([a for a in argv if a != "--accuracy"])
        return
    ap = argparse.ArgumentParser(prog="python -m bench multitask", description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tasks", type=int, default=3, help="tasks asked about the same inputs")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP + "; 1 round")
    args = ap.parse_args(argv)
    if args.smoke:
        args.rounds = 1
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="mt-bench-") as tmp:
        run(args, Path(tmp))


def run(args, root: Path) -> None:
    bb = load(smoke_specs(root / "backbones")[0] if args.smoke else TEXT_SPEC)
    inputs = inputs_for(bb, BATCH)
    reg = Registry(open_store(str(root / "store")), {bb.name: bb}, adapter_budget_bytes=4 << 30)
    base = reg.register(shared_lora_dir(root / "base", bb, "base", seed=1, r=8))
    shared, separate = [], []
    for i in range(args.tasks):
        shared.append(reg.register(multitask_task_dir(root / f"s{i}", bb, f"s{i}", "base", base.version,
                                                      seed=10 + i)).name)
        own = shared_lora_dir(root / f"own{i}", bb, f"own{i}", seed=20 + i, r=8)  # its own LoRA factors
        separate.append(reg.register(lora_task_dir(root / f"l{i}", bb, f"l{i}", own, seed=10 + i)).name)
    rt = Runtime(reg)

    def raw():
        with torch.inference_mode():
            bb.forward(bb.preprocess(inputs)).get("mean")

    def ask(tasks):
        return lambda: rt.run([rt.prepare(tasks, inputs, "text")])

    n = args.tasks
    variants = {"raw": raw, f"shared x{n}": ask(shared), f"separate x{n}": ask(separate)}
    t = interleave(variants, BATCH, rounds=args.rounds)
    rows = {v: {"rows_per_s": round(t.median(v), 1), "ratio_to_raw": round(t.ratio(v, "raw"), 3),
                "cpu_ratio_to_raw": round(t.ratio(v, "raw", cpu=True), 3)} for v in variants}
    gain, gain_cpu = t.ratio(f"shared x{n}", f"separate x{n}"), t.ratio(f"shared x{n}", f"separate x{n}", cpu=True)
    m = machine()
    md = [f"# Asking {n} tasks about the same inputs: one shared LoRA vs {n} separate LoRAs (CPU)", "",
          f"`python -m bench multitask --threads {args.threads} --rounds {args.rounds} --tasks {n}`"
          f"{' --smoke (tiny random backbone)' if args.smoke else ' (MiniLM-L6)'}; {m['cpus']} CPUs, torch "
          f"{m['torch']}, {m['threads']} thread(s), load average {m['load_avg'][0]:.1f} at the end; {BATCH} inputs "
          f"per call, one request asking all {n} tasks; rank-8 LoRA on query/value. Ratios are medians over "
          "interleaved rounds of (variant inputs/s) / (reference inputs/s) in the same round.", "",
          "| variant | inputs/s (all tasks answered) | vs raw (wall) | vs raw (CPU) |", "|---|---|---|---|"]
    md += [f"| {v} | {r['rows_per_s']} | {r['ratio_to_raw']} | {r['cpu_ratio_to_raw']} |" for v, r in rows.items()]
    md += ["", f"shared / separate: **{gain:.2f}x** wall, {gain_cpu:.2f}x CPU (goal >= 2.5x at 3 tasks)."]
    print("\n".join(md))
    save_results("multitask" + ("-smoke" if args.smoke else ""),
                 {"machine": m, "args": vars(args), "results": rows, "shared_over_separate": round(gain, 3),
                  "shared_over_separate_cpu": round(gain_cpu, 3), "timing": t.as_dict()}, "\n".join(md) + "\n")
