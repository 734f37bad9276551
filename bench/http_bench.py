"""Served over HTTP: Taskswap against a minimal raw-backbone BentoML service, and hot swap.

    python -m bench http --threads 1   # the full run (about 8 minutes on 2 busy CPU cores)
    python -m bench http --quick       # 3 rounds of 4 s phases (about 4 minutes)
    python -m bench http --embeddings  # served embeddings vs the raw backbone (about 2 minutes)
    python -m bench http --only registration  # only part 5: hot swap (about 4 minutes)
    python -m bench http --smoke       # every phase on a tiny random backbone, seconds long

Two real ``bentoml serve`` processes on 127.0.0.1, started here and stopped at the end:

- Taskswap (``service.service:Taskswap``) on the embedded MiniLM backbone, over a store
  prepared in-process with ``--heads`` head tasks and ``--loras`` PEFT LoRA r=8 adapters;
- the reference, ``bench.raw_service:RawBackbone``: the same backbone, the same batcher and
  settings (max batch rows, max wait, torch threads), no adapters.

Measured, the variants interleaved (rotating order, several rounds, median of the
per-round ratios, because the machine is shared):

3. requests/s and p50/p99 latency with ``--clients`` concurrent clients (asyncio, one
   request in flight each, ``--texts`` Rotten Tomatoes snippets per request): raw service,
   mixed head traffic (each request a random head task), mixed LoRA traffic;
5. register-to-first-served-prediction (POST /adapters with a zip, then POST /predict) for
   a head and for a LoRA, and p99 latency of mixed head traffic while a new head is
   registered every second, as a ratio to the same traffic without registrations (and the
   registrations' own latency under that load). The archives are built before each phase,
   so the bench process's own adapter writing is not counted against the server.

``--embeddings`` measures only the embeddings routes, interleaved with the raw service:
``POST /embed`` (JSON floats) and the OpenAI-compatible ``POST /v1/embeddings`` (base64
float32, what the ``openai`` package asks for), on a store with no tasks.

Results go to ``bench/results/http.{md,json}`` (``http-quick`` for ``--quick``,
``http-embeddings`` for ``--embeddings``, ``http-registration`` for ``--only registration``).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from adapters.backbones.base import BackboneSpec
from adapters.format.archive import make_archive
from adapters.registry import Registry
from adapters.store import open_store
from bench.common import (SMOKE_HELP, TEXT_SPEC, ServerProcess, load, machine, percentile, review_snippets, save_results,
                          smoke_specs, write_heads, write_loras)

REPO = Path(__file__).resolve().parents[1]


# ---- servers ---------------------------------------------------------------------------
class Served(ServerProcess):
    """One ``bentoml serve`` subprocess (see :class:`bench.common.ServerProcess`)."""

    def __init__(self, target: str, env: dict[str, str], root: Path, name: str, cwd: Path = REPO):
        super().__init__(root, name)
        full = {k: v for k, v in os.environ.items() if not k.startswith("TASKSWAP_")}
        full.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1",
                    BENTOML_HOME=str(root / "bentoml-home"), **env)
        self._spawn([sys.executable, "-m", "bentoml", "serve", target, "--host", "127.0.0.1",
                     "--port", str(self.port)], full, cwd)


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its live descendants (Linux
    /proc; ``bentoml serve`` runs its worker as a child process)."""
    stats = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                text = (d / "stat").read_text()
            except OSError:
                continue
            stats[int(d.name)] = text[text.rfind(")") + 2:].split()  # state ppid ... utime stime
    tree, frontier = {pid}, {pid}
    while frontier:
        frontier = {p for p, f in stats.items() if int(f[1]) in frontier} - tree
        tree |= frontier
    tick = os.sysconf("SC_CLK_TCK")
    return sum(int(stats[p][11]) + int(stats[p][12]) for p in tree if p in stats) / tick


