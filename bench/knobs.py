"""The speed settings measured: torch threads and the length-aware token budget, with and
without competing processes on the machine.

    python -m bench knobs                                  # threads 1,2 x budgets 512..off, 0 and 2 competitors
    python -m bench knobs --threads 1,2 --budgets 1024 --compete 0,1,2 --rounds 5
    python -m bench knobs --smoke                          # tiny random backbone, seconds

In process, MiniLM-L6 and 64 heads: one call is a batch of 64 single-row requests (Rotten
Tomatoes snippets of 16-64 tokens, each for a head drawn at random) through
``Runtime.prepare`` + ``Runtime.run``, what the batch worker does for 64 requests. Each
variant sets ``torch.set_num_threads`` and the runtime's ``token_budget``
(``TASKSWAP_TORCH_THREADS``, ``TASKSWAP_TOKEN_BUDGET``; 0 = off: one padded pass).

``--compete N`` starts N busy processes (a pure-Python loop each, ``nice`` 0) for the
variants of that level and stops them after: the controlled stand-in for other work on the
machine, on top of whatever load the machine already has (its load average is recorded).
The variants of one level are interleaved (rotating order, median of per-round ratios);
ratios are to ``threads 1, budget 1024`` of the same level, wall clock (what a client sees)
and rows per second of this process's CPU time (work per row; with more than one torch
thread it includes the threads' spinning).

Results go to ``bench/results/knobs.{md,json}`` (``--out`` to change the name).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from adapters.registry import Registry
from adapters.runtime import Runtime
from adapters.store import open_store
from bench.common import SMOKE_HELP, TEXT_SPEC, interleave, load, machine, review_snippets, save_results, smoke_specs, write_heads

BATCH = 64
REF_BUDGET = 1024


def _competitors(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()


def _name(threads: int, budget: int) -> str:
    return f"threads {threads}, budget {budget or 'off'}"


def run_level(rt: Runtime, heads: list[str], texts: list[str], threads: list[int], budgets: list[int],
              compete: int, rounds: int, seed: int) -> dict:
    rng = random.Random(seed)
    batches = [[rng.sample(texts, 1)[0] for _ in range(BATCH)] for _ in range(4)]
    plans = [[rng.choice(heads) for _ in range(BATCH)] for _ in batches]
    counter = {"i": 0}

    def call(t: int, b: int):
        def run():
            torch.set_num_threads(t)
            rt.token_budget = b or None
            i = counter["i"] = (counter["i"] + 1) % len(batches)
            reqs = [rt.prepare([task], [x], "text") for task, x in zip(plans[i], batches[i])]
            return rt.run(reqs)
        return run

    variants = {_name(t, b): call(t, b) for t in threads for b in budgets}
    procs = _competitors(compete)
    try:
        load_start = os.getloadavg()
        timing = interleave(variants, BATCH, rounds=rounds)
        load_end = os.getloadavg()
    finally:
        _stop(procs)
    ref = _name(1, REF_BUDGET) if _name(1, REF_BUDGET) in variants else next(iter(variants))
    rows = {k: {"rows_per_s": timing.median(k), "ratio_wall": timing.ratio(k, ref),
                "ratio_cpu": timing.ratio(k, ref, cpu=True)} for k in variants}
    return {"compete": compete, "ref": ref, "rows": rows, "load_avg_start": load_start,
            "load_avg_end": load_end, "timing": timing.as_dict()}


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = ["# Speed settings: torch threads and token budget", "",
             f"Machine: {m['cpus']} CPUs, torch {m['torch']}; load average at start {m['load_avg'][0]:.1f}. "
             f"Command: `{res['command']}`. One call = 64 single-row requests over {res['heads']} heads "
             "(prepare + run); medians over interleaved rounds.", ""]
    for lv in res["levels"]:
        la = f"load average {lv['load_avg_start'][0]:.1f} → {lv['load_avg_end'][0]:.1f}"
        lines += [f"## {lv['compete']} competing busy processes ({la})", "",
                  f"| variant | rows/s (wall) | × {lv['ref']} (wall) | × (CPU time) |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['rows_per_s']:.1f} | {v['ratio_wall']:.3f} | {v['ratio_cpu']:.3f} |"
                  for k, v in lv["rows"].items()]
        lines.append("")
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", default="1,2", help="torch thread counts to compare")
    ap.add_argument("--budgets", default="512,1024,2048,0", help="token budgets (0 = off: one padded pass)")
    ap.add_argument("--compete", default="0,2", help="numbers of competing busy processes, one level each")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--heads", type=int, default=64)
    ap.add_argument("--out", default=None, help="results name under bench/results (default knobs)")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP + "; 1 round, 0 and 1 competitors")
    args = ap.parse_args(argv)
    if args.smoke:
        args.rounds, args.heads, args.compete, args.budgets = 1, 3, "0,1", "1024,0"
    args.out = args.out or ("knobs-smoke" if args.smoke else "knobs")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    threads = [int(x) for x in args.threads.split(",")]
    budgets = [int(x) for x in args.budgets.split(",")]
    res: dict = {"machine": machine(), "command": "python -m bench knobs " + " ".join(argv or sys.argv[1:]),
                 "heads": args.heads, "levels": []}
    root = Path(tempfile.mkdtemp(prefix="taskswap-knobs-"))
    before = torch.get_num_threads()
    try:
        bb = load(smoke_specs(root / "backbones")[0] if args.smoke else TEXT_SPEC)
        reg = Registry(open_store(str(root / "store")), {bb.name: bb})
        for p in write_heads(root / "heads", bb, args.heads):
            reg.register(p)
        heads = [f"head-{i:04d}" for i in range(args.heads)]
        texts = review_snippets(512, bb.preprocessor.tokenizer)
        rt = Runtime(reg)
        for i, c in enumerate(int(x) for x in args.compete.split(",")):
            res["levels"].append(run_level(rt, heads, texts, threads, budgets, c, args.rounds, seed=i))
            print(f"[{c} competitors done, load {os.getloadavg()[0]:.1f}]", flush=True)
    finally:
        torch.set_num_threads(before)
        shutil.rmtree(root, ignore_errors=True)
    md = markdown(res)
    print(md)
    save_results(args.out, res, md)
    return res
