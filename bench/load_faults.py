"""Load with faults: concurrent prediction clients on a real server while an admin client
registers, activates (rolls back) and deletes adapters every second.

    python -m bench load-faults                    # 180 s, 4 clients, embedded MiniLM (default)
    python -m bench load-faults --seconds 60 --tiny   # quick, tiny random backbone

A real ``bentoml serve`` on 127.0.0.1 (``tests/support/server.py``), one text backbone. Tasks:

- ``stable-head-*`` / ``stable-lora``: registered before the run, never touched;
- ``roll-head`` / ``roll-lora``: get a new version or a rollback to an older one every few
  seconds, never deleted: predictions on them must never fail either;
- ``churn-*``: registered, re-registered, rolled back and deleted over and over. Only a
  prediction on a churn task may get 404 (it was deleted on purpose); anything else counts.

Reported (``bench/results/reliability_load.{json,md}``): requests served, errors on tasks
that exist (stable + roll: must be 0), churn answers by status, p50/p99 latency, admin
operations (the faults) by kind and status, that every version a prediction named was an
acknowledged one, and that every acknowledged registration is present afterwards — in
``/adapters`` right after the run and again after a restart on the same store.
Loops are bounded in time (``--seconds``) and every request has a timeout.
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.common import TEXT_SPEC, load, machine, percentile, run_for, review_snippets, save_results, write_heads

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the real-server helper the tests use

from support.server import ServerFactory  # noqa: E402

STABLE = ["stable-head-0", "stable-head-1", "stable-lora"]
ROLL = ["roll-head", "roll-lora"]
CHURN = ["churn-0", "churn-1", "churn-2"]


# ---- the admin client's ledger: what the server acknowledged -------------------------------
@dataclass
class Ledger:
    """Per task: the active version and every version acknowledged since its last delete."""

    active: dict[str, str] = field(default_factory=dict)
    versions: dict[str, list[str]] = field(default_factory=dict)
    ever: dict[str, set[str]] = field(default_factory=lambda: collections.defaultdict(set))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def registered(self, name: str, version: str) -> None:
        with self.lock:
            self.active[name] = version
            if version not in self.versions.setdefault(name, []):
                self.versions[name].append(version)
            self.ever[name].add(version)

    def activated(self, name: str, version: str) -> None:
        with self.lock:
            self.active[name] = version

    def deleted(self, name: str) -> None:
        with self.lock:
            self.active.pop(name, None)
            self.versions.pop(name, None)


def register(srv, folder: Path, name: str, labels=None) -> httpx.Response:
    from adapters.format.archive import make_archive
    return srv.register_archive(make_archive(folder), name=name, labels=labels)


# ---- the fault injector --------------------------------------------------------------------
def admin_loop(srv, ledger: Ledger, heads: list[Path], loras: list[Path], stop: threading.Event,
               period_s: float, rng: random.Random, ops: collections.Counter, failures: list) -> None:
    """One admin operation every ``period_s``: register / rollback / delete, in rotation."""

    def do(kind: str, call) -> httpx.Response | None:
        try:
            r = call()
        except httpx.HTTPError as exc:
            ops[(kind, type(exc).__name__)] += 1
            failures.append(f"{kind}: {exc!r}")
            return None
        ops[(kind, r.status_code)] += 1
        if r.status_code >= 300:
            failures.append(f"{kind}: {r.status_code} {r.text[:200]}")
            return None
        return r

    def new_version(name: str) -> None:
        lora = name.endswith("lora") or (name.startswith("churn") and rng.random() < 0.3)
        folder = rng.choice(loras if lora else heads)
        r = do("register", lambda: register(srv, folder, name, ["neg", "pos"] if lora else None))
        if r is not None:
            ledger.registered(name, r.json()["version"])

    def rollback(name: str) -> None:
        with ledger.lock:
            older = [v for v in ledger.versions.get(name, []) if v != ledger.active.get(name)]
        if not older:
            return new_version(name)
        target = rng.choice(older)
        r = do("activate", lambda: srv.post(f"/adapters/{name}/activate", admin=True, json={"version": target}))
        if r is not None:
            ledger.activated(name, r.json()["active_version"])

    def delete(name: str) -> None:
        if name not in ledger.active:
            return new_version(name)
        if do("delete", lambda: srv.delete(f"/adapters/{name}", admin=True)) is not None:
            ledger.deleted(name)

    rotation = [lambda: new_version(rng.choice(ROLL)), lambda: new_version(rng.choice(CHURN)),
                lambda: rollback(rng.choice(ROLL)), lambda: rollback(rng.choice(CHURN)),
                lambda: delete(rng.choice(CHURN)), lambda: new_version(rng.choice(CHURN))]
    tick = 0
    while not stop.is_set():
        t0 = time.monotonic()
        rotation[tick % len(rotation)]()
        tick += 1
        stop.wait(max(0.0, period_s - (time.monotonic() - t0)))


# ---- the prediction clients ------------------------------------------------------------------
@dataclass
class Sample:
    group: str          # "exists" (stable + roll tasks) or "churn"
    status: int | str   # HTTP status, or the transport error's name
    seconds: float
    versions: list[tuple[str, str]]  # (task, version) answered
    rows: int


def client_loop(url: str, texts: list[str], stop: threading.Event, seed: int, batch: int,
                out: list[Sample]) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=60) as c:
        while not stop.is_set():
            roll = rng.random()
            if roll < 0.8:
                tasks, group = rng.sample(STABLE + ROLL, rng.choice((1, 1, 2))), "exists"
            else:
                tasks, group = [rng.choice(CHURN)], "churn"
            body = {"tasks": tasks, "texts": rng.sample(texts, batch)}
            t0 = time.perf_counter()
            try:
                r = c.post("/predict", json=body)
                status = r.status_code
                answered = [(x["task"], x["version"]) for x in r.json()["results"]] if status == 200 else []
            except (httpx.HTTPError, ValueError) as exc:
                status, answered = type(exc).__name__, []
            out.append(Sample(group, status, time.perf_counter() - t0, answered, batch * len(tasks)))


# ---- checks after the run ----------------------------------------------------------------------
def present_problems(srv, ledger: Ledger) -> list[str]:
    """Differences between the server's /adapters and the acknowledged ledger."""
    r = srv.get("/adapters")
    if r.status_code != 200:
        return [f"/adapters answered {r.status_code}"]
    listed = {a["name"]: a for a in r.json()["adapters"]}
    problems = []
    if set(listed) != set(ledger.active):
        problems.append(f"tasks {sorted(listed)} != acknowledged {sorted(ledger.active)}")
    for name, active in ledger.active.items():
        a = listed.get(name)
        if a is None:
            continue
        if a["active_version"] != active:
            problems.append(f"{name}: active {a['active_version'][:12]} != acknowledged {active[:12]}")
        stored = {v["version"] for v in a["versions"]}
        lost = [v[:12] for v in ledger.versions[name] if v not in stored]
        if lost:
            problems.append(f"{name}: acknowledged versions missing: {lost}")
    return problems


