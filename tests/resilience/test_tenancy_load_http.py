"""A namespace flooding the server beside a light one, over real HTTP (issue 32, item 4): every
request of the light namespace is answered, the flood still progresses, and the flood's requests
past its in-flight and waiting slots are 429s with Retry-After naming the settings, never a
failure of anyone else's request. Correctness only: no timing is asserted (that is
``python -m bench tenancy``). Each answer carries its stages in ``Server-Timing``. And the
``/metrics`` scrape with ``TASKSWAP_METRICS_TOKEN`` set: the 404 of a missing route without it.
"""

from __future__ import annotations

import threading

import httpx
import pytest

from adapters.format.archive import make_archive
from service import server_timing
from support.factories import head_adapter
from support.http_helpers import b64, png_bytes
from support.server import server_factory, tiny_backbones_env  # noqa: F401  (pytest fixture)

pytestmark = pytest.mark.server
A_TEXTS = [f"review {i}: the actors were good but the story was slow" for i in range(24)]
B_TEXTS = ["a great movie", "awful", "fine", "I would watch it again"]
SCRAPE = "scrape-" + "m" * 24


@pytest.fixture(scope="module")
def srv(server_factory, tiny_dir, tmp_path_factory, text_backbone, vision_backbone):
    env = {"TASKSWAP_NAMESPACE_MAX_INFLIGHT": "2", "TASKSWAP_NAMESPACE_MAX_WAITING": "3",
           "TASKSWAP_SERVER_TIMING": "1", "TASKSWAP_SLICE_COST": "64", "TASKSWAP_METRICS_TOKEN": SCRAPE}
    s = server_factory.start(store=tmp_path_factory.mktemp("flood-store"),
                             backbones=tiny_backbones_env(tiny_dir), env=env)
    root = tmp_path_factory.mktemp("flood-adapters")
    for i, task in enumerate(("team-a/x", "team-b/y")):
        r = s.register_archive(make_archive(head_adapter(root / f"h{i}", text_backbone, f"h{i}", seed=i)), name=task)
        assert r.status_code == 201, r.text
    r = s.register_archive(make_archive(head_adapter(root / "pics", vision_backbone, "pics")), name="team-c/pics")
    assert r.status_code == 201, r.text
    return s


def _flood(url: str, address: str, stop: threading.Event, log: list) -> None:
    with httpx.Client(base_url=url, timeout=120, transport=httpx.HTTPTransport(local_address=address)) as c:
        while not stop.is_set():
            r = c.post("/predict", json={"task": "team-a/x", "texts": A_TEXTS})
            log.append((r.status_code, r.headers.get("retry-after"), r.text if r.status_code != 200 else ""))


def test_a_light_namespace_is_answered_beside_a_flood_and_the_flood_progresses(srv):
    stop, a_log = threading.Event(), []
    flood = [threading.Thread(target=_flood, args=(srv.url, f"127.0.0.{30 + i}", stop, a_log)) for i in range(10)]
    for t in flood:
        t.start()
    b_answers = []
    try:
        with httpx.Client(base_url=srv.url, timeout=120,
                          transport=httpx.HTTPTransport(local_address="127.0.0.60")) as c:
            while len(a_log) < 5:  # the flood is on
                stop.wait(0.05)
            for _ in range(15):
                b_answers.append(c.post("/predict", json={"task": "team-b/y", "texts": B_TEXTS}))
    finally:
        stop.set()
        for t in flood:
            t.join(timeout=120)
    assert [r.status_code for r in b_answers] == [200] * 15, [r.text for r in b_answers if r.status_code != 200]
    for r in b_answers:
        assert [p["task"] for p in r.json()["results"]] == ["team-b/y"] and len(r.json()["results"][0]["predictions"]) == 4
        stages = server_timing.parse(r.headers[server_timing.HEADER])
        assert {"admit", "pre", "queue", "run", "post"} <= stages.keys()
    statuses = {s for s, _, _ in a_log}
    assert 200 in statuses, a_log[:5]  # the flood is not starved
    assert statuses <= {200, 429}, [x for x in a_log if x[0] not in (200, 429)][:3]
    refused = [x for x in a_log if x[0] == 429]
    assert refused, "ten flooding clients beside 2 slots and 3 waiting places: some must be refused"
    for _, retry_after, body in refused:
        assert retry_after is not None and int(retry_after) >= 1
        assert "TASKSWAP_NAMESPACE_MAX_INFLIGHT" in body and "team-a" in body
    assert not srv.internal_errors()



