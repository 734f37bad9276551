"""Many head tasks in one replica: cold start, memory, listing, sync, throughput, registration.

    python -m bench scale --tasks 100000 --store /var/tmp/scale-store --threads 1
    python -m bench scale --tasks 2000 --s3 500,2000 --http-registrations 100   # a quick look
    python -m bench scale --smoke      # every phase on a tiny random backbone and 20 tasks

On the embedded MiniLM backbone, ``--tasks`` head tasks (384 -> 2..10 labels, seeded
random weights) are put in a local store by a bench-side bulk writer that goes through
the store's own API (``bench/scale_populate.py``: ``put_version`` + ``publish`` per task,
headers checked, no dry-run forward, fsync off; ``--store`` keeps the store between runs
and only adds what is missing). Then, each in a fresh process where memory is measured:

- cold start: backbone loaded, ``Registry.start()`` (the task table from the store's
  index, no head loaded; when the store has no index yet, the first start lists it and
  writes one, and a second fresh start reads it), first prediction;
- first request vs warm: ``--sample`` never-touched tasks, each predicted once (its
  head loads on that request) and then twice more, interleaved task by task;
- every head loaded on demand (what start-up used to do), and the RSS per registered head
  against its tensor bytes (RSS delta over start-up and those loads / N);
- the listing behind ``GET /adapters``: first page, a page at the end, a name filter
  (``Registry.page``), and the full ``list()`` for contrast;
- throughput of batches whose rows are spread over every task against batches over 5
  (interleaved rounds);
- sync cost per store change on the local store at two sizes (``--small`` tasks and all):
  a writer registers or deletes one task, a follower ``sync()``\\ s, interleaved between
  the two stores; a forced full listing at each size for contrast;
- the same on the S3 store (a moto server on loopback) at the sizes of ``--s3``;
- over HTTP: a real server on the full store, time to ``/readyz``, first request vs warm
  on ``--sample`` other never-touched tasks (``POST /predict``, one client), ``GET
  /adapters`` latencies, and ``--http-registrations`` registrations (``POST /adapters``).

No timing is asserted anywhere (tests/unit/test_scale.py checks behaviour at 5,000 tasks).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the test harness's moto server (tests/support/s3.py)

import dataclasses  # noqa: E402

import httpx  # noqa: E402
import torch  # noqa: E402

from adapters.backbones.base import BackboneSpec  # noqa: E402
from adapters.format.archive import make_archive  # noqa: E402
from adapters.registry import Registry  # noqa: E402
from adapters.runtime import Runtime  # noqa: E402
from adapters.store import open_store  # noqa: E402
from bench.common import (SMOKE_HELP, TEXT_SPEC, interleave, load, machine, review_snippets,  # noqa: E402
                          results_dir, save_results, settled_rss, smoke_specs)
from bench.http_bench import Served  # noqa: E402
from bench.scale_populate import populate, task_name, write_head  # noqa: E402
from support.s3 import start_moto, stop_moto  # noqa: E402
BATCH = 64


def _ms(samples: list[float]) -> dict:
    return {"median_ms": 1000 * statistics.median(samples), "max_ms": 1000 * max(samples), "n": len(samples)}


# ---- child processes (fresh memory) ---------------------------------------------------------
def run_child(fn: str, args: dict, env: dict | None = None, timeout_s: float = 7200) -> dict:
    code = f"import json, sys; from bench.scale import {fn}; print(json.dumps({fn}(json.loads(sys.argv[1]))))"
    out = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True,
                         cwd=REPO, timeout=timeout_s, env={**os.environ, **(env or {})})
    if out.returncode != 0:
        raise SystemExit(f"{fn} child failed:\n{out.stderr[-4000:]}")
    sys.stderr.write("".join(line + "\n" for line in out.stderr.splitlines() if line.startswith("  ")))
    return json.loads(out.stdout.strip().splitlines()[-1])


def cold_child(a: dict) -> dict:
    """Cold start, first request vs warm, RSS per head, listing, spread, local sync cost
    (see the module docstring)."""
    torch.set_num_threads(a["threads"])
    t0 = time.perf_counter()
    bb = load(BackboneSpec(**a["spec"]))
    t_backbone = time.perf_counter() - t0
    bb.embed(["warm up"])
    backbones = {bb.name: bb}
    out: dict = {"backbone_load_s": t_backbone}
    before = settled_rss()
    t1 = time.perf_counter()
    reg = Registry(open_store(a["store"]), backbones)
    started = reg.start()
    t_start = time.perf_counter() - t1
    out["first_start"] = {**started, "seconds": t_start}
    if started["source"] != "index":  # the store had no index: this start listed it and wrote one
        del reg
        before = settled_rss()
        t1 = time.perf_counter()
        reg = Registry(open_store(a["store"]), backbones)
        reg.start()
        t_start = time.perf_counter() - t1
    rt = Runtime(reg)
    n = reg.count()
    names = [row["name"] for row in reg.page(None, 0, None)[0]]
    t2 = time.perf_counter()
    rt.run([rt.prepare([names[-1]], ["ready?"], "text")])  # a never-touched task
    t_first = time.perf_counter() - t2
    t_ready = t_backbone + t_start + t_first  # as a fresh process pays it
    out.update({"tasks": n, "start_source": reg.last_start["source"], "registry_start_s": t_start,
                "first_prediction_s": t_first, "time_to_ready_s": t_ready,
                "loaded_after_start": reg.loaded_count() - 1})
    print(f"  cold start: {n} tasks, start from the {reg.last_start['source']} {t_start:.1f} s, ready "
          f"(backbone + start + first prediction) {t_ready:.1f} s", file=sys.stderr, flush=True)
    out["first_vs_warm"] = first_vs_warm(rt, bb, names[:-1], a["sample"])
    t3 = time.perf_counter()
    tensor = statistics.mean(reg.resolve(x).nbytes for x in names)  # every head, on demand
    out["load_every_head_s"] = time.perf_counter() - t3
    after = settled_rss()
    out.update({"rss_per_head": (after - before) / n, "tensor_bytes_per_head_mean": tensor,
                "rss_delta_bytes": after - before})
    print(f"  every head loaded in {out['load_every_head_s']:.1f} s, RSS/head {(after - before) / n:.0f} B "
          f"vs {tensor:.0f} B", file=sys.stderr, flush=True)
    out["listing"] = listing(reg, n)
    out["spread"] = spread(reg, bb, names, a["rounds"], a["budget_s"])
    print(f"  spread: {out['spread']['ratio']:.3f}", file=sys.stderr, flush=True)
    out["sync_local"] = sync_costs({"small": a["small_store"], "all": a["store"]}, backbones,
                                   a["sync_rounds"], Path(a["scratch"]), big_follower=reg)
    return out


def first_vs_warm(rt: Runtime, bb, names: list[str], sample: int) -> dict:
    """``sample`` never-touched tasks (spread over the name order): each predicted once (its
    head loads on that request), then twice warm, task by task (interleaved)."""
    text = review_snippets(1, bb.preprocessor.tokenizer)[0]
    step = max(1, len(names) // max(1, sample))
    picked = names[::step][:sample]
    first, warm = [], []
    for name in picked:
        runs = []
        for _ in range(3):
            t = time.perf_counter()
            rt.run([rt.prepare([name], [text], "text")])
            runs.append(time.perf_counter() - t)
        first.append(runs[0])
        warm.append(min(runs[1:]))
    extra = [f - w for f, w in zip(first, warm)]
    out = {"first": _ms(first), "warm": _ms(warm), "first_minus_warm": _ms(extra),
           "first_minus_warm_p95_ms": 1000 * sorted(extra)[max(0, int(0.95 * len(extra)) - 1)]}
    print(f"  first request vs warm ({len(picked)} tasks): +{out['first_minus_warm']['median_ms']:.2f} ms median, "
          f"+{out['first_minus_warm']['max_ms']:.2f} ms max", file=sys.stderr, flush=True)
    return out


def listing(reg: Registry, n: int, reps: int = 7) -> dict:
    """``Registry.page`` as ``GET /adapters`` calls it: first page, last page, a filter."""
    cases = {"first page (100)": (None, 0, 100), "page at the end (100)": (None, max(0, n - 100), 100),
             "name filter 'task-0999' (100)": ("task-0999", 0, 100)}
    out = {}
    for label, args in cases.items():
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            reg.page(*args)
            times.append(time.perf_counter() - t)
        out[label] = _ms(times)
    t = time.perf_counter()
    reg.list()
    out["full list() (every task described)"] = _ms([time.perf_counter() - t])
    return out


def spread(reg: Registry, bb, names: list[str], rounds: int, budget_s: float) -> dict:
    rt = Runtime(reg)
    texts = review_snippets(BATCH, bb.preprocessor.tokenizer)
    rng = random.Random(5)

    def run(pool):
        return rt.run([rt.prepare([rng.choice(pool)], [x], "text") for x in texts])
    many = f"all {len(names)} tasks"
    t = interleave({"5 tasks": lambda: run(names[:5]), many: lambda: run(names)},
                   BATCH, rounds=rounds, deadline_s=budget_s)
    return {"ratio": t.ratio(many, "5 tasks"), "rows_per_s_all": t.median(many),
            "rows_per_s_5": t.median("5 tasks"), "rounds": len(t.per_round[many])}


def sync_costs(stores: dict[str, str], backbones: dict, rounds: int, scratch: Path,
               big_follower: Registry | None = None) -> dict:
    """Per store: a follower (fully synced first), then ``rounds`` interleaved changes —
    a writer registers one new task (or deletes the previous one), the follower syncs."""
    bb = next(iter(backbones.values()))
    followers, writers, counts = {}, {}, {}
    for label, url in stores.items():
        f = big_follower if (label == "all" and big_follower is not None) else Registry(open_store(url), backbones)
        t = time.perf_counter()
        f.sync(force=True)
        followers[label] = f
        counts[label] = {"tasks": f.count(), "first_full_sync_s": time.perf_counter() - t}
        writers[label] = Registry(open_store(url), backbones)  # registers only: never synced
    samples: dict[str, list[dict]] = {label: [] for label in stores}
    run_id = secrets.token_hex(3)
    for r in range(rounds):
        for label in stores:
            name = f"sync-{run_id}-{r:03d}"
            if r % 2 == 0:
                folder = write_head(scratch, bb, 20_000_000 + r)
                writers[label].register(folder, name=name)
                shutil.rmtree(folder, ignore_errors=True)
                change = "register"
            else:
                writers[label].delete(f"sync-{run_id}-{r - 1:03d}")
                change = "delete"
            t = time.perf_counter()
            changed = followers[label].sync()
            dt = time.perf_counter() - t
            samples[label].append({"change": change, "sync_s": dt, "changed": changed,
                                   **{k: v for k, v in followers[label].last_sync.items() if k != "names"}})
    out = {}
    for label in stores:
        s = samples[label]
        if hasattr(followers[label].store, "_snapshot"):
            followers[label].store._snapshot = None  # the S3 store's own incremental snapshot: list for real
        t = time.perf_counter()
        followers[label].sync(force=True)
        full = time.perf_counter() - t
        out[label] = {**counts[label], "per_change": _ms([x["sync_s"] for x in s]),
                      "incremental": all(not x["full"] for x in s), "all_changed": all(x["changed"] for x in s),
                      "max_aliases_read": max(x["tasks_read"] for x in s), "forced_full_sync_s": full}
        print(f"  sync {label}: {out[label]['tasks']} tasks, {out[label]['per_change']['median_ms']:.1f} ms "
              f"per change (full listing {full:.2f} s)", file=sys.stderr, flush=True)
    if rounds % 2 == 1:  # leave no bench task behind
        for label in stores:
            writers[label].delete(f"sync-{run_id}-{rounds - 1:03d}")
    return out


def s3_child(a: dict) -> dict:
    """Populate S3 stores at the given sizes (bulk writer), then :func:`sync_costs` on them."""
    torch.set_num_threads(a["threads"])
    bb = load(BackboneSpec(**a["spec"]))
    stores, fill = {}, {}
    for n in a["sizes"]:
        url = f"{a['url']}/n{n}"
        fill[str(n)] = populate(url, bb, 0, n, report_every=max(1000, n // 4))
        stores[str(n)] = url
    out = sync_costs(stores, {bb.name: bb}, a["sync_rounds"], Path(a["scratch"]))
    for n in out:
        out[n]["populate_tasks_per_s"] = fill[n]["written"] / fill[n]["seconds"] if fill[n]["written"] else None
    return out


# ---- over HTTP ---------------------------------------------------------------------------------
def baseline_ready(tree: Path, env: dict, root: Path) -> dict:
    """Time to ``/readyz`` of the server in another source tree (e.g. ``git archive`` of the
    code before) on the same store and settings; its log's "ready in" line says which code ran."""
    t0 = time.perf_counter()
    srv = Served("service.service:Taskswap", env, root, "scale-baseline", cwd=tree)
    try:
        srv.wait_ready(timeout_s=3600)
        ready = time.perf_counter() - t0
    finally:
        srv.stop()
    print(f"  baseline server ({tree}) ready in {ready:.0f} s", file=sys.stderr, flush=True)
    return {"tree": str(tree), "time_to_ready_s": ready, "log_line": ready_line(srv)}


