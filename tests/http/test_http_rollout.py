"""Fit over HTTP, shadow, canary and per-task monitoring on the real server.

One server (tiny backbones, OTLP tracing to an in-process collector, prediction log on)
for the fit -> shadow -> report -> promote path; two replicas over one store for canary
routing, policy convergence and restarts.
"""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from support.factories import regression_head
from support.http_helpers import register_ok, wait_for_job
from support.replica_helpers import head_archive, wait_for
from support.server import server_factory, tiny_backbones_env  # noqa: F401  (fixture)

pytestmark = pytest.mark.server

# Words the tiny tokenizer knows differ in length, so the features separate the classes.
POS = ["good", "a great movie", "fine fine", "good good good", "great", "a fine film indeed"]
NEG = ["the plot was awful and boring", "bad bad bad bad bad", "awful awful awful awful awful awful",
       "boring boring boring boring boring", "it was bad and it was long and dull", "dull dull dull dull"]

# What these tests check is that replicas apply the same policy, not how fast: on a loaded
# 2-core CI machine the watcher can lag the 5 s convergence bound of the replica tests.
POLICY_BOUND_S = 30.0


def examples(n_per_class: int = 12):
    texts = [(POS * 4)[i] for i in range(n_per_class)] + [(NEG * 4)[i] for i in range(n_per_class)]
    return texts, ["pos"] * n_per_class + ["neg"] * n_per_class


class Collector:
    """An in-process OTLP/HTTP trace collector: keeps every span it is sent."""

    def __init__(self):
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
        spans, lock = [], threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                req = ExportTraceServiceRequest()
                req.ParseFromString(body)
                with lock:
                    for rs in req.resource_spans:
                        for ss in rs.scope_spans:
                            spans.extend(ss.spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.spans = spans
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1/traces"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture(scope="module")
def collector():
    c = Collector()
    yield c
    c.close()


@pytest.fixture(scope="module")
def srv(server_factory, tiny_dir, tmp_path_factory, collector):
    log_dir = tmp_path_factory.mktemp("predlog")
    # BentoML's own tracing settings, for the service named "taskswap" (config version 2)
    t = "services.taskswap.tracing"
    env = {"BENTOML_CONFIG_OPTIONS": (f"{t}.exporter_type=otlp {t}.sample_rate=1.0 "
                                      f"{t}.otlp.protocol=http {t}.otlp.endpoint={collector.url}"),
           "OTEL_BSP_SCHEDULE_DELAY": "200",
           "TASKSWAP_PREDICTION_LOG": str(log_dir / "predictions.jsonl"),
           "TASKSWAP_PREDICTION_LOG_SAMPLE": "1.0"}
    s = server_factory.start(store=tmp_path_factory.mktemp("store"), backbones=tiny_backbones_env(tiny_dir),
                             env=env)
    s.prediction_log = log_dir / "predictions.jsonl"
    return s


def run_job(srv, task: str, body: dict, timeout_s: float = 180) -> dict:
    """POST a fit, assert 202, poll the job until it ends; returns the final record."""
    r = srv.post(f"/adapters/{task}/fit", admin=True, json=body)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] == "queued" and job["task"] == task
    return wait_for_job(srv, job["id"], timeout_s)


