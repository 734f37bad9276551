"""Rollouts in the core: canary routing, shadow statistics, policies on the task table's
rows (taken in from the store by the follower, applied only while their candidate is a
stored, non-active version), candidates set through the registry's lifecycle and shadow
rows in the runtime (same scores as the candidate run on its own), and the policy
documents in both stores (local folder and S3 on moto)."""

from __future__ import annotations

import threading

import pytest
import torch

from adapters.errors import NotFound
from adapters.rollout import RolloutPolicy
from adapters.shadow import MAX_CONFUSION_LABELS, ShadowStats
from adapters.runtime import Runtime
from support.factories import head_adapter, peft_lora_dir
from support.s3 import moto_s3  # noqa: F401  (session fixture)
from support.store_fixtures import adapter, info, kind, make_store, register, store  # noqa: F401 (fixtures)

TEXTS = ["good", "a great movie", "the plot was awful and boring", "fine fine fine fine fine fine"]


def policy(fraction=0.3, mode="canary", candidate="c" * 64, task="t"):
    return RolloutPolicy(task=task, candidate=candidate.replace("c", "a"), mode=mode, fraction=fraction,
                         updated_at="2026-01-01T00:00:00+00:00")


# ---- routing -------------------------------------------------------------------------
def test_canary_routing_is_sticky_and_close_to_the_fraction():
    p = policy(0.3)
    keys = [f"user-{i}" for i in range(20_000)]
    chosen = {k for k in keys if p.serves_candidate(k)}
    assert all(p.serves_candidate(k) == (k in chosen) for k in keys[:500])  # sticky
    sigma = (0.3 * 0.7 / len(keys)) ** 0.5
    assert abs(len(chosen) / len(keys) - 0.3) < 5 * sigma
    # raising the fraction only adds callers: nobody on the candidate is moved back
    wider = policy(0.6)
    assert chosen <= {k for k in keys if wider.serves_candidate(k)}


def test_routing_without_a_key_draws_per_request_and_shadow_never_serves():
    p = policy(0.25)
    assert p.serves_candidate(None, draw=0.2) and not p.serves_candidate(None, draw=0.3)
    assert not policy(0.0).serves_candidate("k")
    assert not policy(mode="shadow").serves_candidate("k")


def test_shadow_stats_bound_the_confusion_matrix():
    s = ShadowStats("t", "a" * 64, "b" * 64)
    active = [(f"l{i}", 0.9) for i in range(30)]
    s.observe(active, [(f"l{i}", 0.8) for i in range(30)], 0.01, 30)
    r = s.report()
    assert r["rows"] == 30 and r["agreement"] == 1.0
    assert r["mean_abs_delta_top_score"] == pytest.approx(0.1)
    assert len(r["confusion"]) == MAX_CONFUSION_LABELS + 1 and r["confusion"]["other"] == {"other": 10}
    assert r["extra_trunk_rows"] == 30 and r["added_seconds_per_row"] == pytest.approx(0.01 / 30)


# ---- policies on the table's rows, from the store --------------------------------------
def test_the_table_ignores_a_policy_whose_candidate_is_active_or_unknown_or_damaged(tmp_path, registry,
                                                                                     text_backbone):
    """Policy documents written into the store (as another replica would) reach each task's
    row through the follower; one applies only while its candidate is a stored, non-active
    version, and a damaged one is ignored, so the task serves without it."""
    versions = {}
    for t in ("t1", "t2", "t3", "t4"):
        v1 = registry.register(head_adapter(tmp_path / f"{t}-1", text_backbone, t, seed=1)).version
        v2 = registry.register(head_adapter(tmp_path / f"{t}-2", text_backbone, t, seed=2), activate=False).version
        versions[t] = (v1, v2)

    def doc(t, candidate):
        return RolloutPolicy(task=t, candidate=candidate, mode="shadow", updated_at="2026-01-01T00:00:00+00:00")

    docs = {"t1": doc("t1", versions["t1"][1]).model_dump(),
            "t2": doc("t2", versions["t2"][0]).model_dump(),  # already active (a promote cut short)
            "t3": doc("t3", "d" * 64).model_dump(),            # not in the task's history
            "t4": {"task": "t4", "mode": "sideways"}}            # damaged
    for t, d in docs.items():
        registry.store.update_rollout(t, lambda _old, d=d: d)
    assert registry.sync()
    assert registry.policy("t1").candidate == versions["t1"][1]
    assert registry.policy("t2") is None and registry.policy("t3") is None and registry.policy("t4") is None
    assert registry.table.get("t3").policy is not None  # kept on the row as the store says, not applied
    # the runtime asks the registry: only t1 gets a shadow scorer
    rt = Runtime(registry)
    prepared = rt.prepare(["t1", "t2", "t3", "t4"], TEXTS[:1], "text", rollout=registry)
    assert [s.version if s is not None else None for s in prepared.shadows] == [versions["t1"][1], None, None, None]


