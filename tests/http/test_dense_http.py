"""Detection and segmentation over real HTTP: registered as head archives, served in one
request with a classifier, answers in the caller's pixels, limits as 4xx."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from adapters.runtime import Runtime
from support.dense_factories import dense_adapter
from support.factories import head_adapter
from support.http_helpers import assert_error, b64, png_bytes, register_ok
from support.server import server, server_factory  # noqa: F401  (pytest fixtures)

pytestmark = pytest.mark.server


def test_dense_tasks_over_http_equal_the_runtime_and_keep_their_limits(server, tmp_path, vision_backbone,
                                                                       registry):
    det = dense_adapter(tmp_path / "d", vision_backbone, "boxes", input_size=64, max_detections=5,
                        min_score_threshold=0.05, score_threshold=0.2)
    seg = dense_adapter(tmp_path / "s", vision_backbone, "regions", task_type="segmentation",
                        labels=("bg", "x", "y"))
    cls = head_adapter(tmp_path / "c", vision_backbone, "kind")
    for folder in (det, seg, cls):
        register_ok(server, folder)
        registry.register(folder)
    sizes = [(40, 30), (70, 52)]
    images = [b64(png_bytes((30 * i, 200, 90), size)) for i, size in enumerate(sizes)]
    r = server.post("/predict", json={"tasks": ["boxes", "regions", "kind"], "images": images,
                                      "threshold": 0.05})
    assert r.status_code == 200, r.text
    body = r.json()
    boxes, regions, kind = body["results"]
    assert [r["task_type"] for r in body["results"]] == ["detection", "segmentation", "single_label"]
    rt = Runtime(registry)
    pils = [Image.open(io.BytesIO(base64.b64decode(x))) for x in images]
    want = rt.run([rt.prepare(["boxes", "regions"], pils, "image", options={"threshold": 0.05})])[0]
    for (w, h), p, ref in zip(sizes, boxes["predictions"], want[0].rows):
        assert len(p["boxes"]) == len(ref.boxes) <= 5
        for got, exp in zip(p["boxes"], ref.boxes):
            assert got["label"] == exp["label"] and got["score"] == pytest.approx(exp["score"], abs=1e-5)
            assert 0 <= got["box"][0] <= got["box"][2] <= w and 0 <= got["box"][1] <= got["box"][3] <= h
    for (w, h), p, ref in zip(sizes, regions["predictions"], want[1].rows):
        mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(p["mask_png"]))))
        assert mask.shape == (h, w) and p["mask_png"] == ref.mask_png
        assert sum(p["shares"].values()) == pytest.approx(1.0)
        assert all(s["rle"]["size"] == [h, w] for s in p["segments"])
    assert all("label" in p for p in kind["predictions"])

    r = server.post("/predict", json={"task": "boxes", "images": images, "threshold": 0.01})
    assert_error(r, 400, "threshold 0.01", "min_score_threshold")
    r = server.post("/predict", json={"task": "boxes", "images": images, "max_detections": 6})
    assert_error(r, 400, "max_detections 6")
    r = server.post("/predict", json={"task": "kind", "images": images, "threshold": 0.5})
    assert_error(r, 400, "threshold", "applies to none")
    r = server.post("/predict", json={"task": "boxes", "images": images, "threshold": 2})
    assert r.status_code == 422