def _image_flood(url: str, address: str, body: dict, stop: threading.Event, log: list) -> None:
    with httpx.Client(base_url=url, timeout=120, transport=httpx.HTTPTransport(local_address=address)) as c:
        while not stop.is_set():
            r = c.post("/predict", json=body)
            log.append((r.status_code, r.headers.get("retry-after"), r.json()))
            if len([x for x in log if x[0] == 429]) >= 3 and len([x for x in log if x[0] == 200]) >= 3:
                stop.set()


def test_an_image_flood_is_decoded_only_once_admitted_answers_unchanged_and_excess_refused(srv):
    """Images are decoded after the namespace's slot is granted (service.engine): the answers
    under a flood equal the answer alone, and past 2 slots and 3 waiting places the excess is
    a 429 with Retry-After naming the settings, as for texts."""
    body = {"task": "team-c/pics", "images": [b64(png_bytes((200, 30, 30), size=(320, 240))),
                                              b64(png_bytes((20, 160, 40), size=(300, 200)))]}
    alone = httpx.post(srv.url + "/predict", json=body, timeout=120)
    assert alone.status_code == 200, alone.text
    want = alone.json()["results"][0]["predictions"]
    stop, log = threading.Event(), []
    flood = [threading.Thread(target=_image_flood, args=(srv.url, f"127.0.0.{70 + i}", body, stop, log))
             for i in range(10)]
    for t in flood:
        t.start()
    stop.wait(300)
    stop.set()
    for t in flood:
        t.join(timeout=120)
    assert {s for s, _, _ in log} <= {200, 429}, [x for x in log if x[0] not in (200, 429)][:3]
    answered = [b for s, _, b in log if s == 200]
    refused = [(ra, b) for s, ra, b in log if s == 429]
    assert answered and refused, (len(answered), len(refused))
    for b in answered:
        for got, exp in zip(b["results"][0]["predictions"], want):
            assert got["label"] == exp["label"] and got["scores"] == pytest.approx(exp["scores"], abs=1e-5)
    for retry_after, b in refused:
        assert retry_after is not None and int(retry_after) >= 1
        assert "TASKSWAP_NAMESPACE_MAX_WAITING" in b["message"] and "team-c" in b["message"]
    assert not srv.internal_errors()


def test_a_namespace_s_max_inflight_quota_replaces_the_server_default(srv):
    """team-c's quota sets its own in-flight limit (1, where the server's is 2): its excess is
    refused naming the quota; the quota and the namespace's requests in flight read back."""
    path = "/admin/namespaces/team-c/quota"
    r = srv.request("PUT", path, admin=True, json={"max_inflight": 1})
    assert r.status_code == 200 and r.json()["quota"]["max_inflight"] == 1, r.text
    assert srv.request("PUT", path, admin=True, json={"max_inflight": 0}).status_code == 422
    try:
        body = {"task": "team-c/pics", "images": [b64(png_bytes((90, 90, 200), size=(320, 240)))]}
        stop, log = threading.Event(), []
        flood = [threading.Thread(target=_image_flood, args=(srv.url, f"127.0.0.{90 + i}", body, stop, log))
                 for i in range(10)]
        for t in flood:
            t.start()
        stop.wait(300)
        stop.set()
        for t in flood:
            t.join(timeout=120)
        assert {s for s, _, _ in log} <= {200, 429}
        refused = [b["message"] for s, _, b in log if s == 429]
        assert refused and all("its max_inflight quota" in m and "its limit 1" in m for m in refused), refused[:2]
        usage = srv.request("GET", path, admin=True).json()["usage"]
        assert usage["in_flight"] == 0  # every request answered: none holds a slot
    finally:
        assert srv.request("DELETE", path, admin=True).status_code == 200
    assert not srv.internal_errors()


def test_metrics_scrape_needs_its_token_and_is_otherwise_a_missing_route(srv):
    missing = httpx.get(srv.url + "/metricz")  # a route that does not exist
    assert missing.status_code == 404
    want = {k: v.replace("/metricz", "/metrics") if isinstance(v, str) else [p.replace("/metricz", "/metrics") for p in v]
            for k, v in missing.json().items()}
    for headers in ({}, {"Authorization": "Bearer " + "x" * 31}, {"Authorization": SCRAPE}):
        r = httpx.get(srv.url + "/metrics", headers=headers)
        assert (r.status_code, r.json()) == (404, want), headers
    ok = httpx.get(srv.url + "/metrics", headers={"Authorization": f"Bearer {SCRAPE}"})
    assert ok.status_code == 200 and "taskswap_" in ok.text, ok.text[:300]
