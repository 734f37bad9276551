"""Registrations run off the serving path (issue #16, item 2).

- the file work (extraction, checks, hashing, the store's fsynced copy) runs on the one
  registration thread, at a lower CPU priority; the dry run's forward runs on the batch
  worker, as an ordinary request, never in a second thread beside it;
- a registration stuck in the store does not hold up predictions, listings or the batcher;
- the registration queue is bounded: past it, 429 with Retry-After, nothing half-written,
  and every queued registration completes once the worker is free again.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from adapters.errors import CapacityError
from adapters.format.archive import make_archive
from support.factories import head_adapter, peft_lora_dir
from support.server import server_factory, tiny_backbones_env  # noqa: F401  (pytest fixture)
from service.registrations import RegistrationQueue


# ---- the queue itself -------------------------------------------------------------------
def test_the_queue_runs_one_at_a_time_on_its_own_low_priority_thread_and_refuses_past_its_bound():
    q = RegistrationQueue(max_waiting=2, niceness=5)
    gate, seen = threading.Event(), []

    def work(i):
        seen.append((i, threading.current_thread().name, threading.get_native_id()))
        gate.wait(10)
        return i

    try:
        running = q.submit(work, 0)
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:  # 0 has started and holds the thread
            time.sleep(0.01)
        waiting = [q.submit(work, i) for i in (1, 2)]
        with pytest.raises(CapacityError) as err:
            q.submit(work, 3)
        assert err.value.retry_after_s >= 1 and "TASKSWAP_REGISTER_MAX_QUEUED" in err.value.message
        assert q.stats()["refused"] == 1 and q.stats()["waiting"] == 2
        gate.set()
        assert [f.result(timeout=10) for f in [running, *waiting]] == [0, 1, 2]
        names = {name for _, name, _ in seen}
        tids = {tid for _, _, tid in seen}
        assert names == {"taskswap-register"} and len(tids) == 1  # one thread, not the caller's
        assert threading.get_native_id() not in tids
        me = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        assert q.stats()["thread"]["niceness"] == me + 5  # per-thread nice (Linux)
        assert q.submit(work, 4).result(timeout=10) == 4  # room again once drained
    finally:
        gate.set()
        q.close()


# ---- in process: which thread does what -------------------------------------------------
@pytest.fixture
def engine(tmp_path, tiny_dir, text_backbone, vision_backbone):
    from service.engine import Engine
    from service.settings import Settings
    settings = Settings(store=str(tmp_path / "store"), backbones=tiny_backbones_env(tiny_dir),
                        admin_token="a" * 16, torch_threads=1, sync_interval_s=60)
    eng = Engine(settings)
    eng.start()
    assert eng.ready, eng.error
    yield eng
    eng.close()


def test_file_work_runs_on_the_registration_thread_and_the_dry_run_on_the_batch_worker(
        engine, tmp_path, text_backbone, tiny_dir):
    bb = engine.backbones["text"]
    forwards: list[str] = []
    hook = bb.model.register_forward_hook(lambda *_: forwards.append(threading.current_thread().name))
    stored: list[str] = []
    put_version = engine.registry.store.put_version

    def recording_put_version(*a, **kw):
        stored.append(threading.current_thread().name)
        return put_version(*a, **kw)

    engine.registry.store.put_version = recording_put_version
    try:
        head = make_archive(head_adapter(tmp_path / "h", text_backbone, "h"))
        lora = make_archive(peft_lora_dir(tmp_path / "l", str(tiny_dir / "text")))
        for args in [(head, None, None, None), (lora, "l", ["neg", "pos"], None)]:
            loaded, previous = engine.submit_registration(engine.register_archive, *args).result(60)
            assert previous is None and loaded.version
    finally:
        hook.remove()
        engine.registry.store.put_version = put_version
    assert stored == ["taskswap-register"] * 2
    assert forwards and set(forwards) == {"taskswap-batcher"}, forwards  # both dry runs, no other thread
    assert engine.registrations.stats()["thread"]["name"] == "taskswap-register"
    _, results = asyncio.run(engine.predict(["h", "l"], ["a good film"], "text"))
    assert [r.task for r in results] == ["h", "l"]
    # a further head's dry run reuses the probes' pooled features: no forward pass at all
    before = len(forwards)
    hook = bb.model.register_forward_hook(lambda *_: forwards.append(threading.current_thread().name))
    try:
        more = make_archive(head_adapter(tmp_path / "h2", text_backbone, "h2", seed=2))
        engine.submit_registration(engine.register_archive, more, None, None, None).result(60)
    finally:
        hook.remove()
    assert len(forwards) == before


def test_a_heads_dry_run_on_cached_probe_features_scores_what_a_batch_does(engine, tmp_path, text_backbone):
    from adapters.dryrun import probe_features, probe_inputs
    from adapters.runtime import score_alone
    archive = make_archive(head_adapter(tmp_path / "e", text_backbone, "e", seed=3, hidden=(8,)))
    loaded, _ = engine.submit_registration(engine.register_archive, archive, None, None, None).result(60)
    bb = engine.backbones["text"]
    cached = score_alone(loaded, probe_features(bb, loaded.task.needs(loaded.manifest), engine._run_probe))
    _, served = asyncio.run(engine.predict(["e"], probe_inputs(bb), "text"))
    for a, b in zip(cached.rows, served[0].rows):
        assert a["label"] == b["label"]
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-5)


def test_a_registration_stuck_in_the_store_holds_up_no_prediction(engine, tmp_path, text_backbone):
    first = make_archive(head_adapter(tmp_path / "a", text_backbone, "a"))
    engine.submit_registration(engine.register_archive, first, None, None, None).result(60)
    gate, entered = threading.Event(), threading.Event()
    publish = engine.registry.store.publish

    def stuck_publish(*a, **kw):  # the store's compare-and-swap (fsyncs, a conditional put) is slow
        entered.set()
        gate.wait(30)
        return publish(*a, **kw)

    engine.registry.store.publish = stuck_publish
    try:
        job = engine.submit_registration(
            engine.register_archive, make_archive(head_adapter(tmp_path / "b", text_backbone, "b", seed=1)),
            None, None, None)
        assert entered.wait(30)
        for _ in range(3):  # the batch worker, its metrics and the request path take no lock it holds
            _, results = asyncio.run(engine.predict(["a"], ["fine", "awful"], "text"))
            assert len(results[0].rows) == 2
        assert [t["name"] for t in engine.page(None, 0, None)[1]] == ["a"]  # listing does not wait either
        assert not job.done()
    finally:
        gate.set()
        engine.registry.store.publish = publish
    assert job.result(60)[0].name == "b"
    assert [t["name"] for t in engine.page(None, 0, None)[1]] == ["a", "b"]


# ---- over HTTP: 429 when the registration worker is saturated ---------------------------
def _metric(srv, name: str) -> float | None:
    m = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", srv.get("/metrics").text, re.M)
    return float(m.group(1)) if m else None


def _wait_for_metric(srv, name: str, value: float, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while _metric(srv, name) != value:
        assert time.monotonic() < deadline, f"{name} never reached {value} (now {_metric(srv, name)})"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def srv(server_factory, tiny_dir, tmp_path_factory):
    store = tmp_path_factory.mktemp("offpath") / "store"
    return server_factory.start(store=store, backbones=tiny_backbones_env(tiny_dir),
                                env={"TASKSWAP_REGISTER_MAX_QUEUED": "1", "TASKSWAP_TORCH_THREADS": "1"})


def test_a_saturated_registration_worker_answers_429_with_retry_after_and_loses_nothing(
        srv, tmp_path, text_backbone):
    assert srv.register_archive(make_archive(head_adapter(tmp_path / "base", text_backbone, "base"))
                                ).status_code == 201
    archives = [make_archive(head_adapter(tmp_path / f"q{i}", text_backbone, f"q{i}", seed=i))
                for i in range(3)]
    lock = open(Path(srv.store) / ".lock", "a+")
    fcntl.flock(lock, fcntl.LOCK_EX)  # the store's alias lock: the first registration stops at its publish
    try:
        with ThreadPoolExecutor(2) as pool:
            running = pool.submit(srv.register_archive, archives[0])
            _wait_for_metric(srv, "taskswap_registrations_waiting", 1)  # q0 holds the thread
            waiting = pool.submit(srv.register_archive, archives[1])
            _wait_for_metric(srv, "taskswap_registrations_waiting", 2)  # q1 fills the queue
            refused = srv.register_archive(archives[2])
            assert refused.status_code == 429, refused.text
            assert int(refused.headers["Retry-After"]) >= 1
            assert "TASKSWAP_REGISTER_MAX_QUEUED" in refused.json()["message"]
            assert _metric(srv, "taskswap_registrations_refused_total") == 1
            # serving and reading go on while the worker is stuck
            assert srv.predict("base", texts=["good", "bad"]).status_code == 200
            assert srv.get("/adapters").status_code == 200
            assert not running.done() and not waiting.done()
            fcntl.flock(lock, fcntl.LOCK_UN)
            assert running.result(60).status_code == 201
            assert waiting.result(60).status_code == 201
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()
    assert srv.register_archive(archives[2]).status_code == 201  # room again
    names = sorted(a["name"] for a in srv.get("/adapters").json()["adapters"])
    assert names == ["base", "q0", "q1", "q2"]
    for n in names:
        assert srv.predict(n, texts=["ok"]).status_code == 200
    assert srv.internal_errors() == []