def predict(srv, task, texts, key=None):
    headers = {"X-Taskswap-Routing-Key": key} if key else {}
    r = srv.post("/predict", json={"task": task, "texts": texts}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["results"][0]


def test_fit_shadow_report_promote(srv, collector):
    texts, labels = examples()
    job = run_job(srv, "reviews", {"texts": texts, "labels": labels, "options": {"epochs": 60}})
    assert job["status"] == "succeeded", job
    res = job["result"]
    assert res["role"] == "active" and res["promoted"] and len(res["version"]) == 64
    assert {"train_accuracy", "val_accuracy", "val_macro_f1"} <= set(res["metrics"])
    v1 = res["version"]
    info = srv.get("/adapters/reviews").json()
    assert info["active_version"] == v1
    assert info["metrics"]["val_examples"] == 4  # 20% of each class held out (2 of 12), as the CLI does

    # A second head (an MLP) as a shadow candidate: answers nothing, scores every row.
    job = run_job(srv, "reviews", {"texts": texts, "labels": labels, "promote": "shadow",
                                   "options": {"hidden": [16], "epochs": 60, "seed": 3}})
    assert job["status"] == "succeeded", job
    v2 = job["result"]["version"]
    assert job["result"]["role"] == "shadow" and v2 != v1
    rollout = srv.get("/adapters/reviews/rollout").json()
    assert rollout["mode"] == "shadow" and rollout["candidate_version"] == v2
    assert rollout["active_version"] == v1

    answered = [predict(srv, "reviews", texts[i:i + 4]) for i in range(0, 24, 4)]
    assert {a["version"] for a in answered} == {v1} and {a["role"] for a in answered} == {"active"}
    report = srv.get("/adapters/reviews/rollout").json()
    (shadow,) = report["shadow"]
    assert shadow["active_version"] == v1 and shadow["candidate_version"] == v2
    assert shadow["rows"] == 24
    assert sum(sum(row.values()) for row in shadow["confusion"].values()) == 24
    agree = sum(shadow["confusion"].get(lab, {}).get(lab, 0) for lab in ("neg", "pos"))
    assert shadow["agreement"] == pytest.approx(agree / 24)
    assert 0 <= shadow["mean_abs_delta_top_score"] <= 1
    assert shadow["extra_trunk_rows"] == 0  # a head candidate reuses the active rows' features
    assert shadow["added_seconds_per_row"] > 0

    metrics = srv.client.get("/metrics").text
    assert f'taskswap_shadow_rows_total{{candidate="{v2[:12]}",task="reviews"}} 24.0' in metrics
    assert f'taskswap_prediction_top_score_count{{task="reviews",version="{v1[:12]}"}} 24.0' in metrics
    assert 'taskswap_predicted_labels_total{label="pos",task="reviews"' in metrics \
        or 'taskswap_predicted_labels_total{label="neg",task="reviews"' in metrics

    p = srv.post("/adapters/reviews/promote", admin=True)
    assert p.status_code == 200, p.text
    assert p.json() == {"task": "reviews", "active_version": v2, "previous_version": v1}
    assert predict(srv, "reviews", texts[:2])["version"] == v2
    assert srv.get("/adapters/reviews/rollout").json()["mode"] == "none"
    assert srv.post("/adapters/reviews/promote", admin=True).status_code == 409  # nothing to promote

    # monitoring: the sampled log holds no raw input, only its digest
    lines = [json.loads(x) for x in srv.prediction_log.read_text().splitlines()]
    assert len(lines) >= 26 and all("input" not in x and len(x["input_sha256"]) == 64 for x in lines)

    # tracing: queue wait, trunk pass and heads spans under the request span
    # A request span ends (and is exported) after the spans inside it: wait for both.
    def spans():
        got = list(collector.spans)
        names = {s.name for s in got}
        ours = [s for s in got if s.name.startswith("taskswap.")]
        parents = {s.span_id for s in got}
        return ({"taskswap.queue_wait", "taskswap.trunk_pass", "taskswap.heads"} <= names
                and all(s.parent_span_id in parents for s in ours))  # children of the request span
    wait_for(spans, "OTLP spans under BentoML's request spans", timeout_s=30)
    ours = [s for s in collector.spans if s.name.startswith("taskswap.")]
    assert all(s.end_time_unix_nano >= s.start_time_unix_nano for s in ours)


def test_fit_if_better_compares_on_the_same_validation_rows(srv):
    texts, labels = examples()
    base = run_job(srv, "ifb", {"texts": texts, "labels": labels, "options": {"epochs": 60}})
    assert base["status"] == "succeeded"
    shuffled = labels[1:] + labels[:1]  # mostly wrong labels: should rarely beat the first head
    job = run_job(srv, "ifb", {"texts": texts, "labels": shuffled, "promote": "if_better",
                               "options": {"epochs": 60}})
    assert job["status"] == "succeeded", job
    cmp = job["result"]["comparison"]
    assert cmp["active_version"] == base["result"]["version"]
    better = cmp["candidate_val_accuracy"] > cmp["active_val_accuracy"]
    assert job["result"]["promoted"] is better
    active = srv.get("/adapters/ifb").json()["active_version"]
    assert active == (job["result"]["version"] if better else base["result"]["version"])


def test_shadow_report_and_fit_record_the_task_types_headline(srv):
    texts, labels = examples()
    base = run_job(srv, "headlined", {"texts": texts, "labels": labels, "options": {"epochs": 60}})
    assert base["status"] == "succeeded", base
    record = base["result"]["metrics"]["headline"]
    assert record == {"metric": "val_accuracy", "name": "accuracy", "higher_is_better": True}
    assert srv.get("/adapters/headlined").json()["metrics"]["headline"] == record  # in the manifest
    assert srv.get("/adapters/headlined/rollout").json()["headline"] is None  # no candidate yet
    job = run_job(srv, "headlined", {"texts": texts, "labels": labels, "promote": "shadow",
                                     "options": {"hidden": [16], "epochs": 60, "seed": 3}})
    assert job["status"] == "succeeded", job
    h = srv.get("/adapters/headlined/rollout").json()["headline"]
    assert h["headline"] == "val_accuracy" and h["higher_is_better"] is True
    assert h["active"] == base["result"]["metrics"]["val_accuracy"]
    assert h["candidate"] == job["result"]["metrics"]["val_accuracy"]
    assert h["candidate_better"] is (h["candidate"] > h["active"])


@pytest.mark.parametrize("body, status, words", [
    ({"texts": ["a", "b"], "labels": ["x"]}, 422, "one label per example"),
    ({"texts": ["a"], "images": ["AAAA"], "labels": ["x"]}, 422, "exactly one of"),
    ({"images": ["not base64!"], "labels": ["x"]}, 400, "base64"),
    ({"texts": ["a", "b"], "labels": ["x", "y"], "promote": "sideways"}, 422, "promote"),
    ({"texts": ["a", "b"], "labels": ["x", "y"], "options": {"hidden": [0]}}, 422, "hidden"),
    ({"texts": ["a", "b"], "labels": ["x", "y"], "backbone": "nope"}, 404, "backbone 'nope'"),
    ({"texts": ["a", "b"], "labels": ["x", "y"], "promote": "shadow"}, 404, "no active version"),
])
def test_fit_bad_requests_are_refused_at_once(srv, body, status, words):
    r = srv.post("/adapters/newtask/fit", admin=True, json=body)
    assert r.status_code == status, r.text
    assert words in r.text


@pytest.mark.parametrize("body, words", [
    ({"texts": ["a", "b", "c", "d", "e"], "labels": ["x"] * 5}, ["1 class ['x']", "a classifier needs at least 2"]),
    # label_names may name more classes: a class without examples teaches nothing
    ({"texts": ["a", "b", "c", "d"], "labels": ["x"] * 4, "label_names": ["x", "y"]}, ["1 class ['x']"]),
    ({"texts": ["a", "b", "c"], "labels": ["x", "y", "x"]}, ["only 3 examples", "at least 4"]),
    ({"texts": ["a", "b", "c", "d"], "labels": ["w", "x", "y", "z"]},
     ["validation split (options.val_fraction=0.2) would be empty", "every class has a single example"]),
    ({"texts": ["a", "b", "c"], "labels": ["x", "x", "x"]}, ["1 class", "only 3 examples"]),  # all at once
])
def test_fit_data_the_trainer_would_refuse_is_a_422_at_submission(srv, body, words):
    """Not a 202 whose job fails seconds later: the job's trainer refusals, named at once."""
    r = srv.post("/adapters/unfit/fit", admin=True, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "unfittable_data"
    for w in words:
        assert w in r.json()["message"], r.text
    assert srv.get("/adapters/unfit").status_code == 404


def test_fit_over_a_regression_task_is_refused_at_submission(srv, text_backbone, tmp_path):
    """A fit makes single_label heads: it would turn a regressor into a classifier."""
    folder, _ = regression_head(tmp_path / "r", text_backbone, "rated", ("valence",))
    register_ok(srv, folder)
    texts, labels = examples(4)
    for promote in ("active", "shadow"):
        r = srv.post("/adapters/rated/fit", admin=True, json={"texts": texts, "labels": labels, "promote": promote})
        assert r.status_code == 422, r.text
        assert "active version is a regression task" in r.text and "--task-type regression" in r.text
    assert srv.get("/adapters/rated").json()["task_type"] == "regression"


def test_the_smallest_fittable_request_fits(srv):
    """The rules refuse no more than the trainer does: 2 classes, 4 examples, a 1-row split."""
    job = run_job(srv, "smallest", {"texts": ["good", "bad bad bad", "great", "awful awful"],
                                    "labels": ["pos", "neg", "pos", "neg"], "options": {"epochs": 5}})
    assert job["status"] == "succeeded", job
    assert sum(job["result"]["examples"].values()) == 4


def test_fit_and_jobs_need_the_admin_token(srv):
    assert srv.post("/adapters/x/fit", json={"texts": ["a"], "labels": ["b"]}).status_code == 401
    assert srv.get("/jobs/" + "0" * 32).status_code == 401
    assert srv.get("/jobs/" + "0" * 32, admin=True).status_code == 404
    assert srv.get("/jobs/nope", admin=True).status_code == 404
    assert srv.post("/adapters/x/rollout", json={"version": "0" * 64, "mode": "shadow"}).status_code == 401
    assert srv.post("/adapters/x/promote").status_code == 401
    assert srv.delete("/adapters/x/rollout").status_code == 401
    assert srv.internal_errors() == []


# ---- canary over two replicas ------------------------------------------------------------
LEASE_S = 4  # fit-job lease of the two replicas (default 60 s)


@pytest.fixture(scope="module")
def replicas(server_factory, tiny_dir, tmp_path_factory):
    store = tmp_path_factory.mktemp("shared")
    bb = tiny_backbones_env(tiny_dir)
    lease = {"TASKSWAP_FIT_LEASE_S": str(LEASE_S)}
    a = server_factory.start(store=store, backbones=bb, env={"TASKSWAP_REPLICA_ID": "a", **lease})
    b = server_factory.start(store=store, backbones=bb, env={"TASKSWAP_REPLICA_ID": "b", **lease},
                             admin_token=a.admin)
    return a, b


def test_canary_split_sticky_and_shared_by_replicas(replicas, text_backbone, tmp_path):
    a, b = replicas
    v = []
    for seed in (1, 2):
        r = a.register_archive(head_archive(tmp_path / f"h{seed}", text_backbone, "canary", seed))
        assert r.status_code == 201, r.text
        v.append(r.json()["version"])
    assert a.post("/adapters/canary/activate", admin=True, json={"version": v[0]}).status_code == 200
    bad = a.post("/adapters/canary/rollout", admin=True, json={"version": v[0], "mode": "canary", "fraction": 0.3})
    assert bad.status_code == 409  # the active version cannot be its own candidate
    r = a.post("/adapters/canary/rollout", admin=True, json={"version": v[1][:12], "mode": "canary", "fraction": 0.3})
    assert r.status_code == 200, r.text
    assert r.json()["mode"] == "canary" and r.json()["candidate_version"] == v[1]

    # every replica applies the same policy (it lives in the store)
    def same_on_b():
        got = b.get("/adapters/canary/rollout").json()
        return got["mode"] == "canary" and got["candidate_version"] == v[1] and got["fraction"] == 0.3
    wait_for(same_on_b, "policy on replica b", timeout_s=POLICY_BOUND_S)

    n, keys = 300, [f"user-{i}" for i in range(300)]
    served = {k: predict(a if i % 2 else b, "canary", ["fine"], key=k) for i, k in enumerate(keys)}
    to_candidate = sum(r["version"] == v[1] for r in served.values())
    assert all((r["version"] == v[1]) == (r["role"] == "canary") for r in served.values())
    sigma = math.sqrt(0.3 * 0.7 / n)  # binomial: 0.3 +- 4 sigma (false failure ~ 6e-5)
    assert abs(to_candidate / n - 0.3) < 4 * sigma, to_candidate
    # sticky: the same key gets the same version on either replica, again and again
    for k in keys[:20]:
        for srv in (a, b, a):
            assert predict(srv, "canary", ["fine"], key=k)["version"] == served[k]["version"]

    # a restart reads the policy back from the store
    b.restart()
    assert b.get("/adapters/canary/rollout").json()["candidate_version"] == v[1]
    for k in keys[:20]:
        assert predict(b, "canary", ["fine"], key=k)["version"] == served[k]["version"]

    # roll back: drop the canary on one replica, every replica answers with the active again
    assert a.delete("/adapters/canary/rollout", admin=True).status_code == 200
    wait_for(lambda: b.get("/adapters/canary/rollout").json()["mode"] == "none", "drop on b",
             timeout_s=POLICY_BOUND_S)
    assert {predict(b, "canary", ["fine"], key=k)["version"] for k in keys[:30]} == {v[0]}

    # canary again, promote through b: both replicas serve the candidate for every key
    assert b.post("/adapters/canary/rollout", admin=True,
                  json={"version": v[1], "mode": "canary", "fraction": 0.5}).status_code == 200
    assert b.post("/adapters/canary/promote", admin=True).status_code == 200
    wait_for(lambda: a.get("/adapters/canary").json()["active_version"] == v[1], "promote on a",
             timeout_s=POLICY_BOUND_S)
    assert {predict(a, "canary", ["fine"], key=k)["version"] for k in keys[:30]} == {v[1]}
    assert a.get("/adapters/canary/rollout").json()["mode"] == "none"
    assert a.internal_errors() == [] and b.internal_errors() == []


# ---- a fit job whose worker dies (last: it kills replica a's worker) --------------------------
def test_a_job_whose_worker_is_killed_turns_failed_on_another_replica(replicas):
    import os
    import signal
    from pathlib import Path

    import psutil
    a, b = replicas
    texts, labels = examples()
    r = a.post("/adapters/orphan/fit", admin=True, json={"texts": texts, "labels": labels})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]

    def fit_child():  # the job's `python -m training.fit_job` under replica a
        for p in psutil.Process(a.proc.pid).children(recursive=True):
            try:
                if "training.fit_job" in p.cmdline():
                    return p
            except psutil.NoSuchProcess:
                continue
        return None
    wait_for(fit_child, "the fit child of replica a", timeout_s=120, interval_s=0.05)
    child = fit_child()
    worker = child.parent()  # the BentoML worker that owns the job
    seen = b.get(f"/jobs/{job_id}", admin=True).json()
    assert seen["status"] == "running" and seen["replica_id"] == "a", seen
    os.kill(worker.pid, signal.SIGKILL)

    wait_for(lambda: b.get(f"/jobs/{job_id}", admin=True).json()["status"] == "failed",
             "the job failed on replica b", timeout_s=60, interval_s=0.5)
    rec = b.get(f"/jobs/{job_id}", admin=True).json()
    assert rec["error"]["error"] == "WorkerLost" and "(a)" in rec["error"]["message"], rec
    assert rec["phase"] == "done" and rec["finished_at"] and rec["lease_s"] == LEASE_S
    stored = json.loads((Path(b.store) / "jobs" / f"{job_id}.json").read_text())
    assert stored["status"] == "failed" and stored["error"]["error"] == "WorkerLost"  # in the store too
    psutil.wait_procs([child], timeout=10)
    assert not child.is_running()  # the fit died with its worker
    assert b.get("/adapters/orphan").status_code == 404  # nothing was registered
    assert b.internal_errors() == []