def with_server_cpu(served: "Served", phase):
    """``phase()``'s result plus ``server_cpu_s``: what the server's processes used meanwhile."""
    def run() -> dict:
        before = tree_cpu_s(served.proc.pid)
        res = phase()
        res["server_cpu_s"] = tree_cpu_s(served.proc.pid) - before
        return res
    return run


# ---- load ------------------------------------------------------------------------------
async def _load(url: str, bodies, clients: int, seconds: float, max_requests: int,
                path: str = "/predict") -> dict:
    """``clients`` concurrent loops POSTing ``bodies()`` to ``url + path`` for ``seconds`` (bounded)."""
    lat: list[float] = []
    errors: dict[str, int] = {}
    stop_at = time.monotonic() + seconds
    sent = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        async def worker():
            nonlocal sent
            while time.monotonic() < stop_at and sent < max_requests:
                sent += 1
                body = bodies()
                t0 = time.perf_counter()
                try:
                    r = await client.post(path, json=body)
                    ok = r.status_code == 200
                    key = str(r.status_code)
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
            "p99_ms": 1000 * percentile(lat, 99), "ok": len(lat), "errors": errors, "seconds": wall,
            "_latencies": lat}  # dropped before saving (see _pooled_p99)


def run_load(url, bodies, clients, seconds, max_requests=100_000, path="/predict") -> dict:
    return asyncio.run(_load(url, bodies, clients, seconds, max_requests, path))


def body_maker(texts: list[str], per_request: int, tasks: list[str] | None, seed: int):
    rng = random.Random(seed)

    def make() -> dict:
        picked = rng.sample(texts, per_request)
        return {"texts": picked} if tasks is None else {"task": rng.choice(tasks), "texts": picked}
    return make


# ---- hot swap --------------------------------------------------------------------------
class Registrar:
    """Registers fresh head adapters over HTTP (admin token), one folder per call."""

    def __init__(self, url: str, token: str, bb, root: Path):
        self.url, self.bb, self.root = url, bb, root
        self.client = httpx.Client(base_url=url, timeout=120,
                                   headers={"Authorization": f"Bearer {token}"})
        self.count = 0
        self.ready: list[tuple[str, bytes]] = []
        self.refused = 0  # 429s (the server's registration queue was full)

    def prebuild(self, n: int) -> None:
        """Write ``n`` head archives now, outside any measured phase."""
        while len(self.ready) < n:
            self.count += 1
            name = f"swap-{self.count:04d}"
            folder = write_heads(self.root / name, self.bb, 1, prefix=name)[0]
            self.ready.append((folder.name, make_archive(folder, "zip")))

    def head_archive(self) -> tuple[str, bytes]:
        if not self.ready:
            self.prebuild(1)
        return self.ready.pop(0)

    def register(self, archive: bytes, **fields) -> bool:
        """True once registered; False after a 429 (queue full: the caller moves on)."""
        r = self.client.post("/adapters", files={"file": ("a.zip", archive)}, data=fields)
        if r.status_code == 429:
            self.refused += 1
            return False
        if r.status_code != 201:
            raise SystemExit(f"registration failed: {r.status_code} {r.text}")
        return True


def first_prediction(reg: Registrar, lora_archives: list[bytes], text: str, reps: int) -> dict:
    """Seconds from POST /adapters to the first 200 from /predict for the new task."""
    out = {"head": [], "lora": []}
    reg.prebuild(reps)
    for i in range(reps):
        name, archive = reg.head_archive()
        jobs = [("head", name, archive, {}),
                ("lora", f"swap-lora-{i:03d}", lora_archives[i % len(lora_archives)],
                 {"name": f"swap-lora-{i:03d}", "labels": "neg,pos"})]
        for kind, task, data, fields in jobs:
            t0 = time.perf_counter()
            if not reg.register(data, **fields):
                raise SystemExit("first prediction: registration refused with 429 on an idle server")
            r = reg.client.post("/predict", json={"task": task, "texts": [text]})
            if r.status_code != 200:
                raise SystemExit(f"first prediction failed: {r.status_code} {r.text}")
            out[kind].append(time.perf_counter() - t0)
    return {k: {"median_ms": 1000 * statistics.median(v), "max_ms": 1000 * max(v), "n": len(v)}
            for k, v in out.items()}