# ---- registry candidates and runtime shadow rows -------------------------------------
def scores(result):
    return torch.tensor([[r.scores[lab] for lab in sorted(r.scores)] for r in result.rows])


def test_head_candidate_scores_the_same_rows_without_answering(tmp_path, registry, text_backbone):
    v1 = registry.register(head_adapter(tmp_path / "a", text_backbone, "t", seed=1)).version
    v2 = registry.register(head_adapter(tmp_path / "b", text_backbone, "t", seed=2), activate=False).version
    assert registry.resolve("t").version == v1  # the candidate is stored, not active
    assert [v.version for v in registry.store.get_alias("t").versions] == [v1, v2]
    rt = Runtime(registry)
    registry.set_candidate("t", v2, "shadow", 0.0)
    prepared = rt.prepare(["t"], TEXTS, "text", rollout=registry)
    assert prepared.rows == len(TEXTS)  # a head candidate costs no trunk row
    (res,) = rt.run([prepared])[0]
    assert res.version == v1 and res.shadow.result.version == v2 and res.shadow.extra_trunk_rows == 0
    # equivalence: the shadow scores are what the candidate gives when it answers itself
    registry.activate("t", v2)
    (alone,) = rt.run([rt.prepare(["t"], TEXTS, "text")])[0]
    assert alone.version == v2
    assert torch.allclose(scores(res.shadow.result), scores(alone), atol=1e-6)


def test_lora_candidate_costs_extra_rows_and_matches_its_own_scores(tmp_path, registry, text_backbone):
    src = str(text_backbone.source_path)
    v1 = registry.register(peft_lora_dir(tmp_path / "a", src, seed=1), name="l", labels=["neg", "pos"]).version
    v2 = registry.register(peft_lora_dir(tmp_path / "b", src, seed=2), name="l", labels=["neg", "pos"],
                           activate=False).version
    registry.register(head_adapter(tmp_path / "h", text_backbone, "h"))
    rt = Runtime(registry)
    registry.set_candidate("l", v2, "shadow", 0.0)
    prepared = rt.prepare(["l", "h"], TEXTS, "text", rollout=registry)
    assert prepared.rows == 3 * len(TEXTS)  # head rows + active LoRA rows + candidate LoRA rows
    res_l, res_h = rt.run([prepared])[0]
    assert res_l.version == v1 and res_l.shadow.extra_trunk_rows == len(TEXTS) and res_h.shadow is None
    registry.activate("l", v2)
    (alone,) = rt.run([rt.prepare(["l"], TEXTS, "text")])[0]
    assert torch.allclose(scores(res_l.shadow.result), scores(alone), atol=1e-5)


def test_canary_pins_the_candidate_for_its_share_of_keys(tmp_path, registry, text_backbone):
    v1 = registry.register(head_adapter(tmp_path / "a", text_backbone, "t", seed=1)).version
    v2 = registry.register(head_adapter(tmp_path / "b", text_backbone, "t", seed=2), activate=False).version
    p = registry.set_candidate("t", v2, "canary", 0.5)
    assert registry.policy("t") == p
    rt = Runtime(registry)
    for key in (f"k{i}" for i in range(40)):
        prepared = rt.prepare(["t"], TEXTS[:1], "text", rollout=registry, routing_key=key)
        want = (v2, "canary") if p.serves_candidate(key) else (v1, "active")
        assert (prepared.adapters[0].version, prepared.roles[0]) == want
        (res,) = rt.run([prepared])[0]
        assert (res.version, res.role) == want


