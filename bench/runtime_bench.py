"""In-process throughput of mixed-task batches, as ratios to the raw backbone, and baselines.

    python -m bench runtime --threads 1   # the full run (about 11 minutes on 2 busy CPU cores)
    python -m bench runtime --quick       # 200 heads, 3 rounds, no vision PEFT (about 6 minutes)
    python -m bench runtime --only tokens --rounds 3 --out runtime-tokens   # pooled + token tasks
    python -m bench runtime --smoke       # every part on tiny random backbones, in seconds

Parts can be run alone (``--only text,vision,tokens,flatness,hot_swap,memory``, and ``padding``:
length-aware batching before/after on 64 heads and 8 LoRAs, not in the default run); each group of
variants stops adding rounds after ``--budget-s`` seconds (never below 3 rounds), and
results are saved after every part, so a run stopped early keeps what it measured.

What it measures, on the real embedded backbones (MiniLM-L6 on Rotten Tomatoes snippets
of 16-64 tokens; MobileNetV2 at 96 px on textile photos), one batch of 64 rows per call:

1. rows/s of mixed traffic over 1, 64 and 1,000 head tasks and over 1, 8 and 64 LoRA
   adapters (rank 8), each request one row of a task drawn at random per call, as a
   ratio to the raw backbone (preprocess + forward + pooling) on the same inputs, and (text)
   to a second raw baseline, the raw backbone on the runtime's length-sorted sub-batches;
   the runtime with one padded pass (``token_budget=None``, the behaviour before
   length-aware batching) and the padding fraction before/after;
2. PEFT on the same batches: ``adapter_names`` mixed forward, and ``set_adapter`` one
   adapter at a time;
3. token tasks (``--only tokens``): per-token heads (16 tasks) and PEFT ``TOKEN_CLS`` LoRA
   (4 adapters) next to pooled heads, each request asking for one pooled and one token
   task on the same text (one trunk pass), against the raw backbone with and without
   the offsets a tagger needs;
4. flatness: 1,000 registered tasks (traffic over all of them) against 5;
5. register-to-first-prediction in process (a head, a LoRA) through the batcher;
6. resident memory per registered head and per resident LoRA against their tensor bytes.

Every group of variants is interleaved (round-robin, rotating order) and each figure is
the median over rounds of the ratio measured inside one round. Results go to
``bench/results/runtime.{md,json}``; the HTTP side is ``bench/http_bench.py``.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from bench.common import (SMOKE_HELP, TEXT_SPEC, VISION_SPEC, Timing, inputs_for, interleave, load, machine,
                          peft_multi, save_results, settled_rss, smoke_specs, write_heads, write_loras)
from adapters.backbones.base import Backbone, BackboneSpec
from adapters.batching import Batcher
from adapters.length_batches import padding_fraction, plan_sub_batches
from adapters.registry import Registry
from adapters.runtime import Runtime
from adapters.store import open_store

BATCH = 64


class Suite:
    """One backbone with its registered heads and LoRAs, and the PEFT baseline model."""

    def __init__(self, bb: Backbone, root: Path, n_heads: int, n_loras: int, rank: int):
        self.bb = bb
        self.inputs = inputs_for(bb, BATCH)
        self.reg = Registry(open_store(str(root / "store")), {bb.name: bb})
        t0 = time.perf_counter()
        for p in write_heads(root / "heads", bb, n_heads):
            self.reg.register(p)
        self.heads = [f"head-{i:04d}" for i in range(n_heads)]
        self.lora_dirs = write_loras(root / "loras", bb, n_loras, rank)
        for i, p in enumerate(self.lora_dirs):
            self.reg.register(p, name=f"lora-{i:03d}", labels=["neg", "pos"])
        self.loras = [f"lora-{i:03d}" for i in range(n_loras)]
        self.setup_s = time.perf_counter() - t0
        self.rt = Runtime(self.reg, max_forward_rows=256)
        # The runtime before length-aware batching: one padded pass over the whole batch.
        self.rt_padded = Runtime(self.reg, max_forward_rows=256, token_budget=None)
        self.lengths = None
        if bb.modality == "text":
            self.lengths = bb.preprocess(self.inputs)["attention_mask"].sum(1).tolist()
            self.sorted_plan = plan_sub_batches(self.lengths, self.rt.token_budget, self.rt.max_forward_rows)
        self.peft = peft_multi(bb, self.lora_dirs).to(bb.device, bb.dtype)
        self.rng = random.Random(0)

    def raw(self):
        return self.bb.embed(self.inputs)

    def raw_sorted(self):
        """The raw backbone on the runtime's length-sorted sub-batches (the new limit)."""
        out = torch.empty(len(self.inputs), self.bb.hidden_size)
        for idx in self.sorted_plan:
            out[torch.tensor(idx)] = self.bb.embed([self.inputs[i] for i in idx])
        return out

    def padding(self) -> dict:
        """Padding fraction of one padded batch and of the runtime's sub-batches."""
        return {"one padded batch": padding_fraction(self.lengths, [list(range(len(self.lengths)))]),
                "length-sorted sub-batches": padding_fraction(self.lengths, self.sorted_plan),
                "sub-batches": len(self.sorted_plan), "token_budget": self.rt.token_budget}

    def ours(self, pool: list[str], rt: Runtime | None = None):
        rt = rt or self.rt
        tasks = [self.rng.choice(pool) for _ in self.inputs]
        mod = self.bb.modality
        return rt.run([rt.prepare([t], [x], mod) for t, x in zip(tasks, self.inputs)])

    def _enc(self):
        return {k: v.to(self.bb.device) for k, v in self.bb.preprocess(self.inputs).items()}

    def peft_mixed(self, n: int):
        names = [f"a{self.rng.randrange(n)}" for _ in self.inputs]
        with torch.inference_mode():
            return torch.softmax(self.peft(**self._enc(), adapter_names=names).logits, -1)

    def peft_set_adapter(self, n: int):
        """PEFT's global switch: one forward per distinct adapter on its rows."""
        ids = [self.rng.randrange(n) for _ in self.inputs]
        enc = self._enc()
        out = torch.empty(len(ids), 2)
        with torch.inference_mode():
            for a in sorted(set(ids)):
                rows = torch.tensor([i for i, x in enumerate(ids) if x == a])
                self.peft.set_adapter(f"a{a}")
                out[rows] = torch.softmax(self.peft(**{k: v[rows.to(v.device)] for k, v in enc.items()}).logits,
                                          -1).float().cpu()
        return out

    def check_against_peft(self, n: int) -> float:
        """Max |ours - PEFT| over one mixed batch: the bench compares the same computation."""
        ids = [i % n for i in range(len(self.inputs))]
        mod = self.bb.modality
        res = self.rt.run([self.rt.prepare([self.loras[a]], [x], mod) for a, x in zip(ids, self.inputs)])
        ours = torch.tensor([[r[0].rows[0].scores["neg"], r[0].rows[0].scores["pos"]] for r in res])
        with torch.inference_mode():
            ref = torch.softmax(self.peft(**self._enc(), adapter_names=[f"a{a}" for a in ids]).logits,
                                -1).float().cpu()
        return float((ours - ref).abs().max())


