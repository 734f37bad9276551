"""What preemption between trunk blocks costs a namespace that is alone.

    python -m bench preempt --threads 1            # MiniLM-L6, 5 interleaved rounds
    python -m bench preempt --tiny --rounds 3      # quick, a tiny random backbone

In process, no HTTP: one head task, one namespace, ``--requests`` requests of 32 texts
submitted at once to a :class:`adapters.batching.Batcher` with the server's slicing defaults
(``slice_cost`` 4096, ``slice_split`` 4) and waited for, through two batchers over the same
runtime: ``preempt`` off (a batch runs the model's own forward in one call) and on (the same
batch block by block on the backbone's layout, asking the queue after every block whether
another namespace is owed the worker: with one namespace alone it never is). The variants
alternate round by round (``bench.common.interleave``); reported: rows/s of each and the
median per-round ratio on / off, with the load average at the start and the end (on a
loaded machine the figures hold within this run only). Writes
``bench/results/preempt.{json,md}``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from bench.common import TEXT_SPEC, interleave, load, machine, save_results

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the adapter factories the tests use

from support.factories import head_adapter  # noqa: E402

TEXTS = [f"review {i}: the actors were good but the story was slow and long" for i in range(32)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=8, help="requests of 32 texts per call")
    ap.add_argument("--calls", type=int, default=3, help="calls per variant per round")
    ap.add_argument("--tiny", action="store_true", help="a tiny random text backbone")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_start = machine()["load_avg"]
    from adapters.backbones.tiny import tiny_backbone_spec
    from adapters.batching import Batcher
    from adapters.cost import estimate
    from adapters.registry import Registry
    from adapters.runtime import Runtime
    from adapters.store import open_store

    with tempfile.TemporaryDirectory(prefix="preempt-") as tmp:
        root = Path(tmp)
        spec = tiny_backbone_spec("text", root / "t") if args.tiny else TEXT_SPEC
        bb = load(spec)
        reg = Registry(open_store(str(root / "store")), {bb.name: bb})
        reg.sync()
        reg.register(head_adapter(root / "h", bb, "team-a/x", seed=1))
        rt = Runtime(reg)
        batchers = {name: Batcher(rt, slice_cost=4096, slice_split=4, preempt=on)
                    for name, on in (("off", False), ("on", True))}

        def call(b: Batcher):
            def go():
                futs = []
                for i in range(args.requests):
                    req = rt.prepare(["team-a/x"], TEXTS, "text")
                    futs.append(b.submit(req, f"c{i}", estimate(req), namespace="team-a"))
                for f in futs:
                    f.result(600)
            return go

        timing = interleave({name: call(b) for name, b in batchers.items()},
                            rows_per_call=args.requests * len(TEXTS), rounds=args.rounds, calls=args.calls)
        preemptions = batchers["on"].preemptions
        for b in batchers.values():
            b.close()
    load_end = machine()["load_avg"]
    rps = {k: round(sorted(v)[len(v) // 2], 1) for k, v in timing.per_round.items()}
    ratio = round(timing.ratio("on", "off"), 3)
    report = {"command": "python -m bench preempt " + " ".join(sys.argv[1:]), "machine": machine(),
              "backbone": spec.source, "threads": args.threads, "load_avg_start": load_start,
              "load_avg_end": load_end, "rows_per_s_median": rps, "on_over_off": ratio,
              "preemptions": preemptions, **timing.as_dict()}
    loaded = max(load_start[0], load_end[0]) > 0.5 * (machine()["cpus"] or 1)
    mark = " (under load)" if loaded else ""
    md = "\n".join([
        "# Preemption's cost to a namespace alone", "",
        f"`{report['command']}`; {spec.source}, torch threads {args.threads}, {machine()['cpus']} CPUs, "
        f"load average {load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end{mark}; "
        f"{args.rounds} interleaved rounds x {args.calls} calls of {args.requests} x {len(TEXTS)} texts", "",
        "| preempt | rows/s (median of rounds) |", "|---|---|",
        f"| off | {rps['off']} |", f"| on | {rps['on']} |", "",
        f"on / off: x{ratio} (median of per-round ratios); batches parked: {preemptions} (one namespace: 0 expected)",
    ]) + "\n"
    print(md)
    if not args.no_save:
        save_results("preempt", report, md)
    return 0 if preemptions == 0 else 1
