"""Concurrency over real HTTP: batching across tasks, atomic hot swap, replicas, restarts.

- Concurrent requests for different tasks (merged into shared batches) give the same
  scores as the same requests one at a time.
- Hot swap: several threads predict in a bounded loop while another thread registers,
  activates and deletes versions; every answer is entirely one version's (its version
  id and its scores agree), and no request for an existing task fails.
- A second replica on the same store serves what the first registers, and follows its
  rollbacks and deletions; a restarted server still has every adapter and active version;
  with no admin token configured, admin calls are refused.
"""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from support.factories import head_adapter, peft_lora_dir, peft_seq_cls_model
from support.http_helpers import TEXTS, expected_head_scores, peft_scores, predict_ok, register_ok, scores_of
from support.server import server_factory, tiny_backbones_env  # noqa: F401  (pytest fixture)

pytestmark = pytest.mark.server

PAIRS = [TEXTS[:2], TEXTS[2:], TEXTS[1:3], TEXTS[:1]]


@pytest.fixture(scope="module")
def srv(server_factory, tiny_dir, tmp_path_factory):
    # A longer batching window so concurrent requests surely meet in one batch.
    return server_factory.start(store=tmp_path_factory.mktemp("store"),
                                backbones=tiny_backbones_env(tiny_dir),
                                env={"TASKSWAP_MAX_WAIT_MS": "30"})


def batch_counters(srv) -> tuple[float, float]:
    """(requests summed over batches, number of batches) from /metrics."""
    lines = dict(line.rsplit(" ", 1) for line in srv.get("/metrics").text.splitlines()
                 if line.startswith("taskswap_batch_requests_"))
    return float(lines.get("taskswap_batch_requests_sum", 0)), float(lines.get("taskswap_batch_requests_count", 0))


def test_concurrent_mixed_tasks_equal_one_at_a_time(srv, tmp_path, text_backbone):
    src = str(text_backbone.source_path)
    register_ok(srv, head_adapter(tmp_path / "h1", text_backbone, "eq-h1", seed=1))
    register_ok(srv, head_adapter(tmp_path / "h2", text_backbone, "eq-h2", labels=("a", "b", "c"),
                                  seed=2, hidden=(16,)))
    register_ok(srv, peft_lora_dir(tmp_path / "l1", src, seed=3), name="eq-l1")
    register_ok(srv, peft_lora_dir(tmp_path / "l2", src, seed=4, r=8), name="eq-l2")
    task_sets = [["eq-h1"], ["eq-l1"], ["eq-h2", "eq-l2"], ["eq-l2", "eq-h1", "eq-l1"], ["eq-h2"]]
    calls = [(tasks, texts) for tasks, texts in itertools.product(task_sets, PAIRS)]
    sequential = [predict_ok(srv, tasks, texts=texts) for tasks, texts in calls]

    local = threading.local()

    def call(c):
        if not hasattr(local, "client"):
            local.client = srv.new_client()
        r = local.client.post("/predict", json={"tasks": c[0], "texts": c[1]})
        assert r.status_code == 200, r.text
        return r.json()

    before = batch_counters(srv)
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(call, calls))
    after = batch_counters(srv)

    for seq, con in zip(sequential, concurrent):
        assert [r["task"] for r in con["results"]] == [r["task"] for r in seq["results"]]
        for a, b in zip(seq["results"], con["results"]):
            assert a["version"] == b["version"]
            assert torch.allclose(scores_of(a), scores_of(b), atol=1e-5), a["task"]
    requests, batches = after[0] - before[0], after[1] - before[1]
    assert requests == len(calls)
    assert batches < requests, "concurrent requests were never merged into one batch"