# ---- the policy documents in both stores ---------------------------------------------
def test_add_version_keeps_the_active_one(store, adapter):
    v1 = register(store, adapter(1))
    v2 = store.put_version("sentiment", adapter(2))
    alias = store.add_version("sentiment", v2, info(v2))
    assert alias.active == v1 and [v.version for v in alias.versions] == [v1, v2]
    assert store.get_alias("sentiment").active == v1
    v3 = store.put_version("other", adapter(3, "other"))
    with pytest.raises(NotFound, match="active version"):
        store.add_version("other", v3, info(v3))


def test_rollout_documents_are_atomic_shared_and_bump_the_generation(make_store, adapter):
    a, b = make_store(), make_store()
    register(a, adapter(1))
    gen = a.generation()
    doc = policy(task="sentiment").model_dump()
    assert a.update_rollout("sentiment", lambda old: doc) == doc
    assert a.generation() > gen
    assert b.get_rollout("sentiment") == doc and b.list_rollouts(["sentiment", "x"]) == {"sentiment": doc}
    with pytest.raises(NotFound):
        a.update_rollout("nosuchtask", lambda old: doc)

    def bump(n):  # concurrent read-modify-writes from two handles lose no update
        for _ in range(n):
            (a if threading.current_thread().name.endswith("0") else b).update_rollout(
                "sentiment", lambda old: {**old, "count": old.get("count", 0) + 1})
    threads = [threading.Thread(target=bump, args=(5,), name=f"w{i}") for i in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert a.get_rollout("sentiment")["count"] == 10
    assert b.update_rollout("sentiment", lambda old: None) is None
    assert a.get_rollout("sentiment") is None


def test_job_records(make_store):
    a, b = make_store(), make_store()
    a.put_job("f" * 32, {"status": "running"})
    assert b.get_job("f" * 32) == {"status": "running"} and b.get_job("e" * 32) is None
    with pytest.raises(NotFound):
        a.get_job("../../etc/passwd")


# ---- fit-job leases in both stores ------------------------------------------------------
def test_a_job_whose_lease_ran_out_is_failed_and_its_stalled_owner_stands_down(store):
    from datetime import datetime, timedelta, timezone

    from service.jobs import JobRunner
    owner = JobRunner(store, "a", finish=None, lease_s=5, start=False)
    reader = JobRunner(store, "b", finish=None, lease_s=60, start=False)  # the record's lease rules
    job_id = owner.submit("t", "active", {}, 4)["id"]
    job = owner._jobs[job_id]
    owner._update(job, status="running", phase="fitting")
    assert reader.get(job_id)["status"] == "running"  # renewed just now
    owner._beat(job)
    assert reader.get(job_id)["status"] == "running"

    owner._update(job, heartbeat_at=(datetime.now(timezone.utc) - timedelta(seconds=6)).isoformat())
    judged = reader.get(job_id)  # 6 s without a renewal, lease 5 s: its worker is gone
    assert judged["status"] == "failed" and judged["phase"] == "done"
    assert judged["error"]["error"] == "WorkerLost" and "(a)" in judged["error"]["message"]
    assert store.get_job(job_id) == judged  # written to the store, for every replica
    assert reader.get(job_id) == judged  # a final record is not judged again

    owner._beat(job)  # the owner was only stalled: its next renewal finds the mark
    assert job.lost and job.record == judged and owner.get(job_id) == judged
    owner._update(job, status="succeeded", phase="done")  # ...and its own outcome is dropped
    assert store.get_job(job_id) == judged

    old = {**judged, "status": "running", "id": "f" * 32}  # a record written before leases existed
    del old["heartbeat_at"], old["lease_s"]
    store.put_job(old["id"], old)
    assert reader.get(old["id"])["status"] == "running"


def test_finished_jobs_leave_the_workers_memory_and_are_read_from_the_store(store):
    from service.jobs import JobRunner
    runner = JobRunner(store, "a", finish=None, start=False, max_queued=10, keep_finished=2)
    ids = [runner.submit("t", "active", {}, 4)["id"] for _ in range(5)]
    for job_id in ids[:4]:
        runner._update(runner._jobs[job_id], status="succeeded", phase="done")
    runner._forget_finished()
    assert set(runner._jobs) == set(ids[2:])  # the two newest finished ones and the queued one
    for job_id in ids:  # every record still answers: the forgotten ones from the store
        assert runner.get(job_id)["status"] == ("queued" if job_id == ids[4] else "succeeded")
