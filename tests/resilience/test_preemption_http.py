"""Preemption between trunk blocks on a real server (``bentoml serve`` on loopback; issue 32,
item 4): namespace A floods with a LoRA task and a head beside it while namespace B sends
light requests; every B request is answered, the flood progresses, and every answer given
while batches were being parked and resumed equals the answer the same request got alone,
before the flood (1e-5): a parked batch resumes with its LoRA changes and hidden states
intact, and the batch run while it was parked never sees them. Correctness only: no timing
is asserted (that is ``python -m bench tenancy``)."""

from __future__ import annotations

import threading

import httpx
import pytest

from adapters.format.archive import make_archive
from support.factories import head_adapter, peft_lora_dir
from support.server import server_factory, tiny_backbones_env  # noqa: F401  (pytest fixture)

pytestmark = pytest.mark.server
A_TASKS = ["team-a/lora", "team-a/head"]
A_TEXTS = [f"review {i}: the actors were good but the story was slow" for i in range(24)]
B_TEXTS = ["a great movie", "awful", "fine", "I would watch it again"]
TOL = 1e-5


@pytest.fixture(scope="module")
def srv(server_factory, tiny_dir, tmp_path_factory, text_backbone):
    # small slices: A's requests are many batches, so B's arrive while one of A's is in flight
    env = {"TASKSWAP_PREEMPT": "1", "TASKSWAP_SLICE_COST": "256", "TASKSWAP_NAMESPACE_MAX_INFLIGHT": "4"}
    s = server_factory.start(store=tmp_path_factory.mktemp("preempt-store"),
                             backbones=tiny_backbones_env(tiny_dir), env=env)
    root = tmp_path_factory.mktemp("preempt-adapters")
    archives = {"team-a/lora": make_archive(peft_lora_dir(root / "l", str(text_backbone.source_path), seed=2)),
                "team-a/head": make_archive(head_adapter(root / "ha", text_backbone, "ha", seed=1)),
                "team-b/y": make_archive(head_adapter(root / "hb", text_backbone, "hb", seed=3))}
    for task, archive in archives.items():
        r = s.register_archive(archive, name=task)
        assert r.status_code == 201, r.text
    return s


def scores(body: dict) -> dict[str, list[list[float]]]:
    return {res["task"]: [list(p["scores"].values()) for p in res["predictions"]] for res in body["results"]}


def assert_close(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for task in want:
        assert len(got[task]) == len(want[task])
        for g, w in zip(got[task], want[task]):
            assert max(abs(x - y) for x, y in zip(g, w)) <= TOL, (task, g, w)


def parked(srv) -> float:
    lines = [ln for ln in srv.get("/metrics").text.splitlines() if ln.startswith("taskswap_batches_parked_total")]
    return sum(float(ln.split()[-1]) for ln in lines)


def _flood(url: str, address: str, stop: threading.Event, log: list) -> None:
    with httpx.Client(base_url=url, timeout=120, transport=httpx.HTTPTransport(local_address=address)) as c:
        while not stop.is_set():
            r = c.post("/predict", json={"tasks": A_TASKS, "texts": A_TEXTS})
            log.append((r.status_code, r.json() if r.status_code == 200 else r.text))


def test_b_is_answered_beside_a_flood_and_parked_batches_answer_as_alone(srv):
    want_a = srv.predict(A_TASKS, texts=A_TEXTS)
    want_b = srv.predict("team-b/y", texts=B_TEXTS)
    assert want_a.status_code == 200 and want_b.status_code == 200
    before = parked(srv)
    stop, a_log = threading.Event(), []
    flood = [threading.Thread(target=_flood, args=(srv.url, f"127.0.0.{40 + i}", stop, a_log)) for i in range(6)]
    for t in flood:
        t.start()
    b_answers = []
    try:
        with httpx.Client(base_url=srv.url, timeout=120,
                          transport=httpx.HTTPTransport(local_address="127.0.0.70")) as c:
            while len(a_log) < 3:  # the flood is on
                stop.wait(0.05)
            for _ in range(20):
                b_answers.append(c.post("/predict", json={"task": "team-b/y", "texts": B_TEXTS}))
    finally:
        stop.set()
        for t in flood:
            t.join(timeout=120)
    assert [r.status_code for r in b_answers] == [200] * 20, [r.text for r in b_answers if r.status_code != 200]
    for r in b_answers:
        assert_close(scores(r.json()), scores(want_b.json()))
    served = [body for status, body in a_log if status == 200]
    assert served, a_log[:3]  # the flood is not starved
    assert {s for s, _ in a_log} <= {200, 429}, [x for x in a_log if x[0] not in (200, 429)][:3]
    for body in served:
        assert_close(scores(body), scores(want_a.json()))
    # B's 20 requests each arrived while the worker ran one of A's batches: B is owed the
    # worker at once (a newcomer each time), so A's batch in flight parks at its next pause
    assert parked(srv) > before, "no batch of A was ever parked for B's"
    assert not srv.internal_errors()
