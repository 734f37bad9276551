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
from taskswap_client import Client, Detection, InvalidRequest, Mask

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


def test_open_inference_protocol_gives_dense_tasks_typed_tensors(server, tmp_path, vision_backbone, registry):
    """tritonclient reads a detector's boxes as FP32 [boxes, 4] (labels BYTES, scores FP32,
    each box's input INT32) and a segmenter's masks as UINT8 [n, H, W], equal to /predict."""
    http = pytest.importorskip("tritonclient.http")
    client = http.InferenceServerClient(url=server.url.removeprefix("http://"), network_timeout=60)
    det = dense_adapter(tmp_path / "d", vision_backbone, "v2boxes", input_size=64, max_detections=7,
                        min_score_threshold=0.05, score_threshold=0.2, seed=3)
    seg = dense_adapter(tmp_path / "s", vision_backbone, "v2regions", task_type="segmentation",
                        labels=("bg", "x", "y"), seed=4)
    for folder in (det, seg):
        register_ok(server, folder)
    sizes = [(40, 30), (70, 52), (33, 61)]
    pngs = [png_bytes((40 * i, 180, 60 + 50 * i), size) for i, size in enumerate(sizes)]

    meta = client.get_model_metadata("v2boxes", headers=server.headers())
    assert {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]} == {
        "boxes": ("FP32", [-1, 4]), "labels": ("BYTES", [-1]), "scores": ("FP32", [-1]),
        "box_image": ("INT32", [-1])}
    meta = client.get_model_metadata("v2regions", headers=server.headers())
    assert {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]} == {
        "mask": ("UINT8", [-1, -1, -1]), "mask_size": ("INT32", [-1, 2]), "shares": ("FP32", [-1, 3])}

    res = client.infer("v2boxes", [_image_input(http, pngs)], parameters={"threshold": 0.05, "max_detections": 7},
                       headers=server.headers())
    want = _predictions(server, "v2boxes", pngs, threshold=0.05, max_detections=7)
    flat = [(i, b) for i, p in enumerate(want) for b in p["boxes"]]
    boxes, scores = res.as_numpy("boxes"), res.as_numpy("scores")
    assert boxes.dtype == np.float32 and boxes.shape == (len(flat), 4) and len(flat) > 0
    assert scores.dtype == np.float32 and res.as_numpy("box_image").tolist() == [i for i, _ in flat]
    assert [x.decode() if isinstance(x, bytes) else x for x in res.as_numpy("labels")] == [b["label"] for _, b in flat]
    assert np.allclose(boxes, [b["box"] for _, b in flat], atol=1e-4)
    assert np.allclose(scores, [b["score"] for _, b in flat], atol=1e-6)
    default = client.infer("v2boxes", [_image_input(http, pngs)], headers=server.headers())
    assert len(default.as_numpy("scores")) <= len(flat) and (default.as_numpy("scores") >= 0.2).all()

    res = client.infer("v2regions", [_image_input(http, pngs)], headers=server.headers())
    want = _predictions(server, "v2regions", pngs)
    mask, mask_size = res.as_numpy("mask"), res.as_numpy("mask_size")
    assert mask.dtype == np.uint8 and mask.shape == (3, 61, 70)
    assert mask_size.tolist() == [[h, w] for w, h in sizes]
    for (w, h), m, p in zip(sizes, mask, want):
        own = np.asarray(Image.open(io.BytesIO(base64.b64decode(p["mask_png"]))))
        assert (m[:h, :w] == own).all() and (m[h:, :] == 255).all() and (m[:, w:] == 255).all()
    assert np.allclose(res.as_numpy("shares"), [[p["shares"][k] for k in ("bg", "x", "y")] for p in want])

    for params, words in (({"threshold": 0.01}, ("threshold 0.01", "min_score_threshold")),
                          ({"max_detections": 8}, ("max_detections 8",)),
                          ({"max_detections": "many"}, ("parameters.max_detections", "integer"))):
        r = server.post("/v2/models/v2boxes/infer", json={
            "parameters": params, "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                              "data": [b64(pngs[0])]}]})
        assert r.status_code == 400 and all(w in r.json()["error"] for w in words), r.text
    client.close()


def _predictions(server, task, pngs, **options) -> list[dict]:
    r = server.post("/predict", json={"task": task, "images": [b64(p) for p in pngs], **options})
    assert r.status_code == 200, r.text
    return r.json()["results"][0]["predictions"]


def _image_input(http, pngs):
    inp = http.InferInput("image", [len(pngs)], "BYTES")
    inp.set_data_from_numpy(np.array(pngs, dtype=object), binary_data=True)  # raw file bytes
    return inp


def test_typed_client_returns_dataclasses_for_boxes_and_masks(server, tmp_path, vision_backbone):
    det = dense_adapter(tmp_path / "d", vision_backbone, "clboxes", input_size=64, max_detections=4,
                        min_score_threshold=0.05, score_threshold=0.3, seed=5)
    seg = dense_adapter(tmp_path / "s", vision_backbone, "clregions", task_type="segmentation",
                        labels=("bg", "x", "y"), seed=6)
    for folder in (det, seg):
        register_ok(server, folder)
    sizes = [(40, 30), (70, 52)]
    pngs = [png_bytes((50 * i, 90, 200), size) for i, size in enumerate(sizes)]
    with Client(server.url, token=server.inference) as ts:
        got = ts.detect("clboxes", pngs, threshold=0.05, max_detections=4)
        want = _predictions(server, "clboxes", pngs, threshold=0.05, max_detections=4)
        assert got.task == "clboxes" and len(got.detections) == 2
        assert any(got.detections)
        for dets, p in zip(got.detections, want):
            assert all(isinstance(d, Detection) for d in dets)
            assert [(d.box, d.label, d.score) for d in dets] == [(tuple(b["box"]), b["label"], b["score"])
                                                                for b in p["boxes"]]
        with pytest.raises(InvalidRequest, match="max_detections 5"):
            ts.detect("clboxes", pngs, max_detections=5)
        masks = ts.segment("clregions", pngs).masks
        want = _predictions(server, "clregions", pngs)
        for (w, h), m, p in zip(sizes, masks, want):
            assert isinstance(m, Mask) and m.labels == ["bg", "x", "y"] and m.classes.shape == (h, w)
            own = np.asarray(Image.open(io.BytesIO(base64.b64decode(p["mask_png"]))))
            assert (m.classes == own).all() and (m.of("x") == (own == 1)).all()
            assert m.shares == p["shares"]