def throughput(s: Suite, head_counts, lora_counts, rounds: int, peft: bool,
               deadline_s: float | None = None) -> tuple[Timing, dict]:
    variants = {"raw backbone": s.raw}
    if s.lengths is not None:
        variants["raw backbone, length-sorted sub-batches"] = s.raw_sorted
        n = head_counts[-1]
        variants[f"heads x{n}, one padded pass (before)"] = (
            lambda pool=s.heads[:n]: s.ours(pool, s.rt_padded))
    for n in head_counts:
        variants[f"heads x{n}"] = (lambda pool=s.heads[:n]: s.ours(pool))
    for n in lora_counts:
        variants[f"LoRA x{n}"] = (lambda pool=s.loras[:n]: s.ours(pool))
    if peft:
        for n in lora_counts[1:]:
            variants[f"PEFT adapter_names x{n}"] = (lambda n=n: s.peft_mixed(n))
            variants[f"PEFT set_adapter x{n}"] = (lambda n=n: s.peft_set_adapter(n))
    t = interleave(variants, BATCH, rounds=rounds, deadline_s=deadline_s)
    check = {f"max |ours - PEFT| x{n}": s.check_against_peft(n) for n in lora_counts[1:]}
    return t, check


def padding_part(bb: Backbone, root: Path, n_heads: int, n_loras: int, rounds: int,
                 deadline_s: float | None = None) -> dict:
    """Length-aware batching alone: before/after on heads and LoRA, against both raw baselines."""
    reg = Registry(open_store(str(root / "pad-store")), {bb.name: bb})
    for p in write_heads(root / "pad-heads", bb, n_heads):
        reg.register(p)
    for i, p in enumerate(write_loras(root / "pad-loras", bb, n_loras)):
        reg.register(p, name=f"lora-{i:03d}", labels=["neg", "pos"])
    s = Suite.__new__(Suite)  # the parts of a Suite this needs, without its PEFT baseline
    s.bb, s.reg, s.inputs, s.rng = bb, reg, inputs_for(bb, BATCH), random.Random(2)
    s.rt = Runtime(reg, max_forward_rows=256)
    s.rt_padded = Runtime(reg, max_forward_rows=256, token_budget=None)
    s.lengths = bb.preprocess(s.inputs)["attention_mask"].sum(1).tolist()
    s.sorted_plan = plan_sub_batches(s.lengths, s.rt.token_budget, s.rt.max_forward_rows)
    heads = [f"head-{i:04d}" for i in range(n_heads)]
    loras = [f"lora-{i:03d}" for i in range(n_loras)]
    t = interleave({
        "raw backbone": s.raw, "raw backbone, length-sorted sub-batches": s.raw_sorted,
        f"heads x{n_heads}, one padded pass (before)": lambda: s.ours(heads, s.rt_padded),
        f"heads x{n_heads}": lambda: s.ours(heads),
        f"LoRA x{n_loras}, one padded pass (before)": lambda: s.ours(loras, s.rt_padded),
        f"LoRA x{n_loras}": lambda: s.ours(loras),
    }, BATCH, rounds=rounds, deadline_s=deadline_s)
    out = summarise(t, {}, bb)
    out["padding"] = s.padding()
    return out


