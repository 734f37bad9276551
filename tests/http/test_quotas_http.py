"""Namespace quotas over real HTTP (issue 32, item 3), on the default namespace (bare task
names; quotas apply to it like to any other): the admin API, each size quota a 403 naming
the quota and its numbers with nothing half-registered, rate quotas a 429 with Retry-After,
and the per-namespace Prometheus series on /metrics."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from adapters.format.archive import make_archive
from adapters.store import open_store
from service.job_slots import slots_key
from support.factories import head_adapter, peft_lora_dir
from support.http_helpers import assert_error, register_ok, wait_for_job
from support.replica_helpers import wait_for
from support.server import server_factory, tiny_backbones_env  # noqa: F401  (pytest fixture)

pytestmark = pytest.mark.server
QUOTA = "/admin/namespaces/default/quota"


@pytest.fixture(scope="module")
def srv(server_factory, tiny_dir, tmp_path_factory, text_backbone):
    s = server_factory.start(store=tmp_path_factory.mktemp("store"), backbones=tiny_backbones_env(tiny_dir),
                             env={"TASKSWAP_QUOTA_TTL_S": "0.2", "TASKSWAP_SYNC_INTERVAL_S": "0.1"})
    root = tmp_path_factory.mktemp("adapters")
    register_ok(s, head_adapter(root / "base", text_backbone, "base"))
    return s


@pytest.fixture
def quota(srv):
    """PUT the default namespace's quota; cleared after the test."""
    def put(**fields) -> dict:
        r = srv.request("PUT", QUOTA, admin=True, json=fields)
        assert r.status_code == 200, r.text
        return r.json()
    yield put
    assert srv.delete(QUOTA, admin=True).status_code == 200


def usage(srv) -> dict:
    """The default namespace's usage (set with a quota of no limits if it has none)."""
    r = srv.get(QUOTA, admin=True)
    if r.status_code == 404:
        r = srv.request("PUT", QUOTA, admin=True, json={})
    assert r.status_code == 200, r.text
    return r.json()["usage"]


def stored_versions(srv, task: str) -> list[str]:
    folder = Path(srv.store) / "tasks" / task / "versions"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_admin_api_sets_reads_and_clears_a_quota(srv):
    assert srv.get(QUOTA).status_code == 401  # admin only
    srv.delete(QUOTA, admin=True)  # none left by another test
    assert_error(srv.get(QUOTA, admin=True), 404, "no quota", "PUT")  # none: no limits, weight 1
    r = srv.request("PUT", QUOTA, admin=True, json={})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["stored"] is True and body["quota"]["max_tasks"] is None and body["quota"]["weight"] == 1
    assert body["usage"]["tasks"] >= 1 and body["usage"]["stored_bytes"] > 0
    r = srv.request("PUT", QUOTA, admin=True, json={"max_tasks": 10, "requests_per_s": 50, "weight": 2})
    assert r.status_code == 200, r.text
    assert r.json()["quota"]["max_tasks"] == 10 and r.json()["stored"] is True
    got = srv.get(QUOTA, admin=True).json()
    assert got["quota"]["requests_per_s"] == 50 and got["quota"]["weight"] == 2
    # bad input: a 4xx naming the problem
    assert_error(srv.request("PUT", QUOTA, admin=True, json={"max_tasks": -1}), 422, "max_tasks")
    assert_error(srv.request("PUT", QUOTA, admin=True, json={"max_taks": 3}), 422, "max_taks")
    assert_error(srv.request("PUT", QUOTA, admin=True, json={"weight": 0}), 422, "weight")
    assert_error(srv.request("PUT", QUOTA, admin=True, json={"max_jobs": False}), 422, "max_jobs")
    assert_error(srv.request("PUT", "/admin/namespaces/Bad.Name!/quota", admin=True, json={}), 400, "namespace")
    r = srv.delete(QUOTA, admin=True)
    assert r.status_code == 200 and r.json()["stored"] is False
    assert srv.get(QUOTA, admin=True).status_code == 404
    assert srv.delete(QUOTA, admin=True).status_code == 404
    assert srv.internal_errors() == []


