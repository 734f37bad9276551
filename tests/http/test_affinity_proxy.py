"""Task-affinity routing through the deployed HAProxy config, without containers: three real
``bentoml serve`` replicas on loopback share one local store (60 head tasks), and a real
``haproxy`` process (deploy/haproxy/haproxy.cfg) stands in front of them.

- sticky: every request for a task lands on one replica (``X-Taskswap-Replica``), whether the
  task comes in ``X-Taskswap-Task`` or in a KServe v2 path; the 60 tasks spread over all three;
- the header is a routing hint only: a header naming another task than the body changes which
  replica answers, never the answer (the body wins);
- a replica stopped (SIGTERM) under load: no request fails (retries on another replica), its
  tasks move to the two others and the others' tasks stay where they were.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict

import httpx
import pytest

from adapters.store import open_store
from support.factories import head_adapter
from support.haproxy import Proxy
from support.publish import publish
from support.server import ServerFactory, tiny_backbones_env

pytestmark = pytest.mark.server

N_TASKS = 60
TASKS = [f"aff-{i:02d}" for i in range(N_TASKS)]
TEXTS = ["a wonderful film", "dull"]


@pytest.fixture(scope="module")
def topology(tmp_path_factory, tiny_dir, text_backbone):
    root = tmp_path_factory.mktemp("affinity")
    store = root / "store"
    st = open_store(str(store))
    for i, task in enumerate(TASKS):
        publish(st, head_adapter(root / "src" / task, text_backbone, task, seed=i), {text_backbone.name: text_backbone})
    bb = [b for b in tiny_backbones_env(tiny_dir) if b["name"] == text_backbone.name]
    with ServerFactory(root) as servers:
        # Three servers start at once: on a loaded 2-core machine that alone can take minutes.
        replicas = [servers.start(store=store, backbones=bb, admin_token=None, wait=False, ready_timeout_s=420,
                                  env={"TASKSWAP_REPLICA_ID": f"r{k}"}) for k in (1, 2, 3)]
        for srv in replicas:
            srv.wait_ready()
        proxy = Proxy(root, {f"r{k}": f"127.0.0.1:{srv.port}" for k, srv in zip((1, 2, 3), replicas)}).start()
        try:
            yield proxy, replicas
        finally:
            proxy.stop()


def predict(http: httpx.Client, task: str, header: str | None = None) -> httpx.Response:
    headers = {"X-Taskswap-Task": header or task}
    return http.post("/predict", json={"task": task, "texts": TEXTS}, headers=headers)


def placement(http: httpx.Client, rounds: int = 2) -> dict[str, set[str]]:
    """task -> the replicas that answered it, over ``rounds`` sequential passes."""
    seen = defaultdict(set)
    for _ in range(rounds):
        for task in TASKS:
            r = predict(http, task)
            assert r.status_code == 200, (task, r.status_code, r.text)
            seen[task].add(r.headers["x-taskswap-replica"])
    return seen


def test_each_task_sticks_to_one_replica_and_tasks_spread(topology):
    proxy, _ = topology
    with httpx.Client(base_url=proxy.url, timeout=60) as http:
        seen = placement(http, rounds=3)
    assert all(len(where) == 1 for where in seen.values()), {t: w for t, w in seen.items() if len(w) > 1}
    per_replica = Counter(next(iter(where)) for where in seen.values())
    assert set(per_replica) == {"r1", "r2", "r3"}, per_replica
    assert min(per_replica.values()) >= N_TASKS // 10, per_replica  # no replica starved


def test_kserve_v2_path_routes_like_the_header(topology):
    proxy, _ = topology
    body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["fine"]}]}
    with httpx.Client(base_url=proxy.url, timeout=60) as http:
        for task in TASKS[:12]:
            by_header = predict(http, task).headers["x-taskswap-replica"]
            r = http.post(f"/v2/models/{task}/infer", json=body)  # no header: the proxy reads the path
            assert r.status_code == 200, r.text
            assert r.headers["x-taskswap-replica"] == by_header, task


def test_the_body_wins_over_a_mismatched_header(topology):
    """The header only picks the replica; the body's task answers (any replica serves any task)."""
    proxy, _ = topology
    with httpx.Client(base_url=proxy.url, timeout=60) as http:
        right = predict(http, "aff-01")
        routed_elsewhere = [predict(http, "aff-01", header=other) for other in TASKS[2:12]]
    assert right.status_code == 200
    answers = {r.headers["x-taskswap-replica"] for r in routed_elsewhere}
    assert len(answers) > 1  # the header really moved the request
    for r in routed_elsewhere:
        assert r.status_code == 200, r.text
        assert r.json()["results"] == right.json()["results"]


def test_stopping_a_replica_moves_its_tasks_without_a_failed_request(topology):
    """A replica stopped under load (SIGTERM): requests that reach it while it closes are
    refused or cut before any answer, and the proxy replays them on another replica; no
    client sees a failure or a connection closed without an answer (the inference backend
    buffers each request whole, ``option http-buffer-request``, so its layer-7 retry can
    replay it). (A crash, SIGKILL, can also cut an answer whose headers were already
    forwarded: no proxy can replay that one. docs/deployment.md says so.)"""
    proxy, replicas = topology
    with httpx.Client(base_url=proxy.url, timeout=60) as http:
        before = {t: next(iter(w)) for t, w in placement(http, rounds=1).items()}
    victim = replicas[1]  # r2
    failures, answered, stop = [], Counter(), threading.Event()

    def load(k: int) -> None:
        with httpx.Client(base_url=proxy.url, timeout=60) as http:
            i = k
            while not stop.is_set():
                task = TASKS[i % N_TASKS]
                i += 4
                try:
                    r = predict(http, task)
                except httpx.HTTPError as e:
                    failures.append((task, repr(e)))
                    continue
                if r.status_code != 200:
                    failures.append((task, r.status_code, r.text[:200]))
                answered[r.headers.get("x-taskswap-replica")] += 1

    threads = [threading.Thread(target=load, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    try:
        while sum(answered.values()) < 40 and not failures:  # load is flowing through all three
            threading.Event().wait(0.1)
        victim.stop()  # SIGTERM, as Kubernetes stops a pod: in-flight requests finish
        served_at_kill = sum(answered.values())
        while sum(answered.values()) < served_at_kill + 120 and not failures:
            threading.Event().wait(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert failures == [], failures[:5]

    with httpx.Client(base_url=proxy.url, timeout=60) as http:
        after = {t: next(iter(w)) for t, w in placement(http, rounds=2).items()}
    moved = {t for t in TASKS if before[t] != after[t]}
    assert set(after.values()) == {"r1", "r3"}, (before, after)
    # Only the dead replica's tasks moved.
    assert moved == {t for t in TASKS if before[t] == "r2"}, (before, after)
