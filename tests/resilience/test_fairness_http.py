"""Fair scheduling over real HTTP (issue 30, item 1): while one client's heavy request is in
flight, another client's light request is answered first (by order of completion, not by a
clock), the heavy one still gets its whole, correct answer, and the per-request caps are
413s naming their settings on /predict and /embed.

Clients are told apart by peer address: the heavy client connects from 127.0.0.2, the light
one from 127.0.0.3 (both loopback on Linux), as two hosts would.
"""

from __future__ import annotations

import re
import threading

import httpx
import pytest

from adapters.cost import input_units
from adapters.format.archive import make_archive
from support.factories import head_adapter
from support.server import server_factory, tiny_backbones_env  # noqa: F401  (pytest fixture)
from support.token_factories import token_head_adapter

pytestmark = pytest.mark.server
HEAVY = [f"review number {i} says the film was fine" for i in range(600)]
LONG = "the plot of this movie was long and slow and nobody in the room stayed awake " * 12


def client(url: str, source: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=300, transport=httpx.HTTPTransport(local_address=source))


@pytest.fixture(scope="module")
def srv(server_factory, tiny_dir, tmp_path_factory, text_backbone):
    heavy_cost = sum(input_units(text_backbone, HEAVY, per_token=False)[0])
    env = {"TASKSWAP_SLICE_COST": "1",  # every input a slice (and a batch) of its own
           "TASKSWAP_MAX_INPUTS": "4096", "TASKSWAP_MAX_QUEUE_ROWS": "65536",
           "TASKSWAP_MAX_UPLOAD_BYTES": str(16 << 20),
           "TASKSWAP_MAX_REQUEST_COST": str(int(heavy_cost) + 1),  # the heavy request just fits
           "TASKSWAP_MAX_REQUEST_TOKEN_WINDOWS": "16"}
    s = server_factory.start(store=tmp_path_factory.mktemp("store"), backbones=tiny_backbones_env(tiny_dir), env=env)
    root = tmp_path_factory.mktemp("adapters")
    for folder in (head_adapter(root / "h", text_backbone, "h"),
                   token_head_adapter(root / "t", text_backbone, "t", ["O", "X"])):
        r = s.register_archive(make_archive(folder))
        assert r.status_code == 201, r.text
    return s


def queued_rows(s) -> float:
    m = re.search(r"^taskswap_queue_rows(?:\{[^}]*\})? ([0-9.e+]+)$", s.get("/metrics").text, re.M)
    return float(m.group(1)) if m else 0.0


def test_a_light_request_completes_while_a_heavy_one_from_another_client_is_in_flight(srv):
    order, heavy_answer = [], {}

    def heavy():
        with client(srv.url, "127.0.0.2") as c:
            r = c.post("/predict", json={"tasks": ["h"], "texts": HEAVY})
        heavy_answer["r"] = r
        order.append("heavy")

    t = threading.Thread(target=heavy)
    t.start()
    try:
        for _ in range(3000):  # until the heavy request's slices are queued (no clock involved)
            if queued_rows(srv) > 0 or order:
                break
        assert not order, "the heavy request must still be in flight when the light one is sent"
        with client(srv.url, "127.0.0.3") as c:
            light = c.post("/predict", json={"tasks": ["h"], "texts": ["a light request"]})
        order.append("light")
        assert light.status_code == 200, light.text
    finally:
        t.join(timeout=600)
    assert order == ["light", "heavy"]
    r = heavy_answer["r"]
    assert r.status_code == 200, r.text
    rows = r.json()["results"][0]["predictions"]
    assert len(rows) == len(HEAVY)
    with client(srv.url, "127.0.0.3") as c:  # a sliced answer is the answer each input gets alone
        for i in (0, len(HEAVY) // 2, len(HEAVY) - 1):
            one = c.post("/predict", json={"tasks": ["h"], "texts": [HEAVY[i]]}).json()["results"][0]["predictions"][0]
            assert one["label"] == rows[i]["label"]
            assert one["score"] == pytest.approx(rows[i]["score"], abs=1e-5)


def test_per_request_caps_are_413s_naming_their_setting(srv):
    r = srv.post("/predict", json={"tasks": ["t"], "texts": [LONG] * 8})
    assert r.status_code == 413, r.text
    assert "TASKSWAP_MAX_REQUEST_TOKEN_WINDOWS" in r.json()["message"]
    r = srv.post("/embed", json={"texts": HEAVY * 2})
    assert r.status_code == 413, r.text
    assert "TASKSWAP_MAX_REQUEST_COST" in r.json()["message"]
    assert srv.post("/predict", json={"tasks": ["t"], "texts": [LONG]}).status_code == 200
    assert srv.internal_errors() == []
