"""What rollouts cost: a shadow candidate's price in throughput, serving latency while a fit
job runs, and how long a fit over HTTP takes.

1. **Shadow cost** (in-process, the runtime on the real MiniLM-L6): batches of 64 review
   snippets for one head task, interleaved round-robin with the same batches while the
   task has a head candidate in shadow (scored on the same pooled features), and a LoRA
   candidate in shadow (its own trunk rows). Rows/s ratios to "no shadow".
2. **p99 while fitting** (HTTP, the real server on MiniLM-L6, 2 torch threads): closed-loop
   clients send single-text predictions; windows during which a 500-example fit job runs
   (its child process niced, 1 thread) alternate with steady windows of the same length.
   p99 ratio fit / steady, median over rounds. Target: at most 1.25.
3. **Fit time** of jobs with 50 and 500 labelled Rotten Tomatoes snippets: job wall time
   (202 to ``succeeded``: child start, backbone load, features, fit, register) and the
   fit phase alone as the trainer reports it.

    python -m bench rollout             # ~3 min on 2 CPU cores
    python -m bench rollout --quick     # fewer rounds
    python -m bench rollout --smoke     # one round on a tiny random backbone

Writes bench/results/rollout.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import httpx  # noqa: E402
import torch  # noqa: E402

from adapters.backbones.base import BackboneSpec  # noqa: E402
from adapters.registry import Registry  # noqa: E402
from adapters.rollout import RolloutPolicy  # noqa: E402
from adapters.runtime import Runtime  # noqa: E402
from adapters.store import open_store  # noqa: E402
from bench.common import (SMOKE_HELP, TEXT_SPEC, interleave, load, machine, percentile,  # noqa: E402
                          rotten_tomatoes_rows, save_results, smoke_specs, write_heads, write_loras)
from bench.http_bench import Served  # noqa: E402


def labelled_snippets(n: int, skip: int = 0) -> tuple[list[str], list[str]]:
    """``n`` Rotten Tomatoes snippets with their fresh/rotten label, balanced, in file order."""
    per = {"fresh": [], "rotten": []}
    for i, row in enumerate(rotten_tomatoes_rows()):
        c, text = row["category"], row["text"].strip()
        if i < skip or c not in per or not text or len(text) > 300 or len(per[c]) >= n // 2:
            continue
        per[c].append(text)
        if all(len(v) >= n // 2 for v in per.values()):
            break
    texts = per["fresh"] + per["rotten"]
    return texts, ["fresh"] * len(per["fresh"]) + ["rotten"] * len(per["rotten"])


# ---- 1. shadow cost ----------------------------------------------------------------------
class _Book:
    def __init__(self, policy=None):
        self.p = policy

    def policy(self, task):
        return self.p


def shadow_cost(rounds: int, spec: BackboneSpec = TEXT_SPEC) -> dict:
    torch.set_num_threads(2)
    bb = load(spec)
    texts, _ = labelled_snippets(64, skip=5000)
    with tempfile.TemporaryDirectory() as tmp:
        reg = Registry(open_store(tmp + "/store"), {"text": bb})
        heads = write_heads(Path(tmp) / "heads", bb, 2)
        v1 = reg.register(heads[0], name="t").version
        v2 = reg.register(heads[1], name="t", activate=False).version
        lora = write_loras(Path(tmp) / "loras", bb, 2)
        l1 = reg.register(lora[0], name="l", labels=["neg", "pos"]).version
        l2 = reg.register(lora[1], name="l", labels=["neg", "pos"], activate=False).version
        rt = Runtime(reg)
        shadow_head = _Book(RolloutPolicy(task="t", candidate=v2, mode="shadow", updated_at="-"))
        shadow_lora = _Book(RolloutPolicy(task="l", candidate=l2, mode="shadow", updated_at="-"))
        assert rt.run([rt.prepare(["t"], texts, "text", rollout=shadow_head)])[0][0].shadow is not None
        variants = {
            "head, no shadow": lambda: rt.run([rt.prepare(["t"], texts, "text")]),
            "head + head candidate in shadow": lambda: rt.run([rt.prepare(["t"], texts, "text", rollout=shadow_head)]),
            "lora, no shadow": lambda: rt.run([rt.prepare(["l"], texts, "text")]),
            "lora + lora candidate in shadow": lambda: rt.run([rt.prepare(["l"], texts, "text", rollout=shadow_lora)]),
        }
        t = interleave(variants, rows_per_call=len(texts), rounds=rounds, calls=2)
        del v1, l1
    return {"rows_per_s": {k: statistics.median(v) for k, v in t.per_round.items()},
            "head_shadow_ratio": t.ratio("head + head candidate in shadow", "head, no shadow"),
            "lora_shadow_ratio": t.ratio("lora + lora candidate in shadow", "lora, no shadow"),
            "timing": t.as_dict()}


# ---- 2 + 3. HTTP: latency while fitting, fit times -------------------------------------
class Load:
    """Closed-loop clients in threads; every answered request is kept as (start, latency)."""

    def __init__(self, url: str, texts: list[str], clients: int):
        self.samples: list[tuple[float, float]] = []
        self.errors = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(url, texts, i), daemon=True)
                         for i in range(clients)]

    def _run(self, url, texts, i):
        with httpx.Client(base_url=url, timeout=60) as c:
            k = i
            while not self._stop.is_set():
                k += 1
                t0 = time.monotonic()
                r = c.post("/predict", json={"task": "sentiment", "texts": [texts[k % len(texts)]]})
                if r.status_code == 200:
                    self.samples.append((t0, time.monotonic() - t0))
                else:
                    self.errors += 1

    def start(self):
        [t.start() for t in self._threads]
        return self

    def stop(self):
        self._stop.set()
        [t.join() for t in self._threads]

    def p99(self, start: float, end: float) -> tuple[float, int]:
        lat = [x for t0, x in self.samples if start <= t0 and t0 + x <= end]
        return 1000 * percentile(lat, 99), len(lat)


def run_fit(c: httpx.Client, token: str, task: str, texts, labels, promote="active") -> dict:
    t0 = time.monotonic()
    r = c.post(f"/adapters/{task}/fit", headers={"Authorization": f"Bearer {token}"},
               json={"texts": texts, "labels": labels, "promote": promote})
    r.raise_for_status()
    job = r.json()
    while job["status"] not in ("succeeded", "failed"):
        time.sleep(0.2)
        job = c.get(f"/jobs/{job['id']}", headers={"Authorization": f"Bearer {token}"}).json()
    if job["status"] != "succeeded":
        raise SystemExit(f"fit job failed: {job['error']}")
    return {"wall_s": time.monotonic() - t0, "fit_s": job["result"]["fit_seconds"],
            "val_accuracy": job["result"]["metrics"].get("val_accuracy"), "t0": t0, "t1": time.monotonic()}


def http_part(rounds: int, clients: int, deadline_s: float, spec: BackboneSpec = TEXT_SPEC) -> dict:
    root = Path(tempfile.mkdtemp(prefix="rollout-bench-"))
    token = secrets.token_hex(16)
    env = {"TASKSWAP_STORE": str(root / "store"), "TASKSWAP_ADMIN_TOKEN": token,
           "TASKSWAP_BACKBONES": json.dumps([{"name": "text", "source": spec.source,
                                              "max_length": spec.max_length}]),
           "TASKSWAP_TORCH_THREADS": "2", "TASKSWAP_FIT_THREADS": "1"}
    srv = Served("service.service:Taskswap", env, root, "server")
    out: dict = {}
    try:
        srv.wait_ready()
        c = httpx.Client(base_url=srv.url, timeout=120)
        t50, y50 = labelled_snippets(50)
        t500, y500 = labelled_snippets(500, skip=200)
        probe = labelled_snippets(64, skip=9000)[0]
        out["fit_50_idle"] = run_fit(c, token, "sentiment", t50, y50)  # also creates the task
        out["fit_500_idle"] = run_fit(c, token, "fit500", t500, y500)
        load_ = Load(srv.url, probe, clients).start()
        time.sleep(3)  # warm-up, not measured
        windows, span = [], min(out["fit_500_idle"]["wall_s"], 60.0)
        start = time.monotonic()
        for rnd in range(rounds):
            # a steady window as long as a fit takes, before the fit in even rounds and
            # after it in odd ones, so slow drifts of the machine's load cancel out
            def steady_window():
                s0 = time.monotonic()
                time.sleep(span)
                return load_.p99(s0, time.monotonic())
            steady = steady_window() if rnd % 2 == 0 else None
            fit = run_fit(c, token, "fit500", t500, y500)
            during = load_.p99(fit["t0"], fit["t1"])
            span = min(fit["wall_s"], 60.0)
            if steady is None:
                steady = steady_window()
            windows.append({"steady_p99_ms": steady[0], "steady_n": steady[1],
                            "fit_p99_ms": during[0], "fit_n": during[1], "fit_wall_s": fit["wall_s"],
                            "ratio": during[0] / steady[0], "load_avg_1m": os.getloadavg()[0]})
            print(f"  round {rnd + 1}: steady p99 {steady[0]:.1f} ms (n={steady[1]}), during fit "
                  f"{during[0]:.1f} ms (n={during[1]}), ratio {during[0] / steady[0]:.2f}, "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
            if time.monotonic() - start > deadline_s:
                break
        load_.stop()
        out.update(windows=windows, errors=load_.errors, clients=clients,
                   p99_ratio_median=statistics.median(w["ratio"] for w in windows))
    finally:
        srv.stop()
        shutil.rmtree(root, ignore_errors=True)
    return out


def markdown(res: dict) -> str:
    s, h = res["shadow"], res["http"]
    lines = ["# Rollout bench", "", f"Machine: {res['machine']}", f"Command: `{res['command']}`", "",
             "## Shadow cost (in-process runtime, MiniLM-L6, batches of 64 snippets, interleaved)", "",
             "| variant | rows/s (median) |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in s["rows_per_s"].items()]
    lines += ["", f"- head candidate in shadow: **{s['head_shadow_ratio']:.3f}x** the throughput without",
              f"- LoRA candidate in shadow: **{s['lora_shadow_ratio']:.3f}x** (its own trunk rows)", "",
              "## Serving p99 while a 500-example fit job runs (HTTP, closed loop, 1 text per request)", "",
              "| round | steady p99 ms | during fit p99 ms | ratio | fit job s |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {i + 1} | {w['steady_p99_ms']:.1f} | {w['fit_p99_ms']:.1f} | {w['ratio']:.2f} | "
              f"{w['fit_wall_s']:.1f} |" for i, w in enumerate(h["windows"])]
    lines += ["", f"- median ratio **{h['p99_ratio_median']:.2f}** (target <= 1.25); {h['clients']} closed-loop "
              f"clients; errors: {h['errors']}; 1-minute load average of the machine per round: "
              + ", ".join(f"{w['load_avg_1m']:.1f}" for w in h["windows"]), "",
              "## Fit time over HTTP (idle server)", "", "| examples | job wall s | fit phase s | val accuracy |",
              "|---:|---:|---:|---:|"]
    for n in (50, 500):
        f = h[f"fit_{n}_idle"]
        lines.append(f"| {n} | {f['wall_s']:.1f} | {f['fit_s']:.1f} | {f['val_accuracy']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--max-seconds", type=float, default=240, help="stop adding HTTP rounds after this")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP + "; 1 round")
    args = ap.parse_args(argv)
    rounds = 1 if args.smoke else 3 if args.quick else 5
    with tempfile.TemporaryDirectory() as tmp:
        spec = smoke_specs(Path(tmp))[0] if args.smoke else TEXT_SPEC
        print("shadow cost (in-process)...", flush=True)
        shadow = shadow_cost(rounds, spec)
        print("HTTP: fit jobs and p99 while fitting...", flush=True)
        http = http_part(rounds=1 if args.smoke else 2 if args.quick else 4, clients=args.clients,
                         deadline_s=args.max_seconds, spec=spec)
    res = {"machine": machine(), "command": " ".join(["python -m bench rollout", *(argv or sys.argv[1:])]),
           "shadow": shadow, "http": http}
    for f in ("fit_50_idle", "fit_500_idle"):
        http[f].pop("t0", None), http[f].pop("t1", None)
    md = markdown(res)
    save_results("rollout-smoke" if args.smoke else "rollout", res, md)
    print(md)
    return res