def test_max_tasks_refuses_a_new_task_and_writes_nothing(srv, quota, text_backbone, tmp_path):
    tasks = usage(srv)["tasks"]
    quota(max_tasks=tasks + 1)
    register_ok(srv, head_adapter(tmp_path / "t1", text_backbone, "quota-t1"))
    r = srv.register_archive(make_archive(head_adapter(tmp_path / "t2", text_backbone, "quota-t2")))
    assert_error(r, 403, "max_tasks", f"{tasks + 1} tasks of {tasks + 1}", "quota-t2")
    assert r.json()["error"] == "quota_exceeded"
    assert srv.get("/adapters/quota-t2").status_code == 404
    assert stored_versions(srv, "quota-t2") == []  # nothing half-registered
    # a new version of a task the namespace holds is no new task
    register_ok(srv, head_adapter(tmp_path / "t1b", text_backbone, "quota-t1", seed=7))
    assert usage(srv)["tasks"] == tasks + 1


def test_max_stored_bytes_refuses_a_version_and_keeps_the_active_one(srv, quota, text_backbone, tmp_path):
    before = srv.get("/adapters/base").json()["active_version"]
    versions = stored_versions(srv, "base")
    stored = usage(srv)["stored_bytes"]
    quota(max_stored_bytes=stored + 10)
    r = srv.register_archive(make_archive(head_adapter(tmp_path / "b2", text_backbone, "base", seed=3)))
    body = assert_error(r, 403, "max_stored_bytes", f"{stored} bytes stored", str(stored + 10))
    assert "base" in body["message"]
    assert srv.get("/adapters/base").json()["active_version"] == before
    assert stored_versions(srv, "base") == versions
    quota(max_stored_bytes=stored * 10)  # room again: the same registration passes
    register_ok(srv, head_adapter(tmp_path / "b3", text_backbone, "base", seed=3))
    assert usage(srv)["stored_bytes"] > stored


def test_max_resident_bytes_refuses_an_adapter_bigger_than_the_share_and_evicts_within_it(
        srv, quota, text_backbone, tmp_path):
    src = str(text_backbone.source_path)
    first = register_ok(srv, peft_lora_dir(tmp_path / "l1", src, seed=1), name="quota-l1")
    register_ok(srv, peft_lora_dir(tmp_path / "l2", src, seed=2), name="quota-l2")
    for task in ("quota-l1", "quota-l2"):
        assert srv.predict(task, texts=["both resident"]).status_code == 200
    both = usage(srv)["resident_bytes"]
    assert both > 0
    quota(max_resident_bytes=both - 1)  # room for one LoRA of the two, not both
    assert usage(srv)["resident_bytes"] <= both - 1  # the smaller share applies at once
    for task in ("quota-l1", "quota-l2", "quota-l1"):
        r = srv.predict(task, texts=["one at a time"])
        assert r.status_code == 200, r.text  # an evicted LoRA loads again: served, not refused
        assert usage(srv)["resident_bytes"] <= both - 1
    quota(max_resident_bytes=1)
    r = srv.register_archive(make_archive(peft_lora_dir(tmp_path / "l3", src, seed=4)), name="quota-l3")
    assert_error(r, 403, "max_resident_bytes", "quota-l3", "resident bytes > 1")
    assert srv.get("/adapters/quota-l3").status_code == 404
    assert stored_versions(srv, "quota-l3") == []
    assert first["name"] == "quota-l1"


def test_max_jobs_refuses_a_fit_job(srv, quota):
    texts = [f"good film {i}" for i in range(6)] + [f"bad film {i}" for i in range(6)]
    body = {"texts": texts, "labels": ["pos"] * 6 + ["neg"] * 6, "options": {"epochs": 5}}
    quota(max_jobs=0)
    r = srv.post("/adapters/quota-fit/fit", admin=True, json=body)
    assert_error(r, 403, "max_jobs", "0 fit/adapt jobs", "of 0")
    assert srv.get("/adapters/quota-fit").status_code == 404
    quota(max_jobs=1)
    r = srv.post("/adapters/quota-fit/fit", admin=True, json=body)
    assert r.status_code == 202, r.text
    assert wait_for_job(srv, r.json()["id"])["status"] == "succeeded"
    # the job released its slot when it ended (no later claim pruned it): no entry is left
    store = open_store(str(srv.store))
    wait_for(lambda: store.get_document(slots_key("default"))["jobs"] == [], "the ended job's slot released")


