"""Taskswap next to the deployments a user would pick instead, on the same machine and texts.

    python -m bench peers                          # every part (about 5 minutes on 2 busy cores)
    python -m bench peers --only models --copies 8,64
    python -m bench peers --only infinity --seconds 6 --rounds 3
    python -m bench peers --smoke          # every part on a tiny random backbone, in seconds

Three parts, each one interleaved run (rotating order, median over rounds of the ratio
measured inside one round), on MiniLM-L6 and Rotten Tomatoes snippets of 16-64 tokens:

``models``  *N separate models*, the deployment Taskswap replaces: the same tasks served as N
            fine-tuned copies of MiniLM (each a full copy of the weights, perturbed so every
            copy is its own tensors, plus its classifier) in this process. A batch of 64
            single-row requests, each for a task drawn at random, is routed row by row to its
            model and batched per model (one tokenisation and one forward per distinct model).
            Next to it: Taskswap's runtime on the same batches over N head tasks and over N
            LoRA r=8 adapters (one trunk pass), and the raw backbone. Memory: RSS growth of
            the process per model copy against per registered head / LoRA.
``st``      *in process*: ``SentenceTransformer(folder).encode(texts, batch_size=64)`` on the
            same 256 texts (``--st-texts``) against our trunk pass (:meth:`Backbone.embed`, batches of 64 in
            request order) and the raw backbone on length-sorted batches of 64.
``infinity`` *an embedding server*: ``infinity-emb`` serving the same MiniLM folder over HTTP
            (POST /embeddings) against Taskswap's POST /predict with mixed head tasks and the
            project's raw-backbone BentoML service, same concurrent clients, same texts per
            request; requests/s, p50 and p99.

infinity-emb pins its own dependency set (an older FastAPI, optimum, ...), so it lives in a
separate virtual environment that this bench only starts as a subprocess on 127.0.0.1::

    python -m venv /work/venvs/peers
    /work/venvs/peers/bin/pip install torch==2.13.0          # first: keeps the local CPU wheel
    /work/venvs/peers/bin/pip install "infinity-emb[server,torch]==0.0.78"   # torch extra: sentence-transformers

and ``--infinity`` (default ``$INFINITY_EMB`` or ``/work/venvs/peers/bin/infinity_emb``)
points at its command. Without it the ``infinity`` part is skipped and says so.

Results go to ``bench/results/peers.{md,json}`` (``--out`` to change the name).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

from adapters.registry import Registry
from adapters.runtime import Runtime
from adapters.store import open_store
from bench.common import (SMOKE_HELP, TEXT_SPEC, ServerProcess, interleave, load, machine, percentile, review_snippets,
                          save_results, settled_rss, smoke_specs, write_heads, write_loras)
from bench.http_bench import Served, tree_cpu_s

BATCH = 64


def _mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def _batches(texts: list[str], n_batches: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    return [rng.sample(texts, BATCH) for _ in range(n_batches)]


# ---- part 1: N separate models ---------------------------------------------------------
class SeparateModels:
    """N fine-tuned copies of the backbone, each with its own 2-label classifier.

    Every copy is a full deep copy whose weights are perturbed (``+ 1e-3 * noise``), standing
    for N independently fine-tuned models: the same compute and memory as the real thing.
    """

    def __init__(self, bb, n: int):
        self.bb = bb
        self.models: list[torch.nn.Module] = []
        self.heads: list[torch.nn.Linear] = []
        for i in range(n):
            g = torch.Generator().manual_seed(i)
            m = copy.deepcopy(bb.model)
            with torch.no_grad():
                for p in m.parameters():
                    p.add_(torch.randn(p.shape, generator=g) * 1e-3)
            self.models.append(m.eval())
            self.heads.append(torch.nn.Linear(bb.hidden_size, 2).eval())

    def run(self, texts: list[str], tasks: list[int]) -> torch.Tensor:
        """Route rows to their model, one tokenisation + forward per distinct model: ``[rows, 2]``."""
        out = torch.empty(len(texts), 2)
        by_model: dict[int, list[int]] = {}
        for row, t in enumerate(tasks):
            by_model.setdefault(t, []).append(row)
        with torch.inference_mode():
            for t, rows in by_model.items():
                enc = self.bb.preprocess([texts[r] for r in rows])
                hidden = self.models[t](**enc).last_hidden_state  # [rows, seq, hidden]
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[torch.tensor(rows)] = torch.softmax(self.heads[t](pooled), -1)
        return out


def part_models(bb, texts: list[str], root: Path, copies: list[int], rounds: int, budget_s: float) -> dict:
    most = max(copies)
    need = most * sum(p.numel() * p.element_size() for p in bb.model.parameters())
    avail = _mem_available()
    if need > avail - (2 << 30):  # keep 2 GiB for everyone else on the machine
        fit = max(1, int((avail - (2 << 30)) // (need // most)))
        print(f"models: {most} copies need {need / 2**30:.1f} GiB, {avail / 2**30:.1f} GiB available; "
              f"capping at {fit}", flush=True)
        copies = sorted({min(c, fit) for c in copies})
        most = max(copies)
    # Taskswap's side: the same number of tasks as heads and as LoRA adapters, registered.
    reg = Registry(open_store(str(root / "store")), {bb.name: bb})
    base = settled_rss()
    for p in write_heads(root / "heads", bb, most):
        reg.register(p)
    after_heads = settled_rss()
    for i, p in enumerate(write_loras(root / "loras", bb, most)):
        reg.register(p, name=f"lora-{i:03d}", labels=["neg", "pos"])
    after_loras = settled_rss()
    rt = Runtime(reg)
    heads = [f"head-{i:04d}" for i in range(most)]
    loras = [f"lora-{i:03d}" for i in range(most)]

    before_models = settled_rss()
    sep = SeparateModels(bb, most)
    after_models = settled_rss()

    batches = _batches(texts, 4, seed=7)
    rng = random.Random(3)
    plans = {n: [[rng.randrange(n) for _ in range(BATCH)] for _ in batches] for n in copies}
    counters: dict[str, int] = {}

    def nxt(name: str) -> int:  # each variant walks the same batches in the same order
        counters[name] = counters.get(name, -1) + 1
        return counters[name] % len(batches)

    def raw():
        return bb.embed(batches[nxt("raw")])

    def ours(pool: list[str], n: int, key: str):
        i = nxt(key)
        reqs = [rt.prepare([pool[t]], [x], "text") for t, x in zip(plans[n][i], batches[i])]
        return rt.run(reqs)

    def models(n: int, key: str):
        i = nxt(key)
        return sep.run(batches[i], plans[n][i])

    variants = {"raw backbone (1 task)": raw}
    for n in copies:
        variants[f"Taskswap heads x{n}"] = lambda n=n: ours(heads, n, f"h{n}")
        variants[f"Taskswap LoRA r=8 x{n}"] = lambda n=n: ours(loras, n, f"l{n}")
        variants[f"{n} separate models"] = lambda n=n: models(n, f"m{n}")
    load_start = os.getloadavg()
    t = interleave(variants, BATCH, rounds=rounds, deadline_s=budget_s)
    ref = "raw backbone (1 task)"
    rows = {k: {"rows_per_s": t.median(k), "ratio_raw": t.ratio(k, ref)} for k in variants}
    vs = {}
    for n in copies:
        vs[f"Taskswap heads x{n} / {n} separate models"] = t.ratio(f"Taskswap heads x{n}", f"{n} separate models")
        vs[f"Taskswap LoRA x{n} / {n} separate models"] = t.ratio(f"Taskswap LoRA r=8 x{n}", f"{n} separate models")
    model_bytes = sum(p.numel() * p.element_size() for p in sep.models[0].parameters())
    mem = {"copies": most, "rss_per_model": (after_models - before_models) / most,
           "tensor_bytes_per_model": model_bytes,
           "rss_per_head": (after_heads - base) / most, "rss_per_lora": (after_loras - after_heads) / most,
           "rss_models_total": after_models - before_models,
           "rss_taskswap_tasks_total": after_loras - base}
    del sep
    settled_rss()
    return {"copies": copies, "rows": rows, "vs_models": vs, "memory": mem,
            "rounds": len(t.per_round[ref]), "load_avg_start": load_start, "load_avg_end": os.getloadavg(),
            "timing": t.as_dict()}


# ---- part 2: sentence-transformers in process ------------------------------------------
def part_st(bb, texts: list[str], rounds: int, budget_s: float) -> dict:
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(bb.source_path, device="cpu")
    tok = bb.preprocessor.tokenizer
    lengths = [len(tok(x)["input_ids"]) for x in texts]
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])
    by_len = [texts[i] for i in order]
    chunks = [texts[i:i + BATCH] for i in range(0, len(texts), BATCH)]

    def ours():
        return torch.cat([bb.embed(c) for c in chunks])

    def ours_sorted():  # the same trunk on length-sorted batches of 64 (rows back in order)
        feats = torch.cat([bb.embed(by_len[i:i + BATCH]) for i in range(0, len(by_len), BATCH)])
        out = torch.empty_like(feats)
        out[torch.tensor(order)] = feats
        return out

    def st_encode():
        return st.encode(texts, batch_size=BATCH, convert_to_tensor=True, normalize_embeddings=False)

    # Same computation check: ST's all-MiniLM folder mean-pools then L2-normalises.
    a = torch.nn.functional.normalize(ours(), dim=-1)
    b = torch.nn.functional.normalize(st_encode().float(), dim=-1)
    c = torch.nn.functional.normalize(ours_sorted(), dim=-1)
    pad_in_order = 1 - sum(lengths) / sum(len(ch) * max(lengths[i:i + BATCH])
                                          for i, ch in zip(range(0, len(texts), BATCH), chunks))
    sl = [lengths[i] for i in order]
    pad_sorted = 1 - sum(sl) / sum(min(BATCH, len(sl) - i) * max(sl[i:i + BATCH])
                                   for i in range(0, len(sl), BATCH))
    load_start = os.getloadavg()
    t = interleave({"our trunk (batches of 64, request order)": ours,
                    "raw backbone, length-sorted batches of 64": ours_sorted,
                    "sentence-transformers encode (batch_size=64)": st_encode},
                   len(texts), rounds=rounds, deadline_s=budget_s)
    ref = "our trunk (batches of 64, request order)"
    return {"texts": len(texts), "rows": {k: {"rows_per_s": t.median(k), "ratio": t.ratio(k, ref)}
                                          for k in t.per_round},
            "max_abs_diff_normalised": float((a - b).abs().max()),
            "max_abs_diff_sorted": float((a - c).abs().max()),
            "padding_fraction": {"request order": pad_in_order, "length-sorted": pad_sorted},
            "rounds": len(t.per_round[ref]), "load_avg_start": load_start, "load_avg_end": os.getloadavg(),
            "timing": t.as_dict()}


# ---- part 3: infinity-emb over HTTP ----------------------------------------------------
async def _load(url: str, path: str, bodies, clients: int, seconds: float) -> dict:
    """``clients`` concurrent loops, one request in flight each, POSTing ``bodies()`` to ``url+path``."""
    lat: list[float] = []
    errors: dict[str, int] = {}
    stop_at = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        async def worker():
            while time.monotonic() < stop_at:
                body = bodies()
                t0 = time.perf_counter()
                try:
                    r = await client.post(path, json=body)
                    ok, key = r.status_code == 200, str(r.status_code)
                except httpx.HTTPError as exc:
                    ok, key = False, type(exc).__name__
                if ok:
                    lat.append(time.perf_counter() - t0)
                else:
                    errors[key] = errors.get(key, 0) + 1
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
    return {"requests_per_s": len(lat) / wall, "p50_ms": 1000 * percentile(lat, 50),
            "p99_ms": 1000 * percentile(lat, 99), "ok": len(lat), "errors": errors}


class Infinity(ServerProcess):
    """``infinity_emb v2`` from its own venv (see :class:`bench.common.ServerProcess`)."""

    health_path = "/health"

    def __init__(self, command: str, model_dir: str, root: Path, batch_size: int, threads: int):
        super().__init__(root, "infinity")
        self.model = "minilm"
        # The same torch thread count as our servers (torch reads OMP_NUM_THREADS at start).
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(("TASKSWAP_", "PYTHON"))},
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0",
               "DO_NOT_TRACK": "1", "HF_HOME": str(root / "hf-home"), "OMP_NUM_THREADS": str(threads),
               "MKL_NUM_THREADS": str(threads)}
        self._spawn([command, "v2", "--model-id", model_dir, "--served-model-name", self.model,
                     "--engine", "torch", "--device", "cpu", "--batch-size", str(batch_size),
                     "--host", "127.0.0.1", "--port", str(self.port), "--no-model-warmup"], env)


def part_infinity(bb, texts: list[str], root: Path, command: str, args) -> dict:
    reg = Registry(open_store(str(root / "http-store")), {bb.name: bb})
    for p in write_heads(root / "http-heads", bb, args.heads):
        reg.register(p)
    heads = [f"head-{i:04d}" for i in range(args.heads)]
    common = {"TASKSWAP_TORCH_THREADS": str(args.threads), "TASKSWAP_MAX_BATCH_ROWS": "64",
              "TASKSWAP_MAX_WAIT_MS": "5"}
    spec = {"name": bb.name, "source": bb.spec.source, "max_length": bb.spec.max_length}
    servers = {
        "taskswap": Served("service.service:Taskswap", {
            **common, "TASKSWAP_STORE": str(root / "http-store"), "TASKSWAP_ADMIN_TOKEN": secrets.token_hex(16),
            "TASKSWAP_BACKBONES": json.dumps([spec]), "TASKSWAP_METRICS_MAX_TASKS": "50"}, root, "taskswap"),
        "raw": Served("bench.raw_service:RawBackbone", {**common, "RAW_BACKBONE": json.dumps(spec)}, root, "raw"),
        "infinity": Infinity(command, bb.source_path, root, batch_size=64, threads=args.threads),
    }
    if args.compare_checkout:  # the same Taskswap settings and store, served from another checkout's code
        servers["compare"] = Served("service.service:Taskswap", {
            **common, "TASKSWAP_STORE": str(root / "http-store"), "TASKSWAP_ADMIN_TOKEN": secrets.token_hex(16),
            "TASKSWAP_BACKBONES": json.dumps([spec]), "TASKSWAP_METRICS_MAX_TASKS": "50"}, root, "compare",
            cwd=Path(args.compare_checkout))
    rng = random.Random(11)
    k = args.texts

    def pick() -> list[str]:
        return rng.sample(texts, k)

    try:
        for s in servers.values():
            s.wait_ready()
        ts, raw, inf = servers["taskswap"].url, servers["raw"].url, servers["infinity"]
        cmp = servers["compare"].url if "compare" in servers else None
        with httpx.Client(timeout=120) as c:  # warm-up: every task once, and a first embedding
            for t in heads:
                for url in filter(None, (ts, cmp)):
                    c.post(url + "/predict", json={"task": t, "texts": texts[:1]}).raise_for_status()
            r = c.post(inf.url + "/embeddings", json={"model": inf.model, "input": texts[:8]})
            r.raise_for_status()
            dim = len(r.json()["data"][0]["embedding"])
        targets = {  # name: (server, path, request body maker)
            "infinity-emb /embeddings": (inf.url, "/embeddings", lambda: {"model": inf.model, "input": pick()}),
            f"Taskswap /predict, mixed heads ({args.heads} tasks)":
                (ts, "/predict", lambda: {"task": rng.choice(heads), "texts": pick()}),
            "raw backbone service /predict": (raw, "/predict", lambda: {"texts": pick()}),
            "Taskswap /embed": (ts, "/embed", lambda: {"texts": pick()}),
            "Taskswap /v1/embeddings (base64)": (ts, "/v1/embeddings", lambda: {
                "model": bb.name, "input": pick(), "encoding_format": "base64"}),
        }
        if cmp:
            for name in [n for n in targets if n.startswith("Taskswap")]:
                targets[f"{name} [{args.compare_checkout}]"] = (cmp, *targets[name][1:])
        owner = {ts: servers["taskswap"], raw: servers["raw"], inf.url: inf, **({cmp: servers["compare"]} if cmp else {})}
        for url, path, body in targets.values():  # a short unmeasured pass each (pools, caches)
            asyncio.run(_load(url, path, body, args.clients, 2))

        def measured(url, path, body):  # the load, and the CPU its server's processes used meanwhile
            pid = owner[url].proc.pid
            before = tree_cpu_s(pid)
            res = asyncio.run(_load(url, path, body, args.clients, args.seconds))
            res["server_cpu_ms_per_request"] = 1000 * (tree_cpu_s(pid) - before) / max(res["ok"], 1)
            return res

        variants = {n: (lambda t=t: measured(*t)) for n, t in targets.items()}
        load_start = os.getloadavg()
        names = list(variants)
        per_round: dict[str, list[dict]] = {n: [] for n in names}
        for rnd in range(args.rounds):
            for name in names[rnd % len(names):] + names[: rnd % len(names)]:
                res = variants[name]()
                per_round[name].append(res)
                print(f"  round {rnd + 1} {name}: {res['requests_per_s']:.1f} req/s, p50 {res['p50_ms']:.0f} ms, "
                      f"p99 {res['p99_ms']:.0f} ms, server CPU {res['server_cpu_ms_per_request']:.2f} ms/request, "
                      f"errors {res['errors']}", flush=True)
        ref = "infinity-emb /embeddings"
        rows = {n: {"requests_per_s": statistics.median(r["requests_per_s"] for r in rs),
                    "p50_ms": statistics.median(r["p50_ms"] for r in rs),
                    "p99_ms": statistics.median(r["p99_ms"] for r in rs),
                    "ratio": statistics.median(a["requests_per_s"] / b["requests_per_s"]
                                               for a, b in zip(rs, per_round[ref])),
                    # requests per second of the server's own CPU time, over the peer's, same round
                    "server_cpu_ms_per_request": statistics.median(r["server_cpu_ms_per_request"] for r in rs),
                    "ratio_cpu": statistics.median(b["server_cpu_ms_per_request"] / a["server_cpu_ms_per_request"]
                                                   for a, b in zip(rs, per_round[ref])),
                    "errors": sum(sum(r["errors"].values()) for r in rs)} for n, rs in per_round.items()}
        raw_rounds = per_round["raw backbone service /predict"]
        vs_raw = {n: {"wall": statistics.median(a["requests_per_s"] / b["requests_per_s"] for a, b in zip(rs, raw_rounds)),
                      "cpu": statistics.median(b["server_cpu_ms_per_request"] / a["server_cpu_ms_per_request"]
                                               for a, b in zip(rs, raw_rounds))}
                  for n, rs in per_round.items() if n.startswith("Taskswap")}
        return {"rows": rows, "vs_raw": vs_raw, "rounds": per_round, "infinity_dim": dim, "clients": args.clients,
                "texts_per_request": k, "seconds": args.seconds, "threads": args.threads,
                "load_avg_start": load_start, "load_avg_end": os.getloadavg()}
    finally:
        for s in servers.values():
            s.stop()


# ---- report ----------------------------------------------------------------------------
def _cpu_ratio(timing: dict, name: str, ref: str) -> float:
    """Median over rounds of the ratio of rows per second of *this process's CPU time*:
    with one torch thread it is the work per row, which other jobs on the machine barely
    change (their load lengthens the wall clock, not our CPU seconds)."""
    d = timing["rows_per_cpu_s"]
    return statistics.median(a / b for a, b in zip(d[name], d[ref]))


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = ["# Peers side by side", "",
             f"Machine: {m['cpus']} CPUs, torch {m['torch']}, {m['threads']} torch threads, CUDA: {m['cuda']}; "
             f"load average at start {m['load_avg'][0]:.1f}. Command: `{res['command']}`.", ""]
    if "models" in res:
        r = res["models"]
        la = f"load average {r['load_avg_start'][0]:.1f} → {r['load_avg_end'][0]:.1f}"
        lines += [f"## N separate models vs one backbone with N tasks ({r['rounds']} rounds, {la})", "",
                  "Batches of 64 single-row requests, each for a task drawn at random.", "",
                  "| variant | rows/s (median) | × raw backbone | × raw (CPU time) |", "|---|---|---|---|"]
        ref = next(iter(r["rows"]))
        lines += [f"| {k} | {v['rows_per_s']:.1f} | {v['ratio_raw']:.3f} | "
                  f"{_cpu_ratio(r['timing'], k, ref):.3f} |" for k, v in r["rows"].items()]
        lines += ["", "| ratio (same round) | wall | CPU time |", "|---|---|---|"]
        for k, v in r["vs_models"].items():
            a, b = k.split(" / ")
            a = a.replace("LoRA x", "LoRA r=8 x")
            lines.append(f"| {k} | {v:.2f} | {_cpu_ratio(r['timing'], a, b):.2f} |")
        mm = r["memory"]
        lines += ["", f"Memory ({mm['copies']} of each): RSS per model copy {mm['rss_per_model'] / 2**20:.1f} MiB "
                  f"(tensors {mm['tensor_bytes_per_model'] / 2**20:.1f} MiB), per registered head "
                  f"{mm['rss_per_head'] / 1024:.1f} KiB, per LoRA r=8 {mm['rss_per_lora'] / 1024:.1f} KiB; "
                  f"{mm['copies']} models {mm['rss_models_total'] / 2**30:.2f} GiB vs {mm['copies']} heads + "
                  f"{mm['copies']} LoRAs {mm['rss_taskswap_tasks_total'] / 2**20:.1f} MiB on one shared backbone.", ""]
    if "st" in res:
        r = res["st"]
        la = f"load average {r['load_avg_start'][0]:.1f} → {r['load_avg_end'][0]:.1f}"
        pf = r["padding_fraction"]
        lines += [f"## sentence-transformers encode vs our trunk, in process ({r['texts']} texts, "
                  f"{r['rounds']} rounds, {la})", "",
                  "| variant | rows/s (median) | × our trunk | × our trunk (CPU time) |", "|---|---|---|---|"]
        ref = next(iter(r["rows"]))
        lines += [f"| {k} | {v['rows_per_s']:.1f} | {v['ratio']:.3f} | {_cpu_ratio(r['timing'], k, ref):.3f} |"
                  for k, v in r["rows"].items()]
        lines += ["", f"Same computation: max |ours − ST| after L2 normalisation {r['max_abs_diff_normalised']:.1e}; "
                  f"sorted vs in order {r['max_abs_diff_sorted']:.1e}. Padding fraction of the batches: "
                  f"{pf['request order']:.2f} in request order, {pf['length-sorted']:.2f} length-sorted.", ""]
    if "infinity" in res:
        r = res["infinity"]
        if "skipped" in r:
            lines += ["## infinity-emb over HTTP", "", f"Skipped: {r['skipped']}", ""]
        else:
            la = f"load average {r['load_avg_start'][0]:.1f} → {r['load_avg_end'][0]:.1f}"
            lines += [f"## infinity-emb vs Taskswap over HTTP ({r['clients']} clients, {r['texts_per_request']} "
                      f"texts per request, {r['seconds']:.0f} s phases, {len(next(iter(r['rounds'].values())))} "
                      f"rounds, {la})", "",
                      f"Torch threads {r['threads']} in every server (infinity-emb: `OMP_NUM_THREADS`). "
                      "Wall-clock ratios move with the machine's load; the CPU-time ratio (requests per "
                      "second of the server's own CPU time, all its processes, over infinity-emb's in the "
                      "same round) is the work per request.", "",
                      "| server | requests/s | × infinity-emb | × infinity-emb (CPU time) | server CPU ms / request "
                      "| p50 ms | p99 ms | errors |", "|---|---|---|---|---|---|---|---|"]
            lines += [f"| {k} | {v['requests_per_s']:.1f} | {v['ratio']:.3f} | {v.get('ratio_cpu', float('nan')):.3f} | "
                      f"{v.get('server_cpu_ms_per_request', float('nan')):.2f} | {v['p50_ms']:.0f} | "
                      f"{v['p99_ms']:.0f} | {v['errors']} |" for k, v in r["rows"].items()]
            if r.get("vs_raw"):
                lines += ["", "| Taskswap route / raw backbone service (same round) | wall | CPU time |", "|---|---|---|"]
                lines += [f"| {k} | {v['wall']:.3f} | {v['cpu']:.3f} |" for k, v in r["vs_raw"].items()]
            lines.append("")
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="models,st,infinity", help="comma-separated parts")
    ap.add_argument("--copies", default="8,64", help="numbers of separate models / tasks")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--budget-s", type=float, default=90, help="per in-process part; rounds stop after (min 3)")
    ap.add_argument("--st-texts", type=int, default=256, help="texts per encode call in the st part")
    ap.add_argument("--threads", type=int, default=2, help="torch threads here and in each server")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--texts", type=int, default=1, help="texts per HTTP request")
    ap.add_argument("--seconds", type=float, default=8.0, help="length of one HTTP load phase")
    ap.add_argument("--heads", type=int, default=64, help="head tasks behind Taskswap's /predict")
    ap.add_argument("--infinity", default=os.environ.get("INFINITY_EMB", "/work/venvs/peers/bin/infinity_emb"),
                    help="the infinity_emb command (in its own venv)")
    ap.add_argument("--compare-checkout", default=None, metavar="PATH", help=(
        "infinity part: a checkout of other code (e.g. `git archive <ref> | tar -x -C /tmp/old`) served "
        "as a second Taskswap on the same store, its routes interleaved with ours"))
    ap.add_argument("--out", default=None, help="results name under bench/results (default peers)")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP + "; 2 and 3 copies, 1 s phases")
    args = ap.parse_args(argv)
    if args.smoke:
        args.copies, args.rounds, args.st_texts, args.clients = "2,3", 1, 64, min(args.clients, 4)
        args.seconds, args.heads = 1.0, min(args.heads, 3)
    args.out = args.out or ("peers-smoke" if args.smoke else "peers")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    parts = set(args.only.split(","))
    res: dict = {"machine": machine(), "command": "python -m bench peers " + " ".join(argv or sys.argv[1:])}
    root = Path(tempfile.mkdtemp(prefix="taskswap-peers-"))
    bb = load(smoke_specs(root / "backbones")[0] if args.smoke else TEXT_SPEC)
    texts = review_snippets(max(args.st_texts, 512), bb.preprocessor.tokenizer)

    def checkpoint(part: str) -> None:
        print(f"[{part} done at {time.strftime('%H:%M:%S')}, load {os.getloadavg()[0]:.1f}]", flush=True)
        save_results(args.out, res, markdown(res))

    try:
        if "st" in parts:
            res["st"] = part_st(bb, texts[:args.st_texts], args.rounds, args.budget_s)
            checkpoint("st")
        if "models" in parts:
            res["models"] = part_models(bb, texts, root / "models",
                                        [int(x) for x in args.copies.split(",")], args.rounds, args.budget_s)
            checkpoint("models")
        if "infinity" in parts:
            if not Path(args.infinity).exists():
                res["infinity"] = {"skipped": f"{args.infinity} not found (see the venv recipe in bench/peers.py)"}
            else:
                res["infinity"] = part_infinity(bb, texts, root, args.infinity, args)
            checkpoint("infinity")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(markdown(res))
    return res