def test_hot_swap_is_atomic_under_load(srv, tmp_path, text_backbone):
    src = str(text_backbone.source_path)
    a_dir = head_adapter(tmp_path / "a", text_backbone, "swap", seed=31)
    b_dir = head_adapter(tmp_path / "b", text_backbone, "swap", seed=32)
    la_dir = peft_lora_dir(tmp_path / "la", src, seed=41)
    lb_dir = peft_lora_dir(tmp_path / "lb", src, seed=42)
    churn_dir = head_adapter(tmp_path / "c", text_backbone, "churn", seed=5)
    ver = {"A": register_ok(srv, a_dir)["version"],
           "LA": register_ok(srv, la_dir, name="swap-lora")["version"]}
    # Reference scores per version, computed in-process (never by the server).
    ref_by_dir = {"A": [expected_head_scores(a_dir, text_backbone, t) for t in PAIRS],
                  "B": [expected_head_scores(b_dir, text_backbone, t) for t in PAIRS]}
    for key, seed in (("LA", 41), ("LB", 42)):
        model = peft_seq_cls_model(src, 2, seed=seed)
        ref_by_dir[key] = [peft_scores(model, text_backbone, t) for t in PAIRS]
    for x, y, tol in (("A", "B", 1e-5), ("LA", "LB", 1e-4)):  # each pair is told apart by far
        assert min((p - q).abs().max() for p, q in zip(ref_by_dir[x], ref_by_dir[y])) > 100 * tol

    answers: list[tuple[list[str], int, int, dict]] = []  # (tasks, pair index, status, body)
    done = threading.Event()
    deadline = time.monotonic() + 240

    def predictor(worker: int) -> None:
        choices = [["swap"], ["swap-lora"], ["swap", "swap-lora"], ["swap-lora", "swap"]]
        with srv.new_client() as client:  # one connection pool per thread
            for i in range(150):  # bounded in count and in time
                if done.is_set() or time.monotonic() > deadline:
                    return
                tasks, pair = choices[(worker + i) % 4], (worker * 7 + i) % len(PAIRS)
                r = client.post("/predict", json={"tasks": tasks, "texts": PAIRS[pair]})
                answers.append((tasks, pair, r.status_code, r.json()))  # list.append is atomic

    def settle(n: int = 4) -> None:
        """Let the predictors answer a few more requests under the current state."""
        target = len(answers) + n
        while len(answers) < target and time.monotonic() < deadline and not done.is_set():
            time.sleep(0.02)

    def admin() -> None:
        try:
            settle()
            ver["B"] = register_ok(srv, b_dir)["version"]
            ver["LB"] = register_ok(srv, lb_dir, name="swap-lora")["version"]
            settle()
            for _ in range(4):
                for name, key in (("swap", "A"), ("swap-lora", "LA"), ("swap", "B"), ("swap-lora", "LB")):
                    r = srv.post(f"/adapters/{name}/activate", admin=True, json={"version": ver[key]})
                    assert r.status_code == 200, r.text
                    settle(2)
                register_ok(srv, churn_dir)
                assert register_ok(srv, b_dir)["version"] == ver["B"]  # same bytes: same version
                assert srv.delete("/adapters/churn", admin=True).status_code == 200
                settle(2)
        finally:
            done.set()

    threads = [threading.Thread(target=predictor, args=(w,)) for w in range(4)]
    admin_thread = threading.Thread(target=admin)
    for t in [*threads, admin_thread]:
        t.start()
    for t in [*threads, admin_thread]:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in [*threads, admin_thread])
    assert "B" in ver and "LB" in ver, "the admin thread failed; see the assertion above"

    versions = {"swap": {ver["A"]: "A", ver["B"]: "B"}, "swap-lora": {ver["LA"]: "LA", ver["LB"]: "LB"}}
    seen = {"swap": set(), "swap-lora": set()}
    failures = [(tasks, status, body) for tasks, _, status, body in answers if status != 200]
    assert failures == [], failures[:3]
    for tasks, pair, _, body in answers:
        assert [r["task"] for r in body["results"]] == tasks
        for res in body["results"]:
            key = versions[res["task"]].get(res["version"])
            assert key is not None, f"{res['task']} answered by unknown version {res['version']}"
            seen[res["task"]].add(key)
            tol = 1e-5 if res["kind"] == "head" else 1e-4
            assert torch.allclose(scores_of(res), ref_by_dir[key][pair], atol=tol), (res["task"], key)
    assert len(answers) >= 40
    assert seen == {"swap": {"A", "B"}, "swap-lora": {"LA", "LB"}}, seen


