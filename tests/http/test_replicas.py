"""Two real ``bentoml serve`` replicas on loopback sharing one local store converge:
a task registered, rolled back or deleted through one is served (or refused) by the
other within a bounded time. Measured times are printed at the end of the module."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from adapters.format.archive import make_archive
from support.factories import peft_lora_dir
from support.replica_helpers import (TEXTS, Timings, head_archive, predictions, served_version,
                             wait_for)
from support.server import server_factory, tiny_backbones_env  # noqa: F401  (fixture)

pytestmark = pytest.mark.server

# The production default (service/settings.py), not the faster test default, so the
# measured figures are what an operator gets.
SYNC = {"TASKSWAP_SYNC_INTERVAL_S": "0.5"}


@pytest.fixture(scope="module")
def timings(request):
    t = Timings(request.config, "replica convergence, local store, sync interval 0.5 s")
    yield t
    t.report()


@pytest.fixture(scope="module")
def replicas(server_factory, tiny_dir, text_backbone, tmp_path_factory):
    store = tmp_path_factory.mktemp("shared-store")
    bb = tiny_backbones_env(tiny_dir)
    a = server_factory.start(store=store, backbones=bb, env={**SYNC, "TASKSWAP_REPLICA_ID": "a"})
    b = server_factory.start(store=store, backbones=bb, env={**SYNC, "TASKSWAP_REPLICA_ID": "b"},
                             admin_token=a.admin)
    return a, b


def test_register_on_a_is_served_by_b(replicas, text_backbone, tmp_path, timings):
    a, b = replicas
    r = a.register_archive(head_archive(tmp_path / "v1", text_backbone, "greet", seed=1))
    assert r.status_code == 201, r.text
    t0, version = time.monotonic(), r.json()["version"]
    wait_for(lambda: served_version(b, "greet") == version, "B serves the task registered on A")
    timings.add("register on A -> B serves it (lazy load on a miss)", time.monotonic() - t0)
    assert predictions(b, "greet") == predictions(a, "greet")  # same adapter, same answers

    listing = b.get("/adapters").json()
    assert listing["replica_id"] == "b" and listing["generation"] >= 1
    [task] = [t for t in listing["adapters"] if t["name"] == "greet"]
    assert (task["active_version"], task["state"]) == (version, "ready")


def test_new_version_and_rollback_propagate(replicas, text_backbone, tmp_path, timings):
    """Both replicas hold the task already, so no miss: only the watcher can carry this."""
    a, b = replicas
    v1 = a.register_archive(head_archive(tmp_path / "v1", text_backbone, "mood", seed=1)).json()["version"]
    wait_for(lambda: served_version(b, "mood") == v1, "B serves v1")
    old = predictions(b, "mood")

    r = a.register_archive(head_archive(tmp_path / "v2", text_backbone, "mood", seed=2))
    assert r.status_code == 201 and r.json()["previous_version"] == v1
    v2, t0 = r.json()["version"], time.monotonic()
    wait_for(lambda: served_version(b, "mood") == v2, "B follows A's new version")
    timings.add("new version on A -> B serves it (watcher)", time.monotonic() - t0)
    assert predictions(b, "mood") != old  # a different head really answers

    r = b.post("/adapters/mood/activate", admin=True, json={"version": v1[:12]})
    assert r.status_code == 200 and r.json()["active_version"] == v1, r.text
    t0 = time.monotonic()
    wait_for(lambda: served_version(a, "mood") == v1, "A follows B's rollback")
    timings.add("rollback on B -> A serves the old version (watcher)", time.monotonic() - t0)
    assert predictions(a, "mood") == old


def test_delete_propagates(replicas, text_backbone, tmp_path, timings):
    a, b = replicas
    v = a.register_archive(head_archive(tmp_path / "v", text_backbone, "doomed", seed=3)).json()["version"]
    wait_for(lambda: served_version(b, "doomed") == v, "B serves the task")
    r = b.delete("/adapters/doomed", admin=True)
    assert r.status_code == 200, r.text
    t0 = time.monotonic()
    wait_for(lambda: served_version(a, "doomed") is None, "A stops serving the deleted task")
    timings.add("delete on B -> A answers 404 (watcher)", time.monotonic() - t0)
    r = a.predict("doomed", texts=["x"])
    assert r.status_code == 404 and "not registered" in r.json()["message"]
    assert "doomed" not in [t["name"] for t in a.get("/adapters").json()["adapters"]]


def test_lora_registered_on_b_is_served_by_a(replicas, text_backbone, tmp_path, timings):
    a, b = replicas
    folder = peft_lora_dir(tmp_path / "lora", str(text_backbone.source_path), seed=4)
    r = b.register_archive(make_archive(folder, "zip"), name="lora-task", labels=["neg", "pos"])
    assert r.status_code == 201, r.text
    version, t0 = r.json()["version"], time.monotonic()
    wait_for(lambda: served_version(a, "lora-task") == version, "A serves B's LoRA")
    timings.add("LoRA registered on B -> A serves it (lazy load)", time.monotonic() - t0)
    assert predictions(a, "lora-task") == predictions(b, "lora-task")


def test_concurrent_registrations_on_two_replicas_report_a_chain(replicas, text_backbone, tmp_path):
    """Both replicas register the same task at once: each previous_version is the alias its
    own compare-and-swap replaced, so the two answers never name the same version; with
    expected_version, exactly one of two racing admins wins and the other gets a 409."""
    a, b = replicas
    v0 = a.register_archive(head_archive(tmp_path / "v0", text_backbone, "race", seed=0)).json()["version"]
    archives = [head_archive(tmp_path / f"v{i}", text_backbone, "race", seed=i) for i in (1, 2)]
    with ThreadPoolExecutor(2) as pool:
        r1, r2 = pool.map(lambda sa: sa[0].register_archive(sa[1]), zip((a, b), archives))
    assert r1.status_code == r2.status_code == 201, (r1.text, r2.text)
    p1, p2 = r1.json()["previous_version"], r2.json()["previous_version"]
    assert p1 != p2 and v0 in (p1, p2)
    assert {p1, p2} - {v0} <= {r1.json()["version"], r2.json()["version"]}
    # The store's truth: the chain v0 -> X -> Y ends at the version no answer replaced
    # (replica a's own view may lag b's CAS until its watcher syncs).
    (current,) = {r1.json()["version"], r2.json()["version"]} - {p1, p2}

    archives = [head_archive(tmp_path / f"w{i}", text_backbone, "race", seed=i) for i in (3, 4)]
    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(lambda sa: sa[0].register_archive(sa[1], expected_version=current),
                            zip((a, b), archives)))
    assert sorted(r.status_code for r in got) == [201, 409], [r.text for r in got]
    won = next(r for r in got if r.status_code == 201).json()
    lost = next(r for r in got if r.status_code == 409).json()
    assert won["previous_version"] == current and "not the expected" in lost["message"]
    # activate / delete with a stale expected_version: 409, nothing changes; a fresh one works
    r = b.post("/adapters/race/activate", admin=True, json={"version": v0, "expected_version": current})
    assert r.status_code == 409, r.text
    r = b.delete("/adapters/race", admin=True, params={"expected_version": current})
    assert r.status_code == 409, r.text
    r = b.post("/adapters/race/activate", admin=True, json={"version": v0, "expected_version": won["version"]})
    assert r.status_code == 200 and r.json()["active_version"] == v0, r.text
    assert b.delete("/adapters/race", admin=True, params={"expected_version": v0[:12]}).status_code == 200


def test_two_workers_in_one_server_converge(server_factory, tiny_dir, text_backbone, tmp_path, timings):
    """BentoML workers share nothing but the store: a rollback through whichever worker
    takes the request reaches the other worker the same way replicas do."""
    srv = server_factory.start(store=tmp_path / "store", backbones=tiny_backbones_env(tiny_dir),
                               env={**SYNC, "BENTOML_CONFIG_OPTIONS": "services.taskswap.workers=2"})
    v1 = srv.register_archive(head_archive(tmp_path / "v1", text_backbone, "w", seed=1)).json()["version"]
    v2 = srv.register_archive(head_archive(tmp_path / "v2", text_backbone, "w", seed=2)).json()["version"]

    def fresh(method: str, path: str, **kw) -> httpx.Response:
        # A new connection each time: a kept-alive one would stick to one worker.
        return httpx.request(method, f"{srv.url}{path}", headers={"Connection": "close"}, timeout=30, **kw)

    def round_of(n: int, method: str, path: str, **kw) -> list[httpx.Response]:
        # Concurrent, so that while one worker is busy the next connection goes to the
        # other (idle workers do not take turns: one of them may win every accept).
        with ThreadPoolExecutor(n) as pool:
            return list(pool.map(lambda _: fresh(method, path, **kw), range(n)))

    # /readyz is per server, not per worker: wait until both workers answer GET /adapters
    # (a worker still loading answers 503). Its sync is harmless here, nothing is timed yet.
    ready_workers: set[str] = set()

    def both_workers_ready() -> bool:
        ready_workers.update(r.json()["replica_id"] for r in round_of(8, "GET", "/adapters")
                             if r.status_code == 200)
        return len(ready_workers) == 2

    wait_for(both_workers_ready, "both workers ready", timeout_s=90)

    def both_workers_answer(version: str) -> bool:
        """True when a round of 12 concurrent predictions reached both workers (each answer
        names its worker in ``X-Taskswap-Replica``) and every answer came from ``version``."""
        answers = round_of(12, "POST", "/predict", json={"task": "w", "texts": TEXTS})
        workers = {r.headers.get("x-taskswap-replica") for r in answers}
        return workers == ready_workers and all(
            r.status_code == 200 and r.json()["results"][0]["version"] == version for r in answers)

    wait_for(lambda: both_workers_answer(v2), "both workers serve v2", timeout_s=30)
    assert srv.post("/adapters/w/activate", admin=True, json={"version": v1}).status_code == 200
    t0 = time.monotonic()
    # No GET /adapters meanwhile: it syncs the worker it reaches and would hide the lag.
    wait_for(lambda: both_workers_answer(v1), "both workers serve the rollback", timeout_s=15)
    # An upper bound (the end of the first round that reached both workers, all v1);
    # bench/convergence.py measures precisely.
    timings.add("rollback -> both workers of one server serve it", time.monotonic() - t0)
