"""Many head tasks in one replica: registration, cold start, memory, sync, throughput.

    python -m bench.scale --tasks 2000            # about 3 minutes on 2 busy CPU cores
    python -m bench.scale --tasks 100000          # the target size (hours here; see below)

On the embedded MiniLM backbone and a local store, ``--tasks`` head tasks (384 -> 2..10
labels, seeded random weights) are registered through :meth:`Registry.register`, and:

- registration throughput (tasks/s), per tenth of the run, so growth with the number of
  tasks already registered shows (a constant rate means a flat cost per registration);
- time to ready from a cold start: a fresh :class:`Registry` on the full store, ``sync()``
  (every head loaded), then one prediction through the runtime;
- RSS per registered head against its tensor bytes, in that fresh process (the
  registrations' garbage is not in it);
- sync cost per store change: a second registry follows the store; one task is registered
  by the first, and the follower's ``sync()`` is timed, at several store sizes;
- throughput of batches whose rows are spread over every task against batches over 5.

Each measurement that grows with N is printed at several sizes; no timing is asserted
anywhere (tests/test_scale.py checks behaviour at 5,000 tasks).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from adapters.format import BackboneRef, HeadSpec, Manifest, write_head_adapter
from adapters.heads import Head
from adapters.registry import Registry
from adapters.runtime import Runtime
from adapters.store import open_store
from bench.common import TEXT_SPEC, interleave, load, machine, review_snippets, rss_bytes, save_results

REPO = Path(__file__).resolve().parents[1]
BATCH = 64


def write_head(root: Path, bb, i: int) -> Path:
    """Head task ``task-{i:06d}`` with 2..10 labels (seeded), written as an adapter folder."""
    n_labels = 2 + i % 9
    torch.manual_seed(i)
    spec = HeadSpec(pooling="mean", input_dim=bb.hidden_size, hidden=[])
    head = Head(spec, n_labels)
    m = Manifest(name=f"task-{i:06d}", kind="head", labels=[f"l{k}" for k in range(n_labels)],
                 backbone=BackboneRef(name=bb.name, fingerprint=bb.fingerprint), head=spec,
                 preprocessing=bb.preprocessing_settings())
    return write_head_adapter(root / m.name, m, head.state_for_file())


def register_many(reg: Registry, bb, root: Path, start: int, stop: int, follower: Registry | None,
                  checkpoints: int = 10) -> tuple[list[dict], list[dict]]:
    """Register tasks ``start..stop``; per tenth: tasks/s; at each tenth: a follower's sync cost."""
    rates, syncs = [], []
    step = max(1, (stop - start) // checkpoints)
    for lo in range(start, stop, step):
        hi = min(stop, lo + step)
        folders = [write_head(root, bb, i) for i in range(lo, hi)]  # written outside the timing
        t0 = time.perf_counter()
        for f in folders:
            reg.register(f)
        dt = time.perf_counter() - t0
        rates.append({"registered_before": lo, "tasks": hi - lo, "tasks_per_s": (hi - lo) / dt})
        for f in folders:
            shutil.rmtree(f, ignore_errors=True)
        if follower is not None:  # catch up (unmeasured), then one change, measured
            follower.sync()
            one = write_head(root, bb, 10_000_000 + lo)
            reg.register(one)
            t0 = time.perf_counter()
            changed = follower.sync()
            syncs.append({"tasks_in_store": hi + 1 + len(syncs), "sync_s": time.perf_counter() - t0,
                          "changed": changed})
            shutil.rmtree(one, ignore_errors=True)
        print(f"  {hi} registered: {rates[-1]['tasks_per_s']:.0f} tasks/s"
              + (f", follower sync {1000 * syncs[-1]['sync_s']:.0f} ms" if syncs else ""), flush=True)
    return rates, syncs


def cold_start(store: Path, threads: int) -> dict:
    """Time to ready and RSS per head in a fresh process (prints one JSON line there)."""
    code = ("import sys; from bench.scale import cold_child; cold_child(sys.argv[1], int(sys.argv[2]))")
    out = subprocess.run([sys.executable, "-c", code, str(store), str(threads)], capture_output=True,
                         text=True, cwd=REPO, timeout=3600)
    if out.returncode != 0:
        raise SystemExit(f"cold-start child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def cold_child(store: str, threads: int) -> None:
    """The measured side of :func:`cold_start`."""
    import ctypes
    import gc
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    bb = load(TEXT_SPEC)
    t_backbone = time.perf_counter() - t0
    bb.embed(["warm up"])
    trim = getattr(ctypes.CDLL("libc.so.6"), "malloc_trim", None)
    gc.collect()
    if trim:
        trim(0)
    before = rss_bytes()
    t1 = time.perf_counter()
    reg = Registry(open_store(store), {bb.name: bb})
    reg.sync()
    t_sync = time.perf_counter() - t1
    rt = Runtime(reg)
    names = [a["name"] for a in reg.list()]
    rt.run([rt.prepare([names[-1]], ["ready?"], "text")])
    t_ready = time.perf_counter() - t0
    gc.collect()
    if trim:
        trim(0)
    after = rss_bytes()
    heads = [reg.resolve(n) for n in names]
    tensor = statistics.mean(a.nbytes for a in heads)
    print(json.dumps({"tasks": len(names), "backbone_load_s": t_backbone, "registry_sync_s": t_sync,
                      "time_to_ready_s": t_ready, "rss_per_head": (after - before) / len(names),
                      "tensor_bytes_per_head_mean": tensor,
                      "loaded": reg.loaded_count() if hasattr(reg, "loaded_count") else None}))


def spread(reg: Registry, bb, names: list[str], rounds: int, budget_s: float) -> dict:
    rt = Runtime(reg)
    texts = review_snippets(BATCH, bb.preprocessor.tokenizer)
    rng = random.Random(5)

    def run(pool):
        return rt.run([rt.prepare([rng.choice(pool)], [x], "text") for x in texts])
    t = interleave({"5 tasks": lambda: run(names[:5]), f"all {len(names)} tasks": lambda: run(names)},
                   BATCH, rounds=rounds, deadline_s=budget_s)
    many = f"all {len(names)} tasks"
    return {"ratio": t.ratio(many, "5 tasks"), "rows_per_s_all": t.median(many),
            "rows_per_s_5": t.median("5 tasks"), "rounds": len(t.per_round[many])}


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [f"# Scale: {res['tasks']} head tasks in one replica", "",
             f"Machine: {m['cpus']} CPUs, torch {m['torch']}, {m['threads']} threads; load average "
             f"{res['load_start'][0]:.1f} at start, {res['load_end'][0]:.1f} at the end. Command: "
             f"`{res['command']}`.", "",
             "| registered before | tasks/s |", "|---|---|"]
    lines += [f"| {r['registered_before']} | {r['tasks_per_s']:.0f} |" for r in res["registration"]]
    lines += ["", "| tasks in store | follower sync() after one change, ms |", "|---|---|"]
    lines += [f"| {s['tasks_in_store']} | {1000 * s['sync_s']:.1f} |" for s in res["sync"]]
    c = res["cold"]
    lines += ["", f"Cold start on {c['tasks']} tasks: backbone {c['backbone_load_s']:.1f} s, registry sync "
              f"{c['registry_sync_s']:.1f} s, ready (first prediction) {c['time_to_ready_s']:.1f} s after start. "
              f"RSS per head {c['rss_per_head']:.0f} B vs {c['tensor_bytes_per_head_mean']:.0f} B of tensors "
              f"({c['rss_per_head'] / c['tensor_bytes_per_head_mean']:.1f}×).", ""]
    if "spread" in res:
        s = res["spread"]
        lines += [f"Throughput over all {res['tasks']} tasks / over 5: **{s['ratio']:.3f}** "
                  f"({s['rows_per_s_all']:.1f} vs {s['rows_per_s_5']:.1f} rows/s, {s['rounds']} rounds).", ""]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--budget-s", type=float, default=60)
    ap.add_argument("--out", default=None, help="results name (default scale-<tasks>)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    res: dict = {"tasks": args.tasks, "machine": machine(), "load_start": os.getloadavg(),
                 "command": "python -m bench.scale " + " ".join(argv if argv is not None else sys.argv[1:])}
    root = Path(tempfile.mkdtemp(prefix="taskswap-scale-"))
    try:
        bb = load(TEXT_SPEC)
        store = root / "store"
        reg = Registry(open_store(str(store)), {bb.name: bb})
        follower = Registry(open_store(str(store)), {bb.name: bb})
        res["registration"], res["sync"] = register_many(reg, bb, root / "folders", 0, args.tasks, follower)
        names = [a["name"] for a in reg.list() if a["name"].startswith("task-")]
        res["spread"] = spread(reg, bb, names, args.rounds, args.budget_s)
        del reg, follower
        res["cold"] = cold_start(store, args.threads)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    res["load_end"] = os.getloadavg()
    md = markdown(res)
    print(md)
    save_results(args.out or f"scale-{args.tasks}", res, md)
    return res


if __name__ == "__main__":
    main()
