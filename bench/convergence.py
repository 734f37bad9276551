"""Replica convergence over HTTP: how long after replica A acknowledges a change the other
replicas serve it, on a shared local store and on an S3 store (a moto server).

    python -m bench convergence                  # 2 replicas, 30 repetitions (about 4 minutes)
    python -m bench convergence --replicas 3 --reps 10

Real ``bentoml serve`` replicas on 127.0.0.1 (one worker each), started here and stopped at
the end: one group on a local folder store, one group on a bucket of a ``moto_server`` on
loopback (each replica with its own download cache, as on separate hosts). Every replica
runs the production sync interval (``TASKSWAP_SYNC_INTERVAL_S``, 0.5 s unless
``--sync-interval``). The backbones are the tiny random test ones: what is measured is the
store and the sync path, not the model.

Each repetition, on each store (the two stores alternate which goes first), the writer
being replica ``rep % replicas``:

- register: a new task registered on the writer -> every other replica serves it. The
  others have never seen the task, so their first request for it syncs (lazy load on a miss).
- new version: a second version of that task -> every other replica serves it. They hold
  the old version, so only the store watcher can carry it.
- rollback: the first version activated again -> every other replica serves it (watcher).
- delete: the task deleted -> every other replica answers 404 (watcher).

Before each change a random pause (uniform over one sync interval) decorrelates it from
the watchers' phase. A time runs from the writer's acknowledgement (its response received)
to the response in which the *last* other replica shows the change; the others are polled
in turn every ``--poll-ms`` (10 ms), so a figure is an upper bound with that resolution
plus one request.
Expected: a miss costs one store read and one load; the watcher path is spread over the
sync interval (median about half of it) plus the load.

These are absolute times on a shared 2-core machine while other jobs run, so they carry
the neighbours' load; both stores are measured interleaved in one run so they compare
fairly. Results go to ``bench/results/convergence.{json,md}``.

The servers and moto are started with the test harness (``tests/support/server.py``,
``tests/support/s3.py``) and the adapters built with ``tests/support/factories.py``, so the bench and the
replica tests exercise the same setup.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the shared harness: server.py, s3.py, factories.py

from adapters.backbones.base import load_backbone  # noqa: E402
from adapters.backbones.tiny import tiny_backbone_spec  # noqa: E402
from adapters.format.archive import make_archive  # noqa: E402
from bench.common import save_results  # noqa: E402
from support.factories import head_adapter  # noqa: E402
from support.s3 import start_moto, stop_moto  # noqa: E402
from support.server import ServerFactory, tiny_backbones_env  # noqa: E402

OPERATIONS = ("register", "new version", "rollback", "delete")
HOW = {"register": "lazy load on a miss", "new version": "watcher", "rollback": "watcher",
       "delete": "watcher"}
TEXTS = ["a fine film"]


# ---- measuring one change ------------------------------------------------------------
def served(srv, task: str) -> str | None:
    """The version ``srv`` answers ``task`` with, None on 404, "error <status>" otherwise."""
    r = srv.predict(task, texts=TEXTS)
    if r.status_code == 404:
        return None
    if r.status_code != 200:
        return f"error {r.status_code}"
    return r.json()["results"][0]["version"]


def time_until(others, task: str, expected: str | None, t0: float, timeout_s: float,
               poll_s: float) -> float | None:
    """Seconds from ``t0`` until every replica in ``others`` answers ``task`` with
    ``expected`` (None = 404); None if that did not happen within ``timeout_s``."""
    pending = list(others)
    for _ in range(int(timeout_s / poll_s) + 1):  # bounded in count and in time
        pending = [srv for srv in pending if served(srv, task) != expected]
        if not pending:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout_s:
            return None
        time.sleep(poll_s)
    return None


def one_repetition(group: list, writer: int, task: str, archives: tuple[bytes, bytes],
                   timeout_s: float, poll_s: float, jitter) -> dict[str, float | None]:
    """Register, new version, rollback, delete through ``group[writer]``; the seconds each
    took to reach every other replica. ``jitter()`` is slept before each change."""
    w = group[writer]
    others = [srv for i, srv in enumerate(group) if i != writer]
    out: dict[str, float | None] = {}

    def acked(response, status: int):
        if response.status_code != status:
            raise SystemExit(f"{w.url}: expected {status}, got {response.status_code}: {response.text}")
        return response, time.monotonic()

    time.sleep(jitter())
    r, t0 = acked(w.register_archive(archives[0]), 201)
    v1 = r.json()["version"]
    out["register"] = time_until(others, task, v1, t0, timeout_s, poll_s)
    time.sleep(jitter())
    r, t0 = acked(w.register_archive(archives[1]), 201)
    v2 = r.json()["version"]
    out["new version"] = time_until(others, task, v2, t0, timeout_s, poll_s)
    time.sleep(jitter())
    _, t0 = acked(w.post(f"/adapters/{task}/activate", admin=True, json={"version": v1}), 200)
    out["rollback"] = time_until(others, task, v1, t0, timeout_s, poll_s)
    time.sleep(jitter())
    _, t0 = acked(w.delete(f"/adapters/{task}", admin=True), 200)
    out["delete"] = time_until(others, task, None, t0, timeout_s, poll_s)
    return out


# ---- summary ---------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty list."""
    s = sorted(values)
    return s[max(0, min(len(s) - 1, round(q / 100 * len(s) + 0.5) - 1))]