def token_suite(bb: Backbone, root: Path, rounds: int, deadline_s: float | None = None) -> tuple[Timing, dict]:
    """Pooled and token tasks in one batch vs the raw backbone (one row of 64 per request)."""
    from adapters.format import BackboneRef, HeadSpec, Manifest, write_head_adapter
    from adapters.heads import Head
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForTokenClassification

    reg = Registry(open_store(str(root / "store")), {bb.name: bb})
    for p in write_heads(root / "pooled", bb, 16):
        reg.register(p)
    spec = HeadSpec(pooling="tokens", input_dim=bb.hidden_size)
    tags = ["O", "COMMA", "PERIOD", "QUESTION"]
    for i in range(16):
        torch.manual_seed(100 + i)
        m = Manifest(name=f"tok-{i:02d}", kind="head", task_type="token_classification", labels=tags,
                     backbone=BackboneRef(name=bb.name, fingerprint=bb.fingerprint), head=spec,
                     preprocessing=bb.preprocessing_settings())
        reg.register(write_head_adapter(root / m.name, m, Head(spec, len(tags)).state_for_file()))
    for i in range(4):
        torch.manual_seed(200 + i)
        base = AutoModelForTokenClassification.from_pretrained(bb.source_path, num_labels=len(tags))
        model = get_peft_model(base, LoraConfig(task_type=TaskType.TOKEN_CLS, r=8, lora_alpha=16,
                                                target_modules=["query", "value"]))
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.02)
        model.save_pretrained(root / f"tl-{i}")
        reg.register(root / f"tl-{i}", name=f"tok-lora-{i}", labels=tags)
    rt = Runtime(reg, max_forward_rows=256)
    inputs = inputs_for(bb, BATCH)
    rng = random.Random(0)
    tok = bb.preprocessor.tokenizer

    def raw_tokens():  # what a tagger's trunk pass costs at least: offsets + per-token states
        enc = tok(inputs, padding=True, truncation=True, max_length=bb.preprocessor.max_length,
                  return_offsets_mapping=True, return_tensors="pt")
        enc.pop("offset_mapping")
        with torch.inference_mode():
            return bb.model(**enc).last_hidden_state

    def ours(pools: list[list[str]]):
        reqs = [rt.prepare([rng.choice(p) for p in pools], [x], "text") for x in inputs]
        return rt.run(reqs)

    pooled = [f"head-{i:04d}" for i in range(16)]
    tok_heads = [f"tok-{i:02d}" for i in range(16)]
    tok_loras = [f"tok-lora-{i}" for i in range(4)]
    variants = {"raw backbone": lambda: bb.embed(inputs),
                "raw backbone, per-token + offsets": raw_tokens,
                "pooled heads x16": lambda: ours([pooled]),
                "token heads x16": lambda: ours([tok_heads]),
                "pooled + token head per request": lambda: ours([pooled, tok_heads]),
                "pooled head + token LoRA x4 per request": lambda: ours([pooled, tok_loras])}
    t = interleave(variants, BATCH, rounds=rounds, deadline_s=deadline_s)
    # the mixed batch answers what each task answers alone
    mixed = rt.run([rt.prepare(["head-0000", "tok-00", "tok-lora-0"], inputs[:8], "text")])[0]
    alone = [rt.run([rt.prepare([n], inputs[:8], "text")])[0][0] for n in ("head-0000", "tok-00", "tok-lora-0")]
    diff = 0.0
    for m, a in zip(mixed, alone):
        for rm, ra in zip(m.rows, a.rows):
            if rm.scores is not None:
                diff = max(diff, max(abs(rm.scores[k] - ra.scores[k]) for k in rm.scores))
            else:
                diff = max(diff, max(abs(x["score"] - y["score"]) for x, y in zip(rm.words, ra.words)))
    return t, {"max |mixed - alone|": diff}