def ready_line(srv: Served) -> str:
    """The engine's own "ready in ..." log line (its start-up after the process started)."""
    line = next((x for x in srv.log.read_text(errors="replace").splitlines() if "ready in" in x), "")
    return line.split("] ")[-1][-400:]


def http_phase(store: Path, n_tasks: int, registrations: int, threads: int, root: Path,
               spec: BackboneSpec = TEXT_SPEC, sample: int = 50, baseline: Path | None = None) -> dict:
    """A real server on the store: time to /readyz (and first, with ``baseline``, the
    other tree's server's), first request vs warm on never-touched tasks, GET /adapters
    latencies, registrations."""
    bb = load(spec)
    run_id = secrets.token_hex(3)
    archives = []
    for i in range(registrations):  # built before the timing
        folder = write_head(root / "reg", bb, 30_000_000 + i)
        archives.append((f"http-{run_id}-{i:04d}", make_archive(folder, "zip")))
        shutil.rmtree(folder)
    token = secrets.token_hex(16)
    env = {"TASKSWAP_STORE": str(store), "TASKSWAP_ADMIN_TOKEN": token, "TASKSWAP_TORCH_THREADS": str(threads),
           "TASKSWAP_BACKBONES": json.dumps([{"name": bb.name, "source": spec.source,
                                              "max_length": spec.max_length}]),
           "TASKSWAP_METRICS_MAX_TASKS": "50"}
    out: dict = {}
    if baseline is not None:
        out["baseline"] = baseline_ready(baseline, env, root)
    t0 = time.perf_counter()
    srv = Served("service.service:Taskswap", env, root, "scale-server")
    try:
        srv.wait_ready(timeout_s=3600)
        out["time_to_ready_s"] = time.perf_counter() - t0
        out["log_line"] = ready_line(srv)
        print(f"  server ready in {out['time_to_ready_s']:.0f} s", file=sys.stderr, flush=True)
        with httpx.Client(base_url=srv.url, timeout=600, headers={"Authorization": f"Bearer {token}"}) as c:
            out["first_vs_warm"] = http_first_vs_warm(c, bb, n_tasks, sample)
            cases = {"first page (limit 100)": {"limit": 100},
                     "page at the end (limit 100)": {"limit": 100, "offset": max(0, n_tasks - 100)},
                     "name filter 'task-0999' (limit 100)": {"limit": 100, "name": "task-0999"}}
            lat = {}
            for label, params in cases.items():
                times = []
                for _ in range(7):
                    t = time.perf_counter()
                    r = c.get("/adapters", params=params)
                    times.append(time.perf_counter() - t)
                    if r.status_code != 200:
                        raise SystemExit(f"GET /adapters {params}: {r.status_code} {r.text[:300]}")
                lat[label] = {**_ms(times), "total": r.json()["total"], "returned": len(r.json()["adapters"])}
            out["list_adapters"] = lat
            times = []
            t_all = time.perf_counter()
            for name, archive in archives:
                t = time.perf_counter()
                r = c.post("/adapters", files={"file": ("a.zip", archive)}, data={"name": name})
                times.append(time.perf_counter() - t)
                if r.status_code != 201:
                    raise SystemExit(f"registration {name}: {r.status_code} {r.text[:300]}")
            wall = time.perf_counter() - t_all
            out["registration"] = {"tasks": len(archives), "tasks_per_s": len(archives) / wall if wall else None,
                                   **_ms(times)}
    finally:
        srv.stop()
    store_handle = open_store(str(store))
    for name, _ in archives:  # leave the store as it was
        if store_handle.get_alias(name) is not None:
            store_handle.delete(name)
    return out