def summarise(samples: list[float | None]) -> dict:
    ok = [s for s in samples if s is not None]
    row = {"n": len(samples), "timeouts": len(samples) - len(ok)}
    if ok:
        row.update(median_ms=1000 * statistics.median(ok), p95_ms=1000 * percentile(ok, 95),
                   max_ms=1000 * max(ok), min_ms=1000 * min(ok))
    third = len(samples) // 3
    early, late = [s for s in samples[:third] if s is not None], [s for s in samples[-third:] if s is not None]
    if third and early and late:  # the store grows by 2 versions per repetition: does time?
        row.update(first_third_median_ms=1000 * statistics.median(early),
                   last_third_median_ms=1000 * statistics.median(late))
    return row


def markdown(res: dict) -> str:
    a = res["args"]
    lines = [
        "# Replica convergence",
        "",
        f"`python -m bench convergence --replicas {a['replicas']} --reps {a['reps']}` "
        f"({res['finished_at']}): {a['replicas']} real `bentoml serve` replicas per store on "
        f"127.0.0.1, sync interval {a['sync_interval']} s, others polled every {a['poll_ms']} ms; "
        "time from the writer's acknowledgement to the last other replica serving the change "
        "(an upper bound: poll interval + one request). Tiny test backbones; the two stores "
        "interleaved in one run. Absolute times on a shared, contended 2-core machine "
        f"(load average {res['load_avg_before'][0]:.1f} before, {res['load_avg_after'][0]:.1f} after).",
        "",
        "| store | change | path | n | timeouts | median ms | p95 ms | max ms | median, first / last third |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for store, ops in res["summary"].items():
        for op, row in ops.items():
            figures = (f"{row['median_ms']:.0f} | {row['p95_ms']:.0f} | {row['max_ms']:.0f}"
                       if "median_ms" in row else "- | - | -")
            figures += (f" | {row['first_third_median_ms']:.0f} / {row['last_third_median_ms']:.0f}"
                        if "first_third_median_ms" in row else " | -")
            lines.append(f"| {store} | {op} | {HOW[op]} | {row['n']} | {row['timeouts']} | {figures} |")
    lines += ["", "Each repetition leaves 2 more versions and one more (deleted) task folder in the "
              "store; the last column shows whether that slows convergence."]
    lines += ["", f"Servers ready in {res['startup_s']:.0f} s; measuring took {res['measure_s']:.0f} s."]
    if res["server_errors"]:
        lines += ["", "Server log errors:", ""] + [f"    {e}" for e in res["server_errors"]]
    return "\n".join(lines) + "\n"


# ---- the run ---------------------------------------------------------------------------
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--replicas", type=int, default=2, help="replicas per store (>= 2)")
    ap.add_argument("--reps", type=int, default=30, help="repetitions of the 4 changes per store")
    ap.add_argument("--sync-interval", type=float, default=0.5, help="TASKSWAP_SYNC_INTERVAL_S")
    ap.add_argument("--poll-ms", type=float, default=10.0, help="pause between polling rounds")
    ap.add_argument("--timeout", type=float, default=10.0, help="give up on one change after this")
    ap.add_argument("--seed", type=int, default=0, help="seed of the pauses between changes")
    ap.add_argument("--stores", default="local,s3", help="comma-separated: local, s3")
    ap.add_argument("--out", default="convergence", help="results name under bench/results/")
    args = ap.parse_args(argv)
    if args.replicas < 2:
        ap.error("--replicas must be at least 2")
    stores = [s for s in args.stores.split(",") if s]
    if not set(stores) <= {"local", "s3"} or not stores:
        ap.error("--stores takes local and/or s3")

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="taskswap-convergence-") as tmp:
        root = Path(tmp)
        spec = tiny_backbone_spec("text", root / "tiny" / "text")
        tiny_backbone_spec("vision", root / "tiny" / "vision")
        backbone = load_backbone(spec)  # in-process copy: adapters carry its fingerprint
        bb_env = tiny_backbones_env(root / "tiny")
        sync = {"TASKSWAP_SYNC_INTERVAL_S": str(args.sync_interval)}
        token = secrets.token_hex(16)
        moto = start_moto(root / "moto.log") if "s3" in stores else None
        (root / "servers").mkdir()
        factory = ServerFactory(root / "servers")
        try:
            t_start = time.monotonic()
            groups: dict[str, list] = {}
            for store in stores:
                if store == "local":
                    location, extra = root / "local-store", {}
                else:
                    location, extra = f"s3://{moto.bucket}/convergence", moto.env
                groups[store] = [
                    factory.start(store=location, backbones=bb_env, admin_token=token, wait=False,
                                  env={**extra, **sync, "TASKSWAP_REPLICA_ID": f"{store}-{i}",
                                       "TASKSWAP_STORE_CACHE": str(root / f"cache-{store}-{i}")})
                    for i in range(args.replicas)]
            for group in groups.values():
                for srv in group:
                    srv.wait_ready()
            startup_s = time.monotonic() - t_start
            print(f"{sum(map(len, groups.values()))} replicas ready in {startup_s:.0f}s", flush=True)

            samples = {store: {op: [] for op in OPERATIONS} for store in stores}
            # A change made right after the previous one converged would fall just after
            # the others' last sync, i.e. always about one full interval before their next:
            # a random pause first spreads the changes over the watchers' phase.
            rng = random.Random(args.seed)
            jitter = lambda: rng.uniform(0, args.sync_interval)  # noqa: E731
            t_measure = time.monotonic()
            for rep in range(args.reps):
                task = f"conv-{rep}"
                archives = tuple(make_archive(head_adapter(root / "adapters" / f"{rep}-{k}", backbone,
                                                           task, seed=2 * rep + k), "zip")
                                 for k in (0, 1))
                order = stores if rep % 2 == 0 else stores[::-1]
                for store in order:
                    got = one_repetition(groups[store], rep % args.replicas, task, archives,
                                         args.timeout, args.poll_ms / 1000, jitter)
                    for op, seconds in got.items():
                        samples[store][op].append(seconds)
                print(f"rep {rep + 1}/{args.reps}: " + "; ".join(
                    f"{s} " + " ".join("-" if samples[s][op][-1] is None else f"{samples[s][op][-1] * 1000:.0f}"
                                       for op in OPERATIONS) for s in stores) + " ms", flush=True)
            measure_s = time.monotonic() - t_measure
            errors = [f"{srv.store}: {line}" for group in groups.values() for srv in group
                      for line in srv.internal_errors()]
        finally:
            factory.close()
            if moto is not None:
                stop_moto(moto)

    res = {
        "args": vars(args),
        "finished_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count()},
        "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
        "startup_s": startup_s, "measure_s": measure_s,
        "samples_s": samples,
        "summary": {store: {op: summarise(v) for op, v in ops.items()} for store, ops in samples.items()},
        "server_errors": errors[:20],
    }
    md = markdown(res)
    save_results(args.out, res, md)
    print(md)
    return res