def test_second_replica_follows_the_store(srv, server_factory, tiny_dir, tmp_path, text_backbone):
    other = server_factory.start(store=srv.store, backbones=tiny_backbones_env(tiny_dir),
                                 admin_token=srv.admin)
    try:
        v1_dir = head_adapter(tmp_path / "r1", text_backbone, "replicated", seed=51)
        v2_dir = head_adapter(tmp_path / "r2", text_backbone, "replicated", seed=52)
        v1 = register_ok(srv, v1_dir)["version"]
        # A miss on the other replica syncs with the store at once.
        (res,) = predict_ok(other, "replicated", texts=TEXTS)["results"]
        assert res["version"] == v1
        assert torch.allclose(scores_of(res), expected_head_scores(v1_dir, text_backbone, TEXTS), atol=1e-5)
        v2 = register_ok(other, v2_dir)["version"]

        def converged(server, task, version, timeout_s=20) -> bool:
            end = time.monotonic() + timeout_s
            while time.monotonic() < end:
                r = server.predict(task, texts=TEXTS[:1])
                got = r.json()["results"][0]["version"] if r.status_code == 200 else r.status_code
                if got == version:
                    return True
                time.sleep(0.2)
            return False

        assert converged(srv, "replicated", v2)  # registered on the other replica
        assert srv.post("/adapters/replicated/activate", admin=True, json={"version": v1}).status_code == 200
        assert converged(other, "replicated", v1)  # rollback followed by the watcher
        assert srv.delete("/adapters/replicated", admin=True).status_code == 200
        assert converged(other, "replicated", 404)  # deletion followed too
        assert other.get("/adapters").json()["replica_id"] != srv.get("/adapters").json()["replica_id"]
    finally:
        other.stop()


def test_restart_keeps_adapters_and_active_versions(srv, tmp_path, text_backbone):
    src = str(text_backbone.source_path)
    k1 = register_ok(srv, head_adapter(tmp_path / "k1", text_backbone, "keep", seed=61))["version"]
    register_ok(srv, head_adapter(tmp_path / "k2", text_backbone, "keep", seed=62))
    assert srv.post("/adapters/keep/activate", admin=True, json={"version": k1}).status_code == 200
    register_ok(srv, peft_lora_dir(tmp_path / "kl", src, seed=63), name="keep-lora", labels=["no", "yes"])
    before = {a["name"]: a for a in srv.get("/adapters").json()["adapters"]}
    answers = {t: predict_ok(srv, t, texts=TEXTS)["results"][0] for t in before}

    srv.restart()

    after = {a["name"]: a for a in srv.get("/adapters").json()["adapters"]}
    assert set(after) == set(before)
    for name, info in before.items():
        for field in ("active_version", "versions", "kind", "labels"):
            assert after[name][field] == info[field], (name, field)
    assert after["keep"]["active_version"] == k1
    for task, res in answers.items():
        (again,) = predict_ok(srv, task, texts=TEXTS)["results"]
        assert again["version"] == res["version"]
        assert torch.allclose(scores_of(again), scores_of(res), atol=1e-5), task


def test_without_admin_token_admin_calls_are_refused(srv, tmp_path, text_backbone):
    token = srv.admin
    srv.admin = None  # restart with no TASKSWAP_ADMIN_TOKEN at all
    try:
        srv.restart()
        r = srv.delete("/adapters/keep", token=token)
        assert r.status_code == 403 and "TASKSWAP_ADMIN_TOKEN" in r.json()["message"]
        folder = head_adapter(tmp_path / "x", text_backbone, "nope", seed=1)
        from adapters.format.archive import make_archive
        r = srv.post("/adapters", token=token, files={"file": ("a.zip", make_archive(folder))})
        assert r.status_code == 403 and "TASKSWAP_ADMIN_TOKEN" in r.json()["message"]
        # Reading and predicting stay open (no inference token configured).
        assert srv.get("/adapters").status_code == 200
        assert "nope" not in {a["name"] for a in srv.get("/adapters").json()["adapters"]}
        assert srv.internal_errors() == []
    finally:
        srv.admin = token