def serve_every_task(srv, ledger: Ledger, texts: list[str]) -> list[str]:
    problems = []
    for name, active in ledger.active.items():
        r = srv.predict(name, texts=texts[:4])
        if r.status_code != 200 or r.json()["results"][0]["version"] != active:
            problems.append(f"{name}: predict after the run -> {r.status_code} {r.text[:120]}")
    return problems


# ---- main ----------------------------------------------------------------------------------------
def build_adapters(root: Path, tiny: bool):
    """(backbone env for the server, text backbone, head folders, LoRA folders)."""
    if tiny:
        from adapters.backbones.tiny import tiny_backbone_spec
        spec = tiny_backbone_spec("text", root / "tiny-text")
    else:
        spec = TEXT_SPEC
    bb = load(spec)
    env = [{"name": spec.name, "source": spec.source, "max_length": spec.max_length}]
    heads = write_heads(root / "heads", bb, 4, hidden=(32,), prefix="pool")
    heads += write_heads(root / "heads-linear", bb, 2, prefix="lin")
    loras = [_lora(root / f"lora{i}", bb, i) for i in range(3)]
    return env, bb, heads, loras


def _lora(folder: Path, bb, seed: int) -> Path:
    """A plain PEFT LoRA (query/value, r=8) on the backbone's folder, random non-zero deltas."""
    import torch
    from bench.common import peft_text_model
    torch.manual_seed(seed)
    model = peft_text_model(bb, r=8)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.normal_(0, 0.05)
            elif "classifier" in n and "modules_to_save" in n:
                p.normal_(0, 0.5)
    model.save_pretrained(folder)
    return folder


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=180, help="length of the loaded phase")
    ap.add_argument("--clients", type=int, default=4, help="concurrent prediction clients")
    ap.add_argument("--batch", type=int, default=4, help="texts per request")
    ap.add_argument("--period", type=float, default=1.0, help="seconds between admin operations")
    ap.add_argument("--tiny", action="store_true", help="tiny random backbone instead of MiniLM")
    ap.add_argument("--no-save", action="store_true", help="print only (no results files)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="load-faults-") as tmp, ServerFactory(Path(tmp)) as servers:
        root = Path(tmp)
        env, bb, heads, loras = build_adapters(root, args.tiny)
        texts = review_snippets(200, bb.preprocessor.tokenizer, 8, 64) if not args.tiny else \
            [f"text number {i} " + "word " * (i % 30) for i in range(200)]
        del bb
        srv = servers.start(store=root / "store", backbones=env)
        ledger = Ledger()
        for i, name in enumerate(STABLE + ROLL):
            lora = name.endswith("lora")
            r = register(srv, loras[i % len(loras)] if lora else heads[i % len(heads)], name,
                         ["neg", "pos"] if lora else None)
            assert r.status_code == 201, r.text
            ledger.registered(name, r.json()["version"])
        for t in texts[:8]:  # warm the LoRA path and the tokenizer
            srv.predict(STABLE, texts=[t])

        stop, samples, ops, failures = threading.Event(), [], collections.Counter(), []
        threads = [threading.Thread(target=client_loop, args=(srv.url, texts, stop, i, args.batch, samples))
                   for i in range(args.clients)]
        threads.append(threading.Thread(target=admin_loop, args=(srv, ledger, heads, loras, stop, args.period,
                                                                 random.Random(7), ops, failures)))
        wall = run_for(threads, stop, args.seconds, join_timeout=90)

        problems_live = present_problems(srv, ledger) + serve_every_task(srv, ledger, texts)
        internal = srv.internal_errors()
        srv.restart()
        problems_restart = present_problems(srv, ledger) + serve_every_task(srv, ledger, texts)

    report = summarise(samples, ops, failures, ledger, wall, args, problems_live, problems_restart, internal)
    print(report["markdown"])
    if not args.no_save:
        md = report.pop("markdown")
        save_results("reliability_load", report, md)
    return 0 if report["verdict"] == "pass" else 1


def summarise(samples, ops, failures, ledger, wall, args, problems_live, problems_restart, internal) -> dict:
    exists = [s for s in samples if s.group == "exists"]
    churn = [s for s in samples if s.group == "churn"]
    ok = [s for s in exists if s.status == 200]
    errors = collections.Counter(str(s.status) for s in exists if s.status != 200)
    churn_status = collections.Counter(str(s.status) for s in churn)
    churn_bad = {k: v for k, v in churn_status.items() if k not in ("200", "404")}
    # every version a prediction named must be one the admin client was told about
    unknown = sorted({f"{t}@{v[:12]}" for s in samples for t, v in s.versions if v not in ledger.ever[t]})
    lat = [s.seconds * 1000 for s in ok]
    admin = {f"{k} {st}": n for (k, st), n in sorted(ops.items(), key=str)}
    acked = sum(n for (k, st), n in ops.items() if st in (200, 201))
    verdict = "pass" if not (errors or churn_bad or unknown or failures or problems_live
                             or problems_restart or internal) else "FAIL"
    out = {
        "verdict": verdict, "seconds": round(wall, 1), "clients": args.clients, "texts_per_request": args.batch,
        "backbone": "tiny random BERT" if args.tiny else "embedded all-MiniLM-L6-v2",
        "requests": len(samples), "requests_existing_tasks": len(exists), "served_existing_tasks": len(ok),
        "errors_existing_tasks": dict(errors), "churn_requests_by_status": dict(churn_status),
        "rows_served": sum(s.rows for s in samples if s.status == 200),
        "requests_per_s": round(len(samples) / wall, 1),
        "latency_ms_existing": {"p50": round(percentile(lat, 50), 1), "p99": round(percentile(lat, 99), 1),
                                "max": round(max(lat, default=float("nan")), 1)},
        "admin_operations": admin, "admin_acknowledged": acked, "admin_failures": failures[:20],
        "unacknowledged_versions_served": unknown[:20],
        "acknowledged_present_after_run": not problems_live, "problems_after_run": problems_live,
        "acknowledged_present_after_restart": not problems_restart, "problems_after_restart": problems_restart,
        "server_internal_errors": internal[:20], "tasks_at_end": len(ledger.active), "machine": machine(),
    }
    out["markdown"] = f"""# Load with faults ({out['backbone']}, {out['seconds']} s, {args.clients} clients)

Measured on a shared 2-core CPU machine (other work running): absolute figures are indicative only.

| | |
|---|---|
| verdict | **{verdict}** |
| requests | {out['requests']} ({out['requests_per_s']}/s), rows served {out['rows_served']} |
| requests on tasks that exist (never deleted) | {len(exists)}, served {len(ok)}, errors {sum(errors.values())} {dict(errors) or ''} |
| latency of those (ms) | p50 {out['latency_ms_existing']['p50']}, p99 {out['latency_ms_existing']['p99']}, max {out['latency_ms_existing']['max']} |
| requests on churned tasks (deleted on purpose) | {len(churn)}: {dict(churn_status)} |
| admin operations (faults injected), every {args.period} s | {sum(ops.values())}: {admin} |
| acknowledged admin operations | {acked}; failures {len(failures)} |
| versions served that were never acknowledged | {len(unknown)} |
| every acknowledged registration present after the run | {not problems_live} {problems_live or ''} |
| ... and after a restart on the same store | {not problems_restart} {problems_restart or ''} |
| 500s / tracebacks in the server log | {len(internal)} |

Command: `python -m bench load-faults --seconds {args.seconds:g} --clients {args.clients}{' --tiny' if args.tiny else ''}`
"""
    return out