def http_first_vs_warm(c: httpx.Client, bb, n_tasks: int, sample: int) -> dict:
    """``POST /predict`` on ``sample`` tasks this server has not touched (spread over the
    names): once (its head loads on that request), then twice warm, task by task."""
    text = review_snippets(1, bb.preprocessor.tokenizer)[0]
    step = max(2, n_tasks // max(1, sample))
    picked = [task_name(i) for i in range(step // 2, n_tasks - 1, step)][:sample]
    # The process's first /predict pays once for its request path's first use (thread pools,
    # the batcher's first batch, lazy imports), whatever the task: measured apart, on a task
    # outside the sample, so the sample measures what a never-touched task costs.
    t = time.perf_counter()
    r = c.post("/predict", json={"task": task_name(n_tasks - 1), "texts": [text]})
    process_first_ms = 1000 * (time.perf_counter() - t)
    if r.status_code != 200:
        raise SystemExit(f"predict {task_name(n_tasks - 1)}: {r.status_code} {r.text[:300]}")
    first, warm = [], []
    for name in picked:
        runs = []
        for _ in range(3):
            t = time.perf_counter()
            r = c.post("/predict", json={"task": name, "texts": [text]})
            runs.append(time.perf_counter() - t)
            if r.status_code != 200:
                raise SystemExit(f"predict {name}: {r.status_code} {r.text[:300]}")
        first.append(runs[0])
        warm.append(min(runs[1:]))
    extra = [f - w for f, w in zip(first, warm)]
    out = {"first": _ms(first), "warm": _ms(warm), "first_minus_warm": _ms(extra),
           "first_minus_warm_p95_ms": 1000 * sorted(extra)[max(0, int(0.95 * len(extra)) - 1)],
           "first_minus_warm_in_order_ms": [round(1000 * e, 1) for e in extra],
           "process_first_predict_ms": process_first_ms}
    print(f"  HTTP first request vs warm ({len(picked)} tasks): +{out['first_minus_warm']['median_ms']:.1f} ms "
          f"median, +{out['first_minus_warm']['max_ms']:.1f} ms max", file=sys.stderr, flush=True)
    return out


# ---- report ------------------------------------------------------------------------------------
def markdown(res: dict) -> str:
    m, c = res["machine"], res["cold"]
    lines = [f"# Scale: {c['tasks']} head tasks in one replica", "",
             f"Machine: {m['cpus']} CPUs, torch {m['torch']}, {res['threads']} torch thread(s); load average "
             f"{res['load_start'][0]:.1f} at start, {res['load_end'][0]:.1f} at the end. "
             f"Command: `{res['command']}`.", "",
             (f"Store populated by the bench-side bulk writer (store API, fsync off): "
              f"{res['populate']['written']} tasks written in {res['populate']['seconds']:.0f} s."
              if res["populate"]["written"] else "Store reused (`--store`, already populated by "
              "`bench/scale_populate.py`).")]
    if "backbone_load_s" in c:
        lines += ["", *_in_process(c, res)]
    else:
        lines += ["", "Only the HTTP phase (`--http-only`)."]
    if "http" in res:
        h = res["http"]
        if "baseline" in h:
            lines += ["", f"Baseline: the server of `{h['baseline']['tree']}` on the same store, started just "
                      f"before: ready (`/readyz`) **{h['baseline']['time_to_ready_s']:.1f} s** after start "
                      f"(its log: `{h['baseline']['log_line']}`)."]
        lines += ["", f"Over HTTP (a real server on the same store, 1 worker): ready (`/readyz`) "
                  f"**{h['time_to_ready_s']:.1f} s** after start (its log: `{h.get('log_line', '')}`); "
                  f"first `POST /predict` to a never-touched task vs "
                  f"warm: **+{h['first_vs_warm']['first_minus_warm']['median_ms']:.1f} ms** median, "
                  f"+{h['first_vs_warm']['first_minus_warm_p95_ms']:.1f} ms p95, "
                  f"+{h['first_vs_warm']['first_minus_warm']['max_ms']:.1f} ms max over "
                  f"{h['first_vs_warm']['first']['n']} tasks (warm median "
                  f"{h['first_vs_warm']['warm']['median_ms']:.1f} ms; the process's first `/predict`, to a "
                  f"task outside the sample and before it, took "
                  f"{h['first_vs_warm'].get('process_first_predict_ms', float('nan')):.0f} ms); "
                  f"{h['registration']['tasks']} registrations "
                  f"(`POST /adapters`, one client): **{h['registration']['tasks_per_s']:.1f} tasks/s** "
                  f"(median {h['registration']['median_ms']:.0f} ms, max {h['registration']['max_ms']:.0f} ms).", "",
                  "| `GET /adapters` | median ms | max ms | total | returned |", "|---|---|---|---|---|"]
        lines += [f"| {k} | {v['median_ms']:.1f} | {v['max_ms']:.1f} | {v['total']} | {v['returned']} |"
                  for k, v in h["list_adapters"].items()]
    return "\n".join(lines) + "\n"


def _in_process(c: dict, res: dict) -> list[str]:
    lines = ["| measure | result |", "|---|---|",
             f"| cold start: backbone loaded | {c['backbone_load_s']:.1f} s |",
             *([f"| cold start without an index: `Registry.start()` lists the store, writes the index | "
                f"{c['first_start']['seconds']:.1f} s |"] if c["first_start"]["source"] != "index" else []),
             f"| cold start: `Registry.start()` from the {c['start_source']} (no head loaded) | "
             f"{c['registry_start_s']:.1f} s |",
             f"| cold start: ready (backbone + start + first prediction) | **{c['time_to_ready_s']:.1f} s** |",
             _fw_row("first request to a never-touched task vs warm, in process", c["first_vs_warm"]),
             f"| every head loaded on demand (what start-up did before) | {c['load_every_head_s']:.1f} s |",
             f"| RSS per registered head vs its tensor bytes | {c['rss_per_head'] / 1000:.1f} kB vs "
             f"{c['tensor_bytes_per_head_mean'] / 1000:.1f} kB: **{c['rss_per_head'] / c['tensor_bytes_per_head_mean']:.2f}×** |",
             f"| rows/s spread over all {c['tasks']} tasks / over 5 | **{c['spread']['ratio']:.3f}** "
             f"({c['spread']['rows_per_s_all']:.1f} vs {c['spread']['rows_per_s_5']:.1f}, "
             f"{c['spread']['rounds']} rounds) |"]
    lines += ["", "| `Registry.page` (what `GET /adapters` runs) | median ms | max ms |", "|---|---|---|"]
    lines += [f"| {k} | {v['median_ms']:.2f} | {v['max_ms']:.2f} |" for k, v in c["listing"].items()]
    lines += ["", "| store | tasks | follower `sync()` per change, median ms (max) | incremental | "
              "aliases read per change | forced full listing, s |", "|---|---|---|---|---|---|"]
    rows = [("local", v) for v in c["sync_local"].values()] + [("S3 (moto)", v) for v in res.get("s3", {}).values()]
    lines += [f"| {kind} | {v['tasks']} | {v['per_change']['median_ms']:.1f} ({v['per_change']['max_ms']:.1f}) | "
              f"{'yes' if v['incremental'] else 'no'} | {v['max_aliases_read']} | {v['forced_full_sync_s']:.2f} |"
              for kind, v in rows]
    return lines


def _fw_row(label: str, fw: dict) -> str:
    d = fw["first_minus_warm"]
    return (f"| {label} ({d['n']} tasks) | **+{d['median_ms']:.2f} ms** median, +{fw['first_minus_warm_p95_ms']:.2f} "
            f"p95, +{d['max_ms']:.2f} max (warm median {fw['warm']['median_ms']:.1f} ms) |")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--store", default=None, help="local store to (re)use; default: a temporary one")
    ap.add_argument("--small", type=int, default=1000, help="the smaller local store for sync costs")
    ap.add_argument("--s3", default="1000,10000", help="S3 store sizes for sync costs ('' = skip)")
    ap.add_argument("--http-registrations", type=int, default=500, help="0 skips the HTTP phase")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sample", type=int, default=50, help="never-touched tasks for first request vs warm")
    ap.add_argument("--http-only", action="store_true", help="only the HTTP phase (no in-process child, no S3)")
    ap.add_argument("--baseline-tree", default=None, help=(
        "a source tree of other code (e.g. `git archive REV | tar -x -C DIR`): its server's time to "
        "/readyz on the same store is measured just before this code's"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--sync-rounds", type=int, default=10)
    ap.add_argument("--budget-s", type=float, default=120)
    ap.add_argument("--out", default=None, help="results name (default scale-<tasks>)")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP + (
        "; 20 tasks, a store of 10, S3 stores of 10, 3 HTTP registrations, 1 round"))
    args = ap.parse_args(argv)
    if args.smoke:
        args.tasks, args.small, args.s3, args.http_registrations = 20, 10, "10", min(args.http_registrations, 3)
        args.rounds, args.sync_rounds, args.budget_s, args.sample = 1, 2, 10, min(args.sample, 3)
        args.out = args.out or "scale-smoke"
    torch.set_num_threads(args.threads)
    res: dict = {"tasks": args.tasks, "threads": args.threads, "machine": machine(), "load_start": os.getloadavg(),
                 "command": "python -m bench scale " + " ".join(argv if argv is not None else sys.argv[1:])}
    root = Path(tempfile.mkdtemp(prefix="taskswap-scale-"))
    store = Path(args.store) if args.store else root / "store"
    try:
        spec = smoke_specs(root / "backbones")[0] if args.smoke else TEXT_SPEC
        bb = load(spec)
        res["populate"] = populate(str(store), bb, 0, args.tasks, report_every=10_000)
        if not args.http_only:
            populate(str(root / "small"), bb, 0, args.small)
        del bb
        common = {"threads": args.threads, "sync_rounds": args.sync_rounds, "scratch": str(root / "scratch"),
                  "spec": dataclasses.asdict(spec)}
        (root / "scratch").mkdir()
        if args.http_only:
            res["cold"] = {"tasks": args.tasks}
        else:
            res["cold"] = run_child("cold_child", {**common, "store": str(store), "small_store": str(root / "small"),
                                                   "rounds": args.rounds, "budget_s": args.budget_s,
                                                   "sample": args.sample})
        if args.s3 and not args.http_only:
            moto = start_moto(root / "moto.log")
            try:
                res["s3"] = run_child("s3_child", {**common, "url": f"s3://{moto.bucket}/scale",
                                                   "sizes": [int(x) for x in args.s3.split(",")]},
                                      env={**moto.env, "TASKSWAP_STORE_CACHE": str(root / "s3-cache")})
            finally:
                stop_moto(moto)
        if args.http_registrations:
            res["http"] = http_phase(store, res["cold"]["tasks"], args.http_registrations, args.threads, root, spec,
                                     args.sample, Path(args.baseline_tree) if args.baseline_tree else None)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    res["load_end"] = os.getloadavg()
    md = markdown(res)
    print(md)
    save_results(args.out or f"scale-{args.tasks}", res, md)
    return res


def rerender(name: str) -> None:
    """Rewrite ``bench/results/<name>.md`` from its JSON (after a change to :func:`markdown`)."""
    res = json.loads((results_dir() / f"{name}.json").read_text())
    (results_dir() / f"{name}.md").write_text(markdown(res))