def idle_registration_cpu(served: "Served", reg: "Registrar", n: int = 20) -> dict:
    """Server CPU (all its processes) per head registration with no other traffic: ``n``
    registrations back to back, less the server's idle CPU over the same time, plus 1 s
    for the store watcher to follow them."""
    reg.prebuild(n)
    time.sleep(1.0)
    idle0 = tree_cpu_s(served.proc.pid)
    time.sleep(2.0)
    idle = (tree_cpu_s(served.proc.pid) - idle0) / 2.0
    before, t0 = tree_cpu_s(served.proc.pid), time.perf_counter()
    for _ in range(n):
        if not reg.register(reg.head_archive()[1]):
            raise SystemExit("idle registration refused with 429")
    took = time.perf_counter() - t0
    time.sleep(1.0)
    wall = time.perf_counter() - t0
    cpu = tree_cpu_s(served.proc.pid) - before - idle * wall
    return {"cpu_ms_per_registration": 1000 * cpu / n, "wall_ms_per_registration": 1000 * took / n,
            "registrations": n, "requests_per_s": 0.0, "p50_ms": 0.0, "p99_ms": 0.0, "errors": {}}


def load_while_swapping(url: str, reg: Registrar, bodies, clients: int, seconds: float) -> dict:
    """Load for ``seconds`` while another thread registers a new head every second."""
    stop = threading.Event()
    done: list[float] = []
    reg.prebuild(int(seconds) + 5)
    refused = reg.refused

    def swapper():
        while not stop.is_set():
            _, archive = reg.head_archive()
            t0 = time.perf_counter()
            if reg.register(archive):
                done.append(time.perf_counter() - t0)
            stop.wait(max(0.0, 1.0 - (time.perf_counter() - t0)))

    t = threading.Thread(target=swapper, daemon=True)
    t.start()
    try:
        res = run_load(url, bodies, clients, seconds)
    finally:
        stop.set()
        t.join(timeout=120)
    res["registrations"] = len(done)
    res["registration_ms"] = [round(1000 * d, 1) for d in done]
    res["registrations_refused"] = reg.refused - refused
    return res


# ---- the run ---------------------------------------------------------------------------
def prepare_store(root: Path, n_heads: int, n_loras: int, spec: BackboneSpec = TEXT_SPEC):
    """A local store with ``n_heads`` heads and ``n_loras`` LoRAs on ``spec``; returns (backbone,
    lora dirs)."""
    bb = load(spec)
    reg = Registry(open_store(str(root / "store")), {bb.name: bb})
    for p in write_heads(root / "heads", bb, n_heads):
        reg.register(p)
    loras = write_loras(root / "loras", bb, n_loras)
    for i, p in enumerate(loras):
        reg.register(p, name=f"lora-{i:03d}", labels=["neg", "pos"])
    return bb, loras


def _pooled_p99(rounds: list[dict]) -> float:
    """p99 (ms) over every request of every round of one variant: steadier than a median of
    per-round p99s, each of which rests on the few slowest requests of one phase."""
    return 1000 * percentile([x for r in rounds for x in r["_latencies"]], 99)


def strip_latencies(obj) -> None:
    """Drop every load result's raw ``_latencies`` from ``obj`` (before saving it as JSON)."""
    if isinstance(obj, dict):
        obj.pop("_latencies", None)
        for v in obj.values():
            strip_latencies(v)
    elif isinstance(obj, list):
        for v in obj:
            strip_latencies(v)


