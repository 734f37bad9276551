"""Task-affinity routing vs round-robin behind HAProxy, three real replicas, in one run.

    python -m bench affinity                      # budget 1 MB, 2.5x of it in LoRA tasks, 2 rounds of 30 s
    python -m bench affinity --phase-s 60 --rounds 3 --clients 8

Three ``bentoml serve`` replicas on 127.0.0.1 share one local store holding N PEFT LoRA
tasks on the tiny random text backbone (rank ``--rank`` on every attention and MLP linear),
N chosen so that the tasks' bytes are about ``--ratio`` (2.5) times one replica's
``TASKSWAP_ADAPTER_BUDGET_MB``. Two real haproxy processes stand in front of the same
replicas: the deployed config (deploy/haproxy/haproxy.cfg: consistent hashing on
X-Taskswap-Task with bounded load) and the same file with inference balanced round-robin.
Closed-loop clients send a Zipf-distributed stream of /predict requests (``--zipf`` exponent,
seeded) through one proxy per phase; the phases alternate (affinity first in even rounds,
round-robin first in odd ones), each after ``--warmup-s`` uncounted seconds on its proxy so
each phase starts from the residency its own routing produces.

Per phase: requests, failures, throughput, p50/p99 latency, LoRA loads on the replicas
(``taskswap_adapter_loads_total{kind="lora"}`` from each replica's /metrics, before and
after), residency hit rate (1 - loads / requests), loads per minute.

The backbone is tiny, so a forward costs little and a load (store read, safetensors, plan)
is a large share of a miss: the ratios say what thrashing costs relative to the model's
work here, not on MiniLM. The machine is shared; the load average is recorded at the start
and the end. Results: ``bench/results/affinity.{json,md}``.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the shared harness: server.py, haproxy.py, publish.py

import httpx  # noqa: E402
import torch  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from adapters.backbones.base import load_backbone  # noqa: E402
from adapters.backbones.tiny import tiny_backbone_spec  # noqa: E402
from adapters.store import open_store  # noqa: E402
from bench.common import machine, percentile, save_results  # noqa: E402
from support.factories import peft_lora_dir  # noqa: E402
from support.haproxy import Proxy, round_robin_template  # noqa: E402
from support.publish import publish  # noqa: E402
from support.server import ServerFactory, tiny_backbones_env  # noqa: E402

TEXTS = ["a wonderful film", "dull and far too long"]
TARGETS = ("query", "key", "value", "dense")


def first_lora(root: Path, bb, rank: int) -> tuple[Path, int]:
    """One PEFT LoRA save and its tensor bytes (what one adapter weighs in a replica's budget)."""
    first = peft_lora_dir(root / "lora-0000", str(bb.source_path), seed=0, r=rank, targets=TARGETS)
    weights = load_file(first / "adapter_model.safetensors")
    return first, sum(t.numel() * t.element_size() for t in weights.values())


def lora_copies(root: Path, first: Path, n: int) -> list[Path]:
    """``first`` and ``n - 1`` copies of it with their weights re-drawn (seeded)."""
    weights = load_file(first / "adapter_model.safetensors")
    folders = [first]
    for i in range(1, n):
        folder = root / f"lora-{i:04d}"
        shutil.copytree(first, folder)
        gen = torch.Generator().manual_seed(i)
        save_file({k: torch.randn(t.shape, generator=gen) * 0.05 for k, t in weights.items()},
                  folder / "adapter_model.safetensors")
        folders.append(folder)
    return folders


def lora_loads(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=30).text
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == "taskswap_adapter_loads_total" and s.labels.get("kind") == "lora")


def zipf_weights(n: int, s: float) -> list[float]:
    return [1 / (k + 1) ** s for k in range(n)]