def test_request_rate_is_a_429_with_retry_after(srv, quota):
    quota(requests_per_s=0.01, burst_s=1)  # a bucket of one request, refilled in 100 s
    assert srv.predict("base", texts=["first"]).status_code == 200
    r = srv.predict("base", texts=["second"])
    assert_error(r, 429, "requests_per_s", "default")
    assert r.json()["error"] == "rate_limited"
    assert 1 <= int(r.headers["Retry-After"]) <= 101
    assert srv.post("/embed", json={"texts": ["an embedding is in the default namespace too"]}).status_code == 429


def test_rows_per_second_is_a_429_naming_the_rows(srv, quota):
    quota(rows_per_s=0.01, burst_s=200)  # a bucket of 2 rows
    assert srv.predict("base", texts=["a", "b", "c"]).status_code == 200  # a full bucket lets a big one through
    r = srv.predict("base", texts=["d"])
    assert_error(r, 429, "rows_per_s", "1 rows")
    assert int(r.headers["Retry-After"]) >= 1


def _series(text: str, name: str, **labels) -> float:
    for m in re.finditer(rf"^{name}\{{([^}}]*)\}} ([0-9.e+-]+)$", text, re.M):
        if all(f'{k}="{v}"' in m.group(1) for k, v in labels.items()):
            return float(m.group(2))
    pytest.fail(f"no {name} series with {labels} on /metrics")


def test_per_namespace_series_on_metrics(srv):
    assert srv.predict("base", texts=["counted", "twice"]).status_code == 200
    text = srv.get("/metrics").text
    assert _series(text, "taskswap_namespace_requests_total", namespace="default", status="200") >= 1
    assert _series(text, "taskswap_namespace_rows_total", namespace="default") >= 2
    assert _series(text, "taskswap_namespace_trunk_milliseconds_total", namespace="default") > 0
    assert _series(text, "taskswap_namespace_stored_bytes", namespace="default") > 0
    assert usage(srv)["stored_bytes"] > 0


def test_cli_sets_reads_and_clears_a_quota(srv, capsys):
    from training.cli import main
    base = ["--url", srv.url, "--token", srv.admin]
    assert main(["quota", "set", "default", "--max-tasks", "99", "--max-stored-bytes", "2e9",
                 "--weight", "2", *base]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["quota"]["max_tasks"] == 99 and shown["quota"]["max_stored_bytes"] == 2_000_000_000
    assert main(["quota", "get", "default", *base]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["stored"] is True and got["quota"]["weight"] == 2 and got["usage"]["tasks"] >= 1
    assert main(["quota", "clear", "default", *base]) == 0
    assert json.loads(capsys.readouterr().out)["stored"] is False
    assert main(["quota", "get", "default", *base]) == 1
    assert "404" in capsys.readouterr().err
    assert main(["quota", "get", "default", "--url", srv.url, "--token", "wrong"]) == 1
    assert "401" in capsys.readouterr().err
    assert main(["quota", "set", "default", "--weight", "0", *base]) == 1
    assert "weight" in capsys.readouterr().err


def test_another_replica_applies_a_quota_within_its_ttl(srv, server_factory, tiny_dir, quota):
    other = server_factory.start(store=srv.store, backbones=tiny_backbones_env(tiny_dir), admin_token=srv.admin,
                                 env={"TASKSWAP_QUOTA_TTL_S": "0.2", "TASKSWAP_SYNC_INTERVAL_S": "0.1"})
    try:
        assert other.predict("base", texts=["no quota yet"]).status_code == 200
        quota(max_tasks=0, requests_per_s=0.01, burst_s=1)  # through the first replica
        deadline = time.monotonic() + 60  # a bound on the wait, not a measurement
        statuses = []
        while time.monotonic() < deadline and 429 not in statuses:
            statuses.append(other.predict("base", texts=["counted by the other replica"]).status_code)
            time.sleep(0.1)
        assert 429 in statuses, statuses
        assert other.get(QUOTA, admin=True).json()["quota"]["max_tasks"] == 0
    finally:
        other.stop()