def swap_summary(rounds: dict[str, list[dict]]) -> dict:
    """p99 and throughput while registering, as ratios to steady traffic, from one interleaved run."""
    st, sw = rounds["steady"], rounds["registering 1/s"]
    pooled = {k: _pooled_p99(v) for k, v in rounds.items()}
    # The server's CPU per registration: what the registering phase used beyond its requests
    # at the steady phase's CPU per request (same round), over its registrations.
    per_reg = [1000 * (b["server_cpu_s"] - b["ok"] * a["server_cpu_s"] / max(a["ok"], 1)) / b["registrations"]
               for a, b in zip(st, sw) if b["registrations"] and "server_cpu_s" in a]
    return {"p99_ratio": statistics.median(b["p99_ms"] / a["p99_ms"] for a, b in zip(st, sw)),
            "rps_ratio": statistics.median(b["requests_per_s"] / a["requests_per_s"] for a, b in zip(st, sw)),
            "p99_steady_ms": statistics.median(r["p99_ms"] for r in st),
            "p99_swapping_ms": statistics.median(r["p99_ms"] for r in sw),
            "p99_pooled_steady_ms": pooled["steady"], "p99_pooled_swapping_ms": pooled["registering 1/s"],
            "p99_pooled_ratio": pooled["registering 1/s"] / pooled["steady"],
            "registrations": sum(r["registrations"] for r in sw),
            "server_cpu_ms_per_request": statistics.median(1000 * r["server_cpu_s"] / max(r["ok"], 1) for r in st),
            "server_cpu_ms_per_registration": statistics.median(per_reg) if per_reg else None,
            "refused": sum(r["registrations_refused"] for r in sw), "rounds": rounds}


def interleaved(variants: dict, rounds: int) -> dict[str, list[dict]]:
    """Each variant once per round, the order rotating; per-variant list of round results."""
    names = list(variants)
    out: dict[str, list[dict]] = {k: [] for k in names}
    for rnd in range(rounds):
        for name in names[rnd % len(names):] + names[: rnd % len(names)]:
            out[name].append(variants[name]())
            r = out[name][-1]
            if "cpu_ms_per_registration" in r:
                print(f"  round {rnd + 1} {name}: {r['cpu_ms_per_registration']:.1f} ms server CPU per "
                      f"registration", flush=True)
                continue
            print(f"  round {rnd + 1} {name}: {r['requests_per_s']:.1f} req/s, p50 {r['p50_ms']:.0f} ms, "
                  f"p99 {r['p99_ms']:.0f} ms, errors {r['errors']}", flush=True)
    return out


def summary(per_round: dict[str, list[dict]], ref: str) -> dict:
    rows = {}
    for k, rs in per_round.items():
        rows[k] = {"requests_per_s": statistics.median(r["requests_per_s"] for r in rs),
                   "p50_ms": statistics.median(r["p50_ms"] for r in rs),
                   "p99_ms": statistics.median(r["p99_ms"] for r in rs),
                   "ratio": statistics.median(a["requests_per_s"] / b["requests_per_s"]
                                              for a, b in zip(rs, per_round[ref])),
                   "errors": sum(sum(r["errors"].values()) for r in rs)}
    return rows


def embeddings_phase(res: dict, raw, taskswap, texts: list[str], backbone: str, args) -> None:
    """Served embeddings (/embed, /v1/embeddings) against the raw backbone service, interleaved."""
    def bodies(seed: int, shape):
        rng = random.Random(seed)
        return lambda: shape(rng.sample(texts, args.texts))

    variants = {
        "raw backbone service": lambda: run_load(raw.url, bodies(1, lambda t: {"texts": t}),
                                                 args.clients, args.seconds),
        "Taskswap POST /embed": lambda: run_load(taskswap.url, bodies(2, lambda t: {"texts": t}),
                                                 args.clients, args.seconds, path="/embed"),
        "Taskswap POST /v1/embeddings (base64)": lambda: run_load(
            taskswap.url, bodies(3, lambda t: {"model": backbone, "input": t, "encoding_format": "base64"}),
            args.clients, args.seconds, path="/v1/embeddings"),
    }
    per_round = interleaved(variants, args.rounds)
    res["throughput"] = summary(per_round, "raw backbone service")
    res["throughput_rounds"] = per_round