def stream(url: str, tasks: list[str], weights: list[float], clients: int, seconds: float, seed: int) -> dict:
    """Closed-loop clients for ``seconds``: latencies of successes, failures."""
    lat, failures, stop = [], [], threading.Event()

    def client(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        with httpx.Client(base_url=url, timeout=120) as http:
            while not stop.is_set():
                task = rng.choices(tasks, weights)[0]
                t0 = time.perf_counter()
                try:
                    r = http.post("/predict", json={"task": task, "texts": TEXTS},
                                  headers={"X-Taskswap-Task": task})
                    ok = r.status_code == 200
                except httpx.HTTPError as e:
                    ok, r = False, e
                if ok:
                    lat.append(time.perf_counter() - t0)
                else:
                    failures.append(str(getattr(r, "status_code", r))[:200])

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join(timeout=180)
    return {"latencies": lat, "failures": failures, "seconds": time.monotonic() - t0}


def phase(mode: str, proxy: Proxy, replicas, tasks, weights, args, seed: int) -> dict:
    stream(proxy.url, tasks, weights, args.clients, args.warmup_s, seed)  # settle residency
    before = [lora_loads(s.url) for s in replicas]
    res = stream(proxy.url, tasks, weights, args.clients, args.phase_s, seed + 1)
    loads = sum(lora_loads(s.url) for s in replicas) - sum(before)
    n = len(res["latencies"])
    return {"mode": mode, "requests": n, "failures": len(res["failures"]), "failure_samples": res["failures"][:5],
            "seconds": res["seconds"], "throughput_rps": n / res["seconds"],
            "p50_ms": percentile(res["latencies"], 50) * 1000, "p99_ms": percentile(res["latencies"], 99) * 1000,
            "lora_loads": loads, "hit_rate": 1 - loads / n if n else float("nan"),
            "loads_per_min": loads / res["seconds"] * 60, "load_avg": os.getloadavg()}


def summary(rows: list[dict], mode: str) -> dict:
    mine = [r for r in rows if r["mode"] == mode]
    req = sum(r["requests"] for r in mine)
    secs = sum(r["seconds"] for r in mine)
    loads = sum(r["lora_loads"] for r in mine)
    return {"requests": req, "failures": sum(r["failures"] for r in mine), "throughput_rps": req / secs,
            "hit_rate": 1 - loads / req if req else float("nan"), "loads_per_min": loads / secs * 60,
            "p99_ms_worst_phase": max(r["p99_ms"] for r in mine)}


def markdown(res: dict) -> str:
    c = res["config"]
    lines = [f"# Task-affinity routing vs round-robin (HAProxy, 3 replicas)", "",
             f"`{res['command']}`", "",
             f"{c['tasks']} LoRA tasks x {c['adapter_bytes']} B = {c['tasks'] * c['adapter_bytes'] / 2**20:.2f} MiB "
             f"= {c['tasks'] * c['adapter_bytes'] / (c['budget_mb'] << 20):.2f}x one replica's budget "
             f"({c['budget_mb']} MB); Zipf s={c['zipf']}; {c['clients']} closed-loop clients; "
             f"{c['rounds']} rounds x {c['phase_s']} s per mode (after {c['warmup_s']} s warm-up each); "
             f"tiny text backbone, 1 torch thread per replica.", "",
             f"Machine: {res['machine']['cpus']} CPUs, shared with other jobs: load average "
             f"{res['load_avg_start'][0]:.1f} at the start, {res['load_avg_end'][0]:.1f} at the end (under load).", "",
             "| phase | mode | requests | failures | req/s | p50 ms | p99 ms | LoRA loads | hit rate | loads/min |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(res["phases"]):
        lines.append(f"| {i} | {r['mode']} | {r['requests']} | {r['failures']} | {r['throughput_rps']:.1f} | "
                     f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['lora_loads']:.0f} | {r['hit_rate']:.3f} | "
                     f"{r['loads_per_min']:.0f} |")
    a, b = res["summary"]["affinity"], res["summary"]["round_robin"]
    lines += ["", f"Affinity / round-robin: throughput {a['throughput_rps'] / b['throughput_rps']:.2f}x, "
              f"hit rate {a['hit_rate']:.3f} vs {b['hit_rate']:.3f}, loads/min {a['loads_per_min']:.0f} vs "
              f"{b['loads_per_min']:.0f}, worst-phase p99 {a['p99_ms_worst_phase']:.0f} vs "
              f"{b['p99_ms_worst_phase']:.0f} ms; failures {a['failures']} and {b['failures']}.", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench affinity", description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget-mb", type=int, default=1, help="TASKSWAP_ADAPTER_BUDGET_MB of each replica")
    ap.add_argument("--ratio", type=float, default=2.5, help="total LoRA bytes / one replica's budget")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent of the task popularity")
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--phase-s", type=float, default=30)
    ap.add_argument("--warmup-s", type=float, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default="affinity", help="results name under bench/results/")
    args = ap.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="taskswap-affinity-"))
    load_start = os.getloadavg()
    bb = load_backbone(tiny_backbone_spec("text", root / "tiny" / "text"))
    first, nbytes = first_lora(root / "src", bb, args.rank)
    n_tasks = math.ceil(args.ratio * (args.budget_mb << 20) / nbytes)
    folders = lora_copies(root / "src", first, n_tasks)
    store = open_store(str(root / "store"))
    names = [f"lora-{i:04d}" for i in range(n_tasks)]
    for name, folder in zip(names, folders):
        publish(store, folder, {bb.name: bb}, name=name, labels=["neg", "pos"])
    print(f"{n_tasks} LoRA tasks of {nbytes} B in the store ({n_tasks * nbytes / 2**20:.2f} MiB)", flush=True)

    env = {"TASKSWAP_ADAPTER_BUDGET_MB": str(args.budget_mb), "TASKSWAP_SYNC_INTERVAL_S": "0.5"}
    backbones = [b for b in tiny_backbones_env(root / "tiny") if b["name"] == "text"]
    with ServerFactory(root / "servers") as servers:
        (root / "servers").mkdir(exist_ok=True)
        replicas = [servers.start(store=root / "store", backbones=backbones, admin_token=None, wait=False,
                                  ready_timeout_s=600,
                                  # Its own BentoML home, so its own Prometheus multiprocess
                                  # folder: one shared by the three would sum their counters.
                                  env={**env, "TASKSWAP_REPLICA_ID": f"r{k}",
                                       "BENTOML_HOME": str(root / "servers" / f"bentoml-home-r{k}")})
                    for k in (1, 2, 3)]
        for srv in replicas:
            srv.wait_ready()
        addrs = {f"r{k}": f"127.0.0.1:{s.port}" for k, s in zip((1, 2, 3), replicas)}
        proxies = {"affinity": Proxy(root, addrs).start(),
                   "round_robin": Proxy(root, addrs, template=round_robin_template()).start()}
        try:
            weights = zipf_weights(n_tasks, args.zipf)
            rng = random.Random(7)
            order = names[:]
            rng.shuffle(order)  # popularity is not alphabetical
            rows = []
            for rnd in range(args.rounds):
                modes = ["affinity", "round_robin"] if rnd % 2 == 0 else ["round_robin", "affinity"]
                for mode in modes:
                    rows.append(phase(mode, proxies[mode], replicas, order, weights, args, seed=rnd * 10))
                    print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in rows[-1].items()
                           if k not in ("failure_samples", "load_avg")}, flush=True)
        finally:
            for p in proxies.values():
                p.stop()
    res = {"command": "python -m bench affinity " + " ".join(argv if argv is not None else sys.argv[2:]),
           "config": {"tasks": n_tasks, "adapter_bytes": nbytes, "budget_mb": args.budget_mb, "zipf": args.zipf,
                      "clients": args.clients, "phase_s": args.phase_s, "warmup_s": args.warmup_s,
                      "rounds": args.rounds, "rank": args.rank, "targets": list(TARGETS)},
           "machine": machine(), "load_avg_start": load_start, "load_avg_end": os.getloadavg(),
           "phases": rows, "summary": {m: summary(rows, m) for m in ("affinity", "round_robin")}}
    md = markdown(res)
    save_results(args.out, res, md)
    print(md)
    shutil.rmtree(root, ignore_errors=True)
