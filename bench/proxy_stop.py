"""Replicas stopped one after another behind HAProxy under load: does any client see a failure?

    python -m bench proxy-stop                          # 4 replicas, 3 stops per run, 2 runs per variant
    python -m bench proxy-stop --runs 3 --variants deployed,no-buffer

Real ``bentoml serve`` replicas (tiny text backbone, 60 head tasks on one local store) behind
a real haproxy running deploy/haproxy/haproxy.cfg, or a variant of it:

- ``deployed``: the file as shipped (``option http-buffer-request`` in the inference backend);
- ``no-buffer``: the same without ``option http-buffer-request``;
- ``server-close``: without it, with ``option http-server-close`` instead (no server
  connection is reused).

Closed-loop clients (``--clients``) send /predict requests with the task in X-Taskswap-Task
and never retry; the replicas but the first are stopped one by one with SIGTERM (as Kubernetes
stops a pod), ``--after`` answers apart. Per variant: stops, answers, HTTP failures (a status
other than 200) and connections closed without an answer. The variants alternate within each
run order. Results: ``bench/results/proxy-stop.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the shared harness: server.py, haproxy.py, publish.py

import httpx  # noqa: E402

from adapters.backbones.base import load_backbone  # noqa: E402
from adapters.backbones.tiny import tiny_backbone_spec  # noqa: E402
from adapters.store import open_store  # noqa: E402
from bench.common import machine, save_results  # noqa: E402
from support.factories import head_adapter  # noqa: E402
from support.haproxy import CONFIG, Proxy  # noqa: E402
from support.publish import publish  # noqa: E402
from support.server import ServerFactory, tiny_backbones_env  # noqa: E402

TEXTS = ["a wonderful film", "dull"]
BUFFER = "    option http-buffer-request\n"


def variant_config(name: str) -> str:
    """The deployed HAProxy config, or one of the variants named in the module docstring."""
    text = CONFIG.read_text()
    assert text.count(BUFFER) == 1, f"{CONFIG}: expected one '{BUFFER.strip()}' line"
    if name == "deployed":
        return text
    if name == "no-buffer":
        return text.replace(BUFFER, "")
    if name == "server-close":
        return text.replace(BUFFER, "    option http-server-close\n")
    raise SystemExit(f"unknown variant {name!r}: deployed, no-buffer or server-close")


def one_run(root: Path, store: Path, variant: str, args, tasks: list[str], backbones: list[dict]) -> dict:
    """Start the replicas and the proxy, stop all replicas but the first under load."""
    answered, failures, closed, stop = Counter(), [], [], threading.Event()
    (root / "servers").mkdir()
    with ServerFactory(root / "servers") as servers:
        replicas = [servers.start(store=store, backbones=backbones, admin_token=None, wait=False,
                                  ready_timeout_s=600, env={"TASKSWAP_REPLICA_ID": f"r{k}"})
                    for k in range(1, args.replicas + 1)]
        for srv in replicas:
            srv.wait_ready()
        proxy = Proxy(root, {f"r{k}": f"127.0.0.1:{s.port}" for k, s in enumerate(replicas, 1)},
                      template=variant_config(variant)).start()

        def client(k: int) -> None:
            with httpx.Client(base_url=proxy.url, timeout=60) as http:
                i = k
                while not stop.is_set():
                    task = tasks[i % len(tasks)]
                    i += args.clients
                    try:
                        r = http.post("/predict", json={"task": task, "texts": TEXTS},
                                      headers={"X-Taskswap-Task": task})
                    except httpx.RemoteProtocolError as e:
                        closed.append(repr(e)[:200])
                        continue
                    except httpx.HTTPError as e:
                        failures.append(repr(e)[:200])
                        continue
                    if r.status_code != 200:
                        failures.append(f"{r.status_code} {r.text[:160]}")
                    answered[r.headers.get("x-taskswap-replica")] += 1

        threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
        for t in threads:
            t.start()
        try:
            for victim in [None, *replicas[1:]]:
                if victim is not None:
                    victim.stop()  # SIGTERM
                target = sum(answered.values()) + args.after
                deadline = time.monotonic() + 300
                while sum(answered.values()) < target and time.monotonic() < deadline:
                    time.sleep(0.1)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=120)
            proxy.stop()
    return {"variant": variant, "stops": args.replicas - 1, "answered": sum(answered.values()),
            "failures": len(failures), "closed_without_answer": len(closed),
            "samples": (failures + closed)[:5], "load_avg": os.getloadavg()}


def markdown(res: dict) -> str:
    lines = ["# Replicas stopped behind HAProxy under load", "", f"`{res['command']}`", "",
             f"{res['replicas']} replicas (tiny text backbone, 60 head tasks, one local store), "
             f"{res['clients']} closed-loop clients without retries, replicas 2..{res['replicas']} stopped "
             f"with SIGTERM one after another, {res['after']} answers apart. Machine: {res['machine']['cpus']} "
             f"CPUs; load average {res['load_avg_start'][0]:.1f} at the start, {res['load_avg_end'][0]:.1f} "
             "at the end.", "",
             "| run | variant | stops | answered | failures | closed without an answer |", "|---|---|---|---|---|---|"]
    for i, r in enumerate(res["runs"]):
        lines.append(f"| {i} | {r['variant']} | {r['stops']} | {r['answered']} | {r['failures']} | "
                     f"{r['closed_without_answer']} |")
    lines += ["", "| variant | stops | failures | closed without an answer |", "|---|---|---|---|"]
    for v, s in res["summary"].items():
        lines.append(f"| {v} | {s['stops']} | {s['failures']} | {s['closed_without_answer']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench proxy-stop", description=__doc__.split("\n\n")[0])
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--after", type=int, default=120, help="answers between two stops")
    ap.add_argument("--runs", type=int, default=2, help="runs per variant")
    ap.add_argument("--variants", default="deployed,no-buffer,server-close")
    ap.add_argument("--out", default="proxy-stop", help="results name under bench/results/")
    args = ap.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        variant_config(v)  # refuse an unknown name before anything starts

    root = Path(tempfile.mkdtemp(prefix="taskswap-proxy-stop-"))
    load_start = os.getloadavg()
    bb = load_backbone(tiny_backbone_spec("text", root / "tiny" / "text"))
    tasks = [f"stop-{i:02d}" for i in range(60)]
    store = open_store(str(root / "store"))
    for i, task in enumerate(tasks):
        publish(store, head_adapter(root / "src" / task, bb, task, seed=i), {bb.name: bb})
    backbones = [b for b in tiny_backbones_env(root / "tiny") if b["name"] == bb.name]
    runs = []
    try:
        for rnd in range(args.runs):
            for variant in (variants if rnd % 2 == 0 else variants[::-1]):
                run_root = root / f"run-{len(runs)}"
                run_root.mkdir()
                runs.append(one_run(run_root, root / "store", variant, args, tasks, backbones))
                print({k: x for k, x in runs[-1].items() if k != "samples"}, flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    summary = {v: {k: sum(r[k] for r in runs if r["variant"] == v)
                   for k in ("stops", "answered", "failures", "closed_without_answer")} for v in variants}
    res = {"command": "python -m bench proxy-stop " + " ".join(argv if argv is not None else sys.argv[2:]),
           "replicas": args.replicas, "clients": args.clients, "after": args.after, "machine": machine(),
           "load_avg_start": load_start, "load_avg_end": os.getloadavg(), "runs": runs, "summary": summary}
    md = markdown(res)
    save_results(args.out, res, md)
    print(md)