def embeddings_markdown(res: dict) -> str:
    a = res["args"]
    lines = ["# HTTP bench: served embeddings", "",
             f"Machine: {res['machine']['cpus']} CPUs, torch {res['machine']['torch']}, CUDA: "
             f"{res['machine']['cuda']}; load average at start {res['machine']['load_avg'][0]:.1f}. "
             f"Command: `python -m bench http --embeddings` ({a['clients']} concurrent clients, "
             f"{a['texts']} texts per request, {a['seconds']:.0f} s per phase, {a['rounds']} "
             f"interleaved rounds, medians; 1 worker, max_batch_rows {a['max_batch_rows']}, "
             f"max_wait_ms {a['max_wait_ms']}, torch threads {a['threads']}).", "",
             "The raw service answers two numbers per text; the embeddings routes answer the whole "
             "384-d vector (JSON floats for /embed, base64 float32 for /v1/embeddings), so the "
             "ratio includes that larger response.", "",
             "| traffic | requests/s | texts/s | × raw service | p50 ms | p99 ms | errors |",
             "|---|---|---|---|---|---|---|"]
    for k, v in res["throughput"].items():
        lines.append(f"| {k} | {v['requests_per_s']:.1f} | {v['requests_per_s'] * a['texts']:.1f} | "
                     f"{v['ratio']:.3f} | {v['p50_ms']:.0f} | {v['p99_ms']:.0f} | {v['errors']} |")
    return "\n".join(lines) + "\n"


def _finish(res: dict, taskswap: Served, render, name: str) -> dict:
    """Server-log errors, the markdown, printed and saved under ``bench/results/<name>``."""
    errors = [line for line in taskswap.log.read_text(errors="replace").splitlines()
              if "Traceback" in line or "status=500" in line]
    res["server_errors"] = errors[:20]
    strip_latencies(res)
    md = render(res)
    if errors:
        md += "\nServer log errors:\n\n" + "\n".join(f"    {e}" for e in errors[:20]) + "\n"
    print(md)
    save_results(name, res, md)
    return res


def markdown(res: dict) -> str:
    a = res["args"]
    what = "registration only" if a.get("only") == "registration" else "quick" if a["quick"] else "full"
    lines = [f"# HTTP bench ({what} run)", "",
             f"Machine: {res['machine']['cpus']} CPUs, torch {res['machine']['torch']}, CUDA: "
             f"{res['machine']['cuda']}; load average at start {res['machine']['load_avg'][0]:.1f}. "
             f"{a['clients']} concurrent clients, {a['texts']} texts per request, {a['seconds']:.0f} s "
             f"per phase, {a['rounds']} interleaved rounds (medians); servers: 1 worker, "
             f"max_batch_rows {a['max_batch_rows']}, max_wait_ms {a['max_wait_ms']}, "
             f"torch threads {a['threads']}.", "",
             "| traffic | requests/s | × raw service | p50 ms | p99 ms | errors |",
             "|---|---|---|---|---|---|"]
    for k, v in res.get("throughput", {}).items():
        lines.append(f"| {k} | {v['requests_per_s']:.1f} | {v['ratio']:.3f} | {v['p50_ms']:.0f} | "
                     f"{v['p99_ms']:.0f} | {v['errors']} |")
    if "throughput" not in res:  # --only registration: no throughput table
        lines = lines[:-2]
    lines += ["", "## hot swap", "",
              "| register → first served prediction | median ms | max ms | n |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['median_ms']:.0f} | {v['max_ms']:.0f} | {v['n']} |"
              for k, v in res["first_prediction"].items()]
    lines += swap_markdown(res["swap"])
    lines += idle_markdown(res.get("idle"))
    if "swap_compare" in res:
        lines += ["", f"### The same, interleaved, on `--compare-checkout {a['compare_checkout']}`", "",
                  "| register → first served prediction | median ms | max ms | n |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['median_ms']:.0f} | {v['max_ms']:.0f} | {v['n']} |"
                  for k, v in res["first_prediction_compare"].items()]
        lines += swap_markdown(res["swap_compare"])
        lines += idle_markdown(res.get("idle_compare"))
    lines += ["", f"Load average at the end: {res.get('load_avg_end', [0])[0]:.1f}.", ""]
    return "\n".join(lines) + "\n"


