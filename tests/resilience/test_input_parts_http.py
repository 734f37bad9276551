"""One long input cut into parts over real HTTP (issue 30, item 1): while one client's
single 10,000-character text is tagged part by part, another client's light request is
answered (by order of completion, not by a clock), and the tagged answer equals the one
the same text gets unsplit.

A request naming a pooled LoRA task beside the token task is never cut within an input
(that row reads window 0 only), so it gives the unsplit answer on the same server.
Clients are told apart by peer address (127.0.0.2 heavy, 127.0.0.3 light).
"""

from __future__ import annotations

import re
import threading

import httpx
import pytest

from adapters.format.archive import make_archive
from support.factories import head_adapter, peft_lora_dir
from support.server import server_factory, tiny_backbones_env  # noqa: F401  (pytest fixture)
from support.token_factories import peft_token_dir, token_head_adapter

pytestmark = pytest.mark.server
WORDS = "the plot of this movie was long and slow, but the actors were very good in every scene. "
LONG = (WORDS * 120)[:10_000]


def client(url: str, source: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=300, transport=httpx.HTTPTransport(local_address=source))


@pytest.fixture(scope="module")
def srv(server_factory, tiny_dir, tmp_path_factory, text_backbone):
    env = {"TASKSWAP_SLICE_COST": "64", "TASKSWAP_SLICE_SPLIT": "1",  # a part = one window
           "TASKSWAP_MAX_REQUEST_TOKEN_WINDOWS": "4096"}
    s = server_factory.start(store=tmp_path_factory.mktemp("store"), backbones=tiny_backbones_env(tiny_dir), env=env)
    root = tmp_path_factory.mktemp("adapters")
    text = str(tiny_dir / "text")
    for folder, name in ((head_adapter(root / "h", text_backbone, "h"), None),
                         (token_head_adapter(root / "t", text_backbone, "t", ["O", "X", "Y"], seed=3), None),
                         (peft_token_dir(root / "tl", text, num_labels=3, seed=4), "tl"),
                         (peft_lora_dir(root / "l", text, seed=5), "l")):
        r = s.register_archive(make_archive(folder), **({"name": name} if name else {}))
        assert r.status_code == 201, r.text
    return s


def queued_rows(s) -> float:
    m = re.search(r"^taskswap_queue_rows(?:\{[^}]*\})? ([0-9.e+]+)$", s.get("/metrics").text, re.M)
    return float(m.group(1)) if m else 0.0


def words(answer: dict, task: str) -> list[dict]:
    res = next(r for r in answer["results"] if r["task"] == task)
    return res["predictions"][0]["words"]


def test_a_light_request_completes_while_one_long_text_is_tagged_in_parts(srv):
    order, heavy = [], {}

    def send_heavy():
        with client(srv.url, "127.0.0.2") as c:
            heavy["r"] = c.post("/predict", json={"tasks": ["t", "tl"], "texts": [LONG]})
        order.append("heavy")

    t = threading.Thread(target=send_heavy)
    t.start()
    try:
        for _ in range(3000):  # until the long text's parts are queued (no clock involved)
            if queued_rows(srv) > 0 or order:
                break
        assert not order, "the long text must still be in flight when the light request is sent"
        with client(srv.url, "127.0.0.3") as c:
            light = c.post("/predict", json={"tasks": ["h"], "texts": ["a light request"]})
        order.append("light")
        assert light.status_code == 200, light.text
    finally:
        t.join(timeout=600)
    assert order == ["light", "heavy"]
    r = heavy["r"]
    assert r.status_code == 200, r.text
    split = words(r.json(), "t")
    assert split[-1]["end"] >= len(LONG.rstrip()) - 1  # the whole text, not its first window
    with client(srv.url, "127.0.0.3") as c:  # the same text, not cut: a pooled LoRA row rides along
        whole = c.post("/predict", json={"tasks": ["t", "l"], "texts": [LONG]})
    assert whole.status_code == 200, whole.text
    unsplit = words(whole.json(), "t")
    assert [(w["start"], w["end"], w["label"]) for w in split] == \
           [(w["start"], w["end"], w["label"]) for w in unsplit]
    assert [w["score"] for w in split] == pytest.approx([w["score"] for w in unsplit], abs=1e-5)
    assert srv.internal_errors() == []
