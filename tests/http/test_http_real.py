"""The real thing over HTTP: embedded MiniLM + MobileNetV2 with the demo store.

The demo store is built by ``python -m training.demo`` (idempotent) into a cache folder
under ``$TASKSWAP_HOME`` (minutes the first time, seconds afterwards) and copied into a
fresh store for the server, which runs on its default settings (no TASKSWAP_BACKBONES).
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys

import pytest

from support.http_helpers import b64, predict_ok
from support.server import REPO, server_factory  # noqa: F401  (pytest fixture)

pytestmark = [pytest.mark.real, pytest.mark.server]

POSITIVE = ["A wonderful, moving film with brilliant performances. A true masterpiece.",
            "Funny, smart and beautifully made; I loved every minute of it.",
            "One of the best movies of the year: gripping, warm and superbly acted."]
NEGATIVE = ["A dull, lifeless mess. Boring, predictable and a complete waste of time.",
            "Terrible acting, an awful script and no laughs at all. Avoid it.",
            "The worst film I have seen in years: tedious, ugly and pointless."]


@pytest.fixture(scope="module")
def demo_server(server_factory, tmp_path_factory):
    from adapters.backbones.embedded import taskswap_home
    cache = taskswap_home() / "demo-store-for-tests"
    r = subprocess.run([sys.executable, "-m", "training.demo", "--store", str(cache),
                        "--tasks", "sentiment,fashion,digits"], cwd=REPO,
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    store = tmp_path_factory.mktemp("real") / "store"
    shutil.copytree(cache, store, ignore=shutil.ignore_patterns(".lock", "staging"))
    return server_factory.start(store=store, backbones=None, ready_timeout_s=600)


def test_demo_tasks_are_listed(demo_server):
    tasks = {a["name"]: a for a in demo_server.get("/adapters").json()["adapters"]}
    assert {"sentiment", "fashion", "digits"} <= set(tasks)
    assert tasks["sentiment"]["labels"] == ["rotten", "fresh"]
    backbones = {b["name"]: b for b in demo_server.get("/backbones").json()["backbones"]}
    assert backbones["text"]["source"] == "embedded:all-MiniLM-L6-v2" and backbones["text"]["hidden_size"] == 384
    assert backbones["vision"]["preprocessing"] == {"image_size": 96}


def test_obvious_sentences_get_the_right_sentiment(demo_server):
    (res,) = predict_ok(demo_server, "sentiment", texts=POSITIVE + NEGATIVE)["results"]
    labels = [p["label"] for p in res["predictions"]]
    assert labels == ["fresh"] * len(POSITIVE) + ["rotten"] * len(NEGATIVE), labels


def test_images_are_classified_well_over_http(demo_server):
    from training.data import load_demo
    fashion = load_demo("fashion-mnist", "test", limit=40)
    files = []
    for i, im in enumerate(fashion.inputs):
        buf = io.BytesIO()
        im.save(buf, "PNG")
        files.append(("files", (f"f{i}.png", buf.getvalue(), "image/png")))
    r = demo_server.post("/predict/upload", files=files, data={"task": "fashion"})
    assert r.status_code == 200, r.text
    got = [p["label"] for p in r.json()["results"][0]["predictions"]]
    want = [fashion.label_names[y] for y in fashion.labels]
    assert sum(g == w for g, w in zip(got, want)) / len(want) >= 0.7  # held-out accuracy is ~0.87

    digits = load_demo("digits", "test", limit=40)
    images = []
    for im in digits.inputs:
        buf = io.BytesIO()
        im.save(buf, "PNG")
        images.append(b64(buf.getvalue()))
    (res,) = predict_ok(demo_server, ["digits"], images=images)["results"]
    got = [p["label"] for p in res["predictions"]]
    want = [digits.label_names[y] for y in digits.labels]
    assert sum(g == w for g, w in zip(got, want)) / len(want) >= 0.8  # held-out accuracy is ~0.95