def flatness(bb: Backbone, root: Path, many: int, rounds: int, deadline_s: float | None = None) -> Timing:
    """The same backbone and batch, 5 registered tasks against ``many`` (traffic over all)."""
    suites = {}
    for n in (5, many):
        reg = Registry(open_store(str(root / f"flat-{n}")), {bb.name: bb})
        for p in write_heads(root / f"flat-heads-{n}", bb, n):
            reg.register(p)
        suites[n] = (Runtime(reg), [f"head-{i:04d}" for i in range(n)])
    inputs = inputs_for(bb, BATCH)
    rng = random.Random(1)

    def run(n):
        rt, pool = suites[n]
        return rt.run([rt.prepare([rng.choice(pool)], [x], bb.modality) for x in inputs])

    return interleave({"5 registered": lambda: run(5), f"{many} registered": lambda: run(many)},
                      BATCH, rounds=rounds, deadline_s=deadline_s)


def hot_swap(s: Suite, root: Path, reps: int) -> dict:
    """Seconds from ``register(folder)`` to the first prediction answered through the batcher."""
    batcher = Batcher(s.rt, max_batch_rows=64, max_wait_ms=5)
    out = {"head": [], "lora": []}
    try:
        heads = write_heads(root / "swap-heads", s.bb, reps, prefix="swap")
        for i in range(reps):
            for kind, folder, name in (("head", heads[i], f"swap-{i:04d}"),
                                       ("lora", s.lora_dirs[i % len(s.lora_dirs)], f"swap-lora-{i:03d}")):
                t0 = time.perf_counter()
                if kind == "head":
                    s.reg.register(folder)
                else:
                    s.reg.register(folder, name=name, labels=["neg", "pos"])
                batcher.submit(s.rt.prepare([name], s.inputs[:1], s.bb.modality)).result(timeout=60)
                out[kind].append(time.perf_counter() - t0)
    finally:
        batcher.close()
    return {k: {"median_ms": 1000 * statistics.median(v), "max_ms": 1000 * max(v), "n": len(v)}
            for k, v in out.items()}