def idle_markdown(idle: dict | None) -> list[str]:
    if not idle:
        return []
    per = ", ".join(f"{r['cpu_ms_per_registration']:.1f}" for r in idle["rounds"])
    n = idle["rounds"][0].get("registrations", 20)
    return ["", f"On the idle server (no other traffic; {n} head registrations back to back, "
                f"{len(idle['rounds'])} interleaved rounds): **{idle['cpu_ms_per_registration']:.1f} ms of server CPU per "
                f"registration** ({per}), {idle['wall_ms_per_registration']:.0f} ms each end to end."]


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0f} ms"


def swap_markdown(s: dict) -> list[str]:
    lines: list[str] = []
    lines += ["", f"p99 of mixed head traffic while a head is registered every second: "
              f"**{s['p99_ratio']:.2f} ×** steady (median of per-round ratios; p99 "
              f"{s['p99_swapping_ms']:.0f} ms vs {s['p99_steady_ms']:.0f} ms; "
              f"{s['registrations']} registrations in all); throughput ratio {s['rps_ratio']:.2f}. "
              f"Pooled over all rounds' requests: p99 {s['p99_pooled_swapping_ms']:.0f} vs "
              f"{s['p99_pooled_steady_ms']:.0f} ms, **{s['p99_pooled_ratio']:.2f} ×**.", "",
              f"Server CPU (all its processes, /proc): {s['server_cpu_ms_per_request']:.1f} ms per "
              f"steady request; **{_ms(s['server_cpu_ms_per_registration'])} per registration** "
              "(the registering phase's CPU beyond its requests at the same round's steady CPU per "
              "request, over its registrations; median of rounds; ill-conditioned under load: any "
              "change in CPU per request lands here too — the idle figure below is the clean one).", "",
              "| round | steady p99 ms | registering p99 ms | p99 ratio | req/s ratio | "
              "registrations (refused) | registration median / max ms |",
              "|---|---|---|---|---|---|---|"]
    for i, (st, sw) in enumerate(zip(s["rounds"]["steady"], s["rounds"]["registering 1/s"])):
        took = sw.get("registration_ms") or [0.0]
        lines.append(f"| {i + 1} | {st['p99_ms']:.0f} | {sw['p99_ms']:.0f} | {sw['p99_ms'] / st['p99_ms']:.2f} | "
                     f"{sw['requests_per_s'] / st['requests_per_s']:.2f} | {sw['registrations']} "
                     f"({sw.get('registrations_refused', 0)}) | {statistics.median(took):.0f} / {max(took):.0f} |")
    return lines


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 rounds of 4 s phases (~4 minutes)")
    ap.add_argument("--embeddings", action="store_true", help=(
        "only served embeddings (/embed, /v1/embeddings) vs the raw backbone, 3 rounds of 4 s"))
    ap.add_argument("--only", choices=["all", "registration"], default="all", help=(
        "registration: only part 5 (register -> first prediction, p99 while registering), "
        "with --loras 4 unless given"))
    ap.add_argument("--compare-checkout", default=None, metavar="PATH", help=(
        "a checkout of another commit (e.g. `git worktree add /tmp/old <ref>`): its service runs "
        "as a second Taskswap server on a copy of the store, and the hot-swap phase is "
        "interleaved on both"))
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=None, help="length of one load phase")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--texts", type=int, default=1, help="texts per request")
    ap.add_argument("--heads", type=int, default=200)
    ap.add_argument("--loras", type=int, default=None, help="LoRA adapters (default 64; 4 with --only registration)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads in each server")
    ap.add_argument("--max-batch-rows", type=int, default=64)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--keep", action="store_true", help="keep the temporary store and server logs")
    ap.add_argument("--device", default="auto", help="torch device of the servers' backbones")
    ap.add_argument("--half", action="store_true", help="float16 backbones in the servers (CUDA only)")
    ap.add_argument("--out", default=None, help="results name under bench/results (default http / http-quick)")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP + "; 3 heads, 2 LoRAs, 4 clients, 1 s phases")
    args = ap.parse_args(argv)
    short = args.quick or args.embeddings
    if args.smoke:
        args.heads, args.loras, args.clients = min(args.heads, 3), args.loras or 2, min(args.clients, 4)
    args.rounds = args.rounds or (1 if args.smoke else 3 if short else 5)
    args.seconds = args.seconds or (1.0 if args.smoke else 4.0 if short else 10.0)
    if args.loras is None:
        args.loras = 4 if args.only == "registration" else 64
    if args.embeddings:
        args.heads, args.loras = 0, 0
    reps = 2 if args.smoke else 5 if args.quick else 10
    root = Path(tempfile.mkdtemp(prefix="taskswap-http-bench-"))
    spec = smoke_specs(root / "backbones")[0] if args.smoke else TEXT_SPEC
    res: dict = {"args": vars(args), "machine": machine()}
    t0 = time.perf_counter()
    bb, lora_dirs = prepare_store(root, args.heads, args.loras, spec)
    print(f"store ready in {time.perf_counter() - t0:.0f}s ({root})", flush=True)
    texts = review_snippets(512, bb.preprocessor.tokenizer)
    token = secrets.token_hex(16)
    common = {"TASKSWAP_TORCH_THREADS": str(args.threads), "TASKSWAP_MAX_BATCH_ROWS": str(args.max_batch_rows),
              "TASKSWAP_MAX_WAIT_MS": str(args.max_wait_ms)}
    device = {"device": args.device, "half": args.half}
    taskswap = Served("service.service:Taskswap", {
        **common, "TASKSWAP_STORE": str(root / "store"), "TASKSWAP_ADMIN_TOKEN": token,
        "TASKSWAP_BACKBONES": json.dumps([{"name": bb.name, "source": spec.source,
                                           "max_length": spec.max_length}]),
        "TASKSWAP_METRICS_MAX_TASKS": "50", "TASKSWAP_DEVICE": args.device,
        "TASKSWAP_HALF": str(args.half).lower()}, root, "taskswap")
    compare = None
    if args.compare_checkout:  # the same store, copied: its registrations must not reach ours
        shutil.copytree(root / "store", root / "store-compare", symlinks=True)
        compare = Served("service.service:Taskswap", {
            **common, "TASKSWAP_STORE": str(root / "store-compare"), "TASKSWAP_ADMIN_TOKEN": token,
            "TASKSWAP_BACKBONES": json.dumps([{"name": bb.name, "source": spec.source,
                                               "max_length": spec.max_length}]),
            "TASKSWAP_METRICS_MAX_TASKS": "50", "TASKSWAP_DEVICE": args.device,
            "TASKSWAP_HALF": str(args.half).lower()}, root, "compare", cwd=Path(args.compare_checkout))
    raw = None if args.only == "registration" else Served("bench.raw_service:RawBackbone", {
        **common, "RAW_BACKBONE": json.dumps({"name": bb.name, "source": spec.source,
                                              "max_length": spec.max_length, **device})}, root, "raw")
    try:
        taskswap.wait_ready()
        for other in (raw, compare):
            if other is not None:
                other.wait_ready()
        heads = [f"head-{i:04d}" for i in range(args.heads)]
        loras = [f"lora-{i:03d}" for i in range(args.loras)]
        # Warm-up: every task once (lazy loads happen here, not in the measured phases).
        for srv in (taskswap, compare):
            if srv is None:
                continue
            with httpx.Client(base_url=srv.url, timeout=120) as c:
                for t in heads + loras:
                    r = c.post("/predict", json={"task": t, "texts": texts[:1]})
                    if r.status_code != 200:
                        raise SystemExit(f"warm-up {t}: {r.status_code} {r.text}")
        if raw is not None:
            run_load(raw.url, body_maker(texts, args.texts, None, 0), args.clients, 2)
        print(f"servers ready and warm in {time.perf_counter() - t0:.0f}s", flush=True)
        if args.embeddings:
            embeddings_phase(res, raw, taskswap, texts, bb.name, args)
            return _finish(res, taskswap, embeddings_markdown,
                           args.out or ("http-embeddings-smoke" if args.smoke else "http-embeddings"))
        mk = lambda tasks, seed: body_maker(texts, args.texts, tasks, seed)  # noqa: E731
        variants = {
            "raw backbone service": lambda: run_load(raw.url, mk(None, 1), args.clients, args.seconds),
            f"Taskswap, mixed heads ({args.heads} tasks)":
                lambda: run_load(taskswap.url, mk(heads, 2), args.clients, args.seconds),
            f"Taskswap, mixed LoRA ({args.loras} adapters)":
                lambda: run_load(taskswap.url, mk(loras, 3), args.clients, args.seconds),
        }
        if args.only == "all":
            per_round = interleaved(variants, args.rounds)
            res["throughput"] = summary(per_round, "raw backbone service")
            res["throughput_rounds"] = per_round

        servers = {"": taskswap, **({" (compare)": compare} if compare is not None else {})}
        regs = {k: Registrar(srv.url, token, bb, root / f"swap{i}") for i, (k, srv) in enumerate(servers.items())}
        lora_archives = [make_archive(d, "zip") for d in lora_dirs[:4]]
        res["first_prediction"] = first_prediction(regs[""], lora_archives, texts[0], reps)
        if compare is not None:
            res["first_prediction_compare"] = first_prediction(regs[" (compare)"], lora_archives, texts[0], reps)
        swap_variants = {}
        for k, srv in servers.items():
            swap_variants[f"steady{k}"] = with_server_cpu(srv, functools.partial(
                run_load, srv.url, mk(heads, 4), args.clients, args.seconds))
            swap_variants[f"registering 1/s{k}"] = with_server_cpu(srv, functools.partial(
                load_while_swapping, srv.url, regs[k], mk(heads, 5), args.clients, args.seconds))
        swap_rounds = interleaved(swap_variants, args.rounds)
        idle_n = 3 if args.smoke else 20
        idle_rounds = interleaved({f"idle registrations{k}": functools.partial(idle_registration_cpu, srv, regs[k], idle_n)
                                   for k, srv in servers.items()}, 1 if args.smoke else 3)
        for k in servers:
            res["idle" + ("_compare" if k else "")] = {
                "cpu_ms_per_registration": statistics.median(
                    r["cpu_ms_per_registration"] for r in idle_rounds[f"idle registrations{k}"]),
                "wall_ms_per_registration": statistics.median(
                    r["wall_ms_per_registration"] for r in idle_rounds[f"idle registrations{k}"]),
                "rounds": idle_rounds[f"idle registrations{k}"]}
        for k in servers:
            res["swap" + ("_compare" if k else "")] = swap_summary(
                {"steady": swap_rounds[f"steady{k}"], "registering 1/s": swap_rounds[f"registering 1/s{k}"]})
        res["load_avg_end"] = os.getloadavg()
        errors = [line for line in taskswap.log.read_text(errors="replace").splitlines()
                  if "Traceback" in line or "status=500" in line]
        res["server_errors"] = errors[:20]
    finally:
        taskswap.stop()
        for other in (raw, compare):
            if other is not None:
                other.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    strip_latencies(res)
    md = markdown(res)
    if res.get("server_errors"):
        md += "\nServer log errors:\n\n" + "\n".join(f"    {e}" for e in res["server_errors"]) + "\n"
    print(md)
    default = "http-registration" if args.only == "registration" else "http-quick" if args.quick else "http"
    save_results(args.out or default + ("-smoke" if args.smoke else ""), res, md)
    return res