def memory(bb: Backbone, root: Path, n_heads: int, n_loras: int) -> dict:
    """RSS growth per registered head / per resident LoRA, against their tensor bytes.

    The adapters are written here; registering them is measured in a fresh child process
    (backbone loaded and warmed, then registration only), since in this process freed
    memory from the earlier parts would be reused and hide the growth.
    """
    head_dirs = write_heads(root / "mem-heads", bb, n_heads, prefix="mem")
    mlp_dirs = write_heads(root / "mem-mlp", bb, max(1, n_heads // 4), hidden=(256,), prefix="mlp")
    lora_dirs = write_loras(root / "mem-loras", bb, n_loras)
    spec = {"name": bb.spec.name, "source": bb.spec.source, "max_length": bb.spec.max_length,
            "device": bb.spec.device, "half": bb.spec.half}
    args = json.dumps({"spec": spec, "store": str(root / "mem-store"), "threads": torch.get_num_threads(),
                       "heads": [str(p) for p in head_dirs],
                       "mlps": [str(p) for p in mlp_dirs], "loras": [str(p) for p in lora_dirs]})
    out = subprocess.run([sys.executable, "-c", "import sys; from bench.runtime_bench import memory_child; "
                          "memory_child(sys.argv[1])", args], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=900)
    if out.returncode != 0:
        raise SystemExit(f"memory child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory_child(arg: str) -> None:
    """The measured side of :func:`memory` (prints one JSON line)."""
    a = json.loads(arg)
    torch.set_num_threads(a["threads"])
    bb = load(BackboneSpec(**a["spec"]))
    bb.embed(inputs_for(bb, 4))
    reg = Registry(open_store(a["store"]), {bb.name: bb})
    before = settled_rss()
    for p in a["heads"]:
        reg.register(Path(p))
    mid = settled_rss()
    for p in a["mlps"]:
        reg.register(Path(p))
    mid2 = settled_rss()
    for i, p in enumerate(a["loras"]):
        reg.register(Path(p), name=f"mem-lora-{i:03d}", labels=["neg", "pos"])
    after = settled_rss()
    n_heads, n_loras = len(a["heads"]), len(a["loras"])
    head_bytes = reg.resolve("mem-0000").nbytes
    lora = reg.resolve("mem-lora-000")
    print(json.dumps({"heads": n_heads, "rss_per_head": (mid - before) / n_heads,
                      "tensor_bytes_per_head": head_bytes, "loras": n_loras,
                      "mlps": len(a["mlps"]), "rss_per_mlp": (mid2 - mid) / len(a["mlps"]),
                      "tensor_bytes_per_mlp": reg.resolve("mlp-0000").nbytes,
                      "rss_per_lora": (after - mid2) / n_loras, "tensor_bytes_per_lora": lora.nbytes,
                      "resident_loras": reg.resident_loras()}))


def markdown(results: dict) -> str:
    lines = [f"# Runtime bench ({'quick' if results['quick'] else 'full'} run)", "",
             f"Machine: {results['machine']['cpus']} CPUs, torch {results['machine']['torch']}, "
             f"{results['machine']['threads']} threads, CUDA: {results['machine']['cuda']}; "
             f"load average at start {results['machine']['load_avg'][0]:.1f}. Batch {BATCH} rows; median "
             "of per-round ratios, variants interleaved."
             + ("" if results.get("complete") else " **Partial: the run was stopped before the end.**"), ""]
    for name in ("text", "padding", "vision", "tokens"):
        if name not in results:
            continue
        r = results[name]
        two = any("ratio_sorted_raw" in v for v in r["rows"].values())
        lines += [f"## {name}: {r['backbone']} ({r['rounds']} rounds)", "",
                  "| variant | rows/s (median) | × raw backbone | × raw (CPU time) |"
                  + (" × raw, length-sorted | × raw, length-sorted (CPU time) |" if two else ""),
                  "|---|---|---|---|" + ("---|---|" if two else "")]
        for k, v in r["rows"].items():
            lines.append(f"| {k} | {v['rows_per_s']:.1f} | {v['ratio']:.3f} | {v['ratio_cpu']:.3f} |"
                         + (f" {v['ratio_sorted_raw']:.3f} | {v['ratio_sorted_raw_cpu']:.3f} |" if two else ""))
        if r.get("padding"):
            p = r["padding"]
            lines += ["", f"Padding fraction of a batch of {BATCH}: {p['one padded batch']:.2f} padded to its "
                      f"longest row (before), {p['length-sorted sub-batches']:.2f} in the runtime's "
                      f"{p['sub-batches']} length-sorted sub-batches (token budget {p['token_budget']})."]
        if r.get("vs_peft"):
            lines += ["", "| ours vs PEFT | ratio |", "|---|---|"]
            lines += [f"| {k} | {v:.2f} |" for k, v in r["vs_peft"].items()]
        lines += ["", "Checks: " + ", ".join(f"{k} = {v:.1e}" for k, v in r["checks"].items()) if r["checks"] else "", ""]
    if "flatness" in results:
        f = results["flatness"]
        lines += ["## flatness (heads, traffic over every registered task)", "",
                  f"{f['many']} registered / 5 registered = **{f['ratio']:.3f}** "
                  f"({f['rows_per_s_many']:.1f} vs {f['rows_per_s_5']:.1f} rows/s)", ""]
    if "hot_swap" in results:
        lines += ["## register → first prediction (in process, through the batcher)", "",
                  "| kind | median ms | max ms | n |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['median_ms']:.1f} | {v['max_ms']:.1f} | {v['n']} |"
                  for k, v in results["hot_swap"].items()]
        lines.append("")
    if "memory" in results:
        m = results["memory"]
        lines += ["## memory (RSS growth while registering)", "",
                  "| adapter | resident bytes each | tensor bytes each | ratio |", "|---|---|---|---|",
                  f"| head ({m['heads']} registered) | {m['rss_per_head']:.0f} | {m['tensor_bytes_per_head']} | "
                  f"{m['rss_per_head'] / m['tensor_bytes_per_head']:.2f} |",
                  f"| MLP head 384-256-2 ({m['mlps']} registered) | {m['rss_per_mlp']:.0f} | "
                  f"{m['tensor_bytes_per_mlp']} | {m['rss_per_mlp'] / m['tensor_bytes_per_mlp']:.2f} |",
                  f"| LoRA r=8 ({m['loras']} resident) | {m['rss_per_lora']:.0f} | {m['tensor_bytes_per_lora']} | "
                  f"{m['rss_per_lora'] / m['tensor_bytes_per_lora']:.2f} |", ""]
    return "\n".join(lines) + "\n"


def summarise(t: Timing, checks: dict, bb: Backbone) -> dict:
    rows = {k: {"rows_per_s": t.median(k), "ratio": t.ratio(k, "raw backbone"),
                "ratio_cpu": t.ratio(k, "raw backbone", cpu=True)} for k in t.per_round}
    vs = {}
    for k in t.per_round:
        if k.startswith("PEFT"):
            n = k.split("x")[-1]
            vs[f"LoRA x{n} / {k}"] = t.ratio(f"LoRA x{n}", k)
    if "raw backbone, length-sorted sub-batches" in t.per_round:
        sorted_ref = "raw backbone, length-sorted sub-batches"
        for k in t.per_round:
            rows[k]["ratio_sorted_raw"] = t.ratio(k, sorted_ref)
            rows[k]["ratio_sorted_raw_cpu"] = t.ratio(k, sorted_ref, cpu=True)
    return {"backbone": bb.spec.source, "rounds": len(t.per_round["raw backbone"]), "rows": rows, "vs_peft": vs, "checks": checks, "timing": t.as_dict()}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="200 heads, 3 rounds, no vision PEFT (~6 minutes)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds per group")
    ap.add_argument("--only", default="text,vision,tokens,flatness,hot_swap,memory",
                    help="comma-separated parts to run")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary adapters and stores")
    ap.add_argument("--device", default="auto", help="torch device of the backbones (auto: cuda if present)")
    ap.add_argument("--half", action="store_true", help="float16 backbones (CUDA only; ignored on CPU)")
    ap.add_argument("--out", default=None,
                    help="results name under bench/results (default runtime / runtime-quick)")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="seconds per throughput group after which rounds stop (never below 3)")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    parts = set(args.only.split(","))
    rounds = args.rounds or (1 if args.smoke else 3 if args.quick else 5)
    budget = args.budget_s or (120 if args.quick else 300)
    n_heads = 6 if args.smoke else 200 if args.quick else 1000
    n_loras = 3 if args.smoke else 64
    head_counts = sorted({1, min(64, n_heads), n_heads})
    lora_counts = sorted({1, min(8, n_loras), n_loras})
    results: dict = {"quick": args.quick, "machine": machine(), "batch": BATCH,
                     "rounds": rounds, "budget_s": budget}
    name = args.out or ("runtime-smoke" if args.smoke else "runtime-quick" if args.quick else "runtime")
    root = Path(tempfile.mkdtemp(prefix="taskswap-bench-"))
    text_spec, vision_spec = smoke_specs(root / "backbones") if args.smoke else (TEXT_SPEC, VISION_SPEC)
    text_spec = replace(text_spec, device=args.device, half=args.half)
    vision_spec = replace(vision_spec, device=args.device, half=args.half)

    def checkpoint(part: str) -> None:  # a run stopped later still leaves what it measured
        print(f"[{part} done at {time.strftime('%H:%M:%S')}]", flush=True)
        save_results(name, results, markdown(results))

    try:
        text = load(text_spec) if parts & {"text", "padding", "flatness", "hot_swap", "memory", "tokens"} else None
        if "tokens" in parts:
            t, checks = token_suite(text, root / "tokens", rounds, deadline_s=budget)
            results["tokens"] = summarise(t, checks, text)
            checkpoint("tokens")
        if "text" in parts or "hot_swap" in parts:
            t0 = time.perf_counter()
            s = Suite(text, root / "text", n_heads, n_loras, rank=8)
            print(f"text suite ready in {time.perf_counter() - t0:.0f}s", flush=True)
            if "text" in parts:
                t, checks = throughput(s, head_counts, lora_counts, rounds, peft=True, deadline_s=budget)
                results["text"] = summarise(t, checks, text)
                results["text"]["padding"] = s.padding()
                checkpoint("text")
            if "hot_swap" in parts:
                results["hot_swap"] = hot_swap(s, root, reps=2 if args.smoke else 5 if args.quick else 10)
                checkpoint("hot_swap")
            del s
        if "padding" in parts:
            results["padding"] = padding_part(text, root, min(64, n_heads), min(8, n_loras), rounds,
                                              deadline_s=budget)
            checkpoint("padding")
        if "vision" in parts:
            vision = load(vision_spec)
            sv = Suite(vision, root / "vision", n_heads, n_loras, rank=8)
            t, checks = throughput(sv, head_counts, lora_counts, rounds, peft=not args.quick,
                                   deadline_s=budget)
            results["vision"] = summarise(t, checks, vision)
            checkpoint("vision")
            del sv
        if "flatness" in parts:
            f = flatness(text, root, n_heads, rounds, deadline_s=budget)
            many = f"{n_heads} registered"
            results["flatness"] = {"many": n_heads, "ratio": f.ratio(many, "5 registered"),
                                   "rows_per_s_many": f.median(many), "rows_per_s_5": f.median("5 registered"),
                                   "timing": f.as_dict()}
            checkpoint("flatness")
        if "memory" in parts:
            results["memory"] = memory(text, root, n_heads, min(n_loras, 32) if args.quick else n_loras)
        results["complete"] = True
        checkpoint("all")
        print(markdown(results))
        return results
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)  # hundreds of MB of adapters and stores

