"""Dense task types on a tiny MobileNetV2: detection and segmentation heads on the spatial
maps, per-task input sizes (one trunk pass per size), answers in the caller's pixels, and
request options within the manifest's limits."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

from adapters.errors import IncompatibleAdapter, InvalidAdapter, InvalidInput
from adapters.format import DenseSpec
from adapters.runtime import EmbedSpec, Runtime
from adapters.source_size import SOURCE_SIZE, source_size
from adapters.tasks.detection import decode
from adapters.tasks.masks import rle_decode, rle_encode
from service.inputs import InputLimits, decode_image
from support.dense_compare import same_rows
from support.dense_factories import dense_adapter
from support.factories import head_adapter


def images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
            for w, h in ((50, 40), (32, 32), (90, 61))]


def spy(backbone, monkeypatch):
    calls = []
    real = backbone.forward

    def forward(batch, maps=()):
        calls.append((tuple(batch["pixel_values"].shape[-2:]), tuple(maps)))
        return real(batch, maps)
    monkeypatch.setattr(backbone, "forward", forward)
    return calls


@pytest.fixture
def dense(tmp_path, registry, vision_backbone):
    registry.register(head_adapter(tmp_path / "cls", vision_backbone, "cls"))
    registry.register(dense_adapter(tmp_path / "det", vision_backbone, "det", input_size=64,
                                    score_threshold=0.2, min_score_threshold=0.05, max_detections=20))
    registry.register(dense_adapter(tmp_path / "seg", vision_backbone, "seg", task_type="segmentation",
                                    labels=("background", "brain", "skull"), strides=(8, 16, 32)))
    return Runtime(registry)


def by_task(results):
    return {r.task: r for r in results}


def test_mixed_sizes_and_types_equal_each_row_alone(dense, vision_backbone, monkeypatch):
    imgs = images()
    calls = spy(vision_backbone, monkeypatch)
    other = dense.prepare(["seg"], imgs[:1], "image")
    mixed = dense.run([dense.prepare(["det", "cls", "seg"], imgs, "image", embed=EmbedSpec()), other])
    # two sizes in the batch: the classifier and the segmenter share the 32-px pass (with the
    # other request's segmenter and the embeddings), the detector runs at its 64 px
    assert sorted(c[0] for c in calls) == [(32, 32), (64, 64)]
    assert mixed[0].embeddings.shape[0] == 3
    assert [r.task for r in mixed[0]] == ["det", "cls", "seg"]
    got = by_task(mixed[0])
    for i, img in enumerate(imgs):
        alone = by_task(dense.run([dense.prepare(["det", "cls", "seg"], [img], "image")])[0])
        for t in ("det", "cls", "seg"):
            single = dense.run([dense.prepare([t], [img], "image")])[0][0]
            same_rows(type(single)(single.task, single.version, single.kind, single.task_type,
                                   [got[t].rows[i]]), single)
            same_rows(alone[t], single)
    same_rows(mixed[1][0], dense.run([dense.prepare(["seg"], imgs[:1], "image")])[0][0])


def test_answers_are_in_the_caller_s_pixels(dense):
    imgs = images()
    res = by_task(dense.run([dense.prepare(["det", "seg"], imgs, "image", options={"threshold": 0.05})])[0])
    assert any(res["det"].rows[i].boxes for i in range(3))  # random weights still find peaks
    for img, det, seg in zip(imgs, res["det"].rows, res["seg"].rows):
        w, h = img.size
        for b in det.boxes:
            x0, y0, x1, y1 = b["box"]
            assert 0 <= x0 <= x1 <= w and 0 <= y0 <= y1 <= h and b["label"] in ("shirt", "shoe")
        assert [b["score"] for b in det.boxes] == sorted((b["score"] for b in det.boxes), reverse=True)
        mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(seg.mask_png))))
        assert mask.shape == (h, w) and abs(sum(seg.shares.values()) - 1) < 1e-6
        for s in seg.segments:
            k = ["background", "brain", "skull"].index(s["label"])
            assert (rle_decode(s["rle"]) == (mask == k)).all()
            assert s["share"] == pytest.approx((mask == k).mean())


def test_an_image_reduced_while_decoding_answers_in_the_sent_image_s_pixels(dense):
    """Decoding keeps at most ``image_decode_side`` pixels a side (service/decoding.py); boxes
    and masks still come back in the pixels of the image the caller sent."""
    big = Image.fromarray(np.random.default_rng(1).integers(0, 255, (300, 400, 3), dtype=np.uint8))
    buf = io.BytesIO()
    big.save(buf, format="PNG")
    reduced = decode_image(buf.getvalue(), "images[0]", InputLimits(image_decode_side=100))
    assert reduced.size == (100, 75) and source_size(reduced) == (400, 300)
    plain = reduced.copy()  # the same pixels, as if the caller had sent the small image
    plain.info.pop(SOURCE_SIZE, None)
    opts = {"threshold": 0.05}
    sent = by_task(dense.run([dense.prepare(["det", "seg"], [reduced], "image", options=opts)])[0])
    small = by_task(dense.run([dense.prepare(["det", "seg"], [plain], "image", options=opts)])[0])
    assert sent["det"].rows[0].boxes and len(sent["det"].rows[0].boxes) == len(small["det"].rows[0].boxes)
    for a, b in zip(sent["det"].rows[0].boxes, small["det"].rows[0].boxes):
        assert np.allclose(a["box"], np.array(b["box"]) * 4, atol=0.05)  # boxes are rounded to 0.01 and a["score"] == b["score"]
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(sent["seg"].rows[0].mask_png))))
    small_mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(small["seg"].rows[0].mask_png))))
    assert mask.shape == (300, 400) and small_mask.shape == (75, 100)
    assert (mask[::4, ::4] == small_mask).all()  # nearest-neighbour: each decoded pixel, 4x4 times


def test_decode_maps_a_known_peak_back_to_the_image():
    # one class, a 4x4 grid at stride 8 of a 32-px input; a peak at cell (x=1, y=2),
    # offset 0.5 cell, size 2 x 1 cells -> centre (12, 20), box 16 x 8 in input pixels
    raw = torch.full((5, 4, 4), -10.0)
    raw[0, 2, 1] = 3.0
    raw[1:3] = 0.0  # sigmoid(0) = 0.5 cell offsets
    raw[3], raw[4] = float(np.log(2.0)), 0.0
    boxes = decode(raw, 8, 32, (64, 96), ["thing"], 0.5, 10, 0.5)
    assert len(boxes) == 1 and boxes[0]["label"] == "thing"
    # the caller's image is 64 wide, 96 high: x scales by 2, y by 3
    assert boxes[0]["box"] == pytest.approx([(12 - 8) * 2, (20 - 4) * 3, (12 + 8) * 2, (20 + 4) * 3])
    assert boxes[0]["score"] == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item())


def test_request_options_within_the_manifest_s_limits(dense):
    imgs = images()
    low = dense.run([dense.prepare(["det"], imgs, "image", options={"threshold": 0.05})])[0][0]
    one = dense.run([dense.prepare(["det"], imgs, "image",
                                   options={"threshold": 0.05, "max_detections": 1})])[0][0]
    for a, b in zip(low.rows, one.rows):
        assert b.boxes == a.boxes[:1]
    default = dense.run([dense.prepare(["det"], imgs, "image")])[0][0]
    for a, d in zip(low.rows, default.rows):
        assert d.boxes == [b for b in a.boxes if b["score"] >= 0.2]
    with pytest.raises(InvalidInput, match="threshold 0.01 is outside"):
        dense.prepare(["det"], imgs, "image", options={"threshold": 0.01})
    with pytest.raises(InvalidInput, match="max_detections 21 is outside"):
        dense.prepare(["det"], imgs, "image", options={"max_detections": 21})
    with pytest.raises(InvalidInput, match="applies to none of tasks"):
        dense.prepare(["cls"], imgs, "image", options={"threshold": 0.5})


def test_rle_is_coco_s_own():
    mask_utils = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(1)
    for shape in ((5, 7), (1, 1), (13, 4)):
        m = rng.random(shape) > 0.5
        m[0, 0] = True  # a mask starting with 1 (first count 0)
        rle = rle_encode(m)
        coco = mask_utils.frPyObjects(rle, *shape)
        assert (mask_utils.decode(coco) == m).all()
        assert mask_utils.area(coco) == m.sum()


def test_registration_checks_the_dense_head_against_the_maps(tmp_path, registry, vision_backbone,
                                                              text_backbone):
    folder = dense_adapter(tmp_path / "bad", vision_backbone, "bad")
    import json
    m = json.loads((folder / "adapter.json").read_text())
    m["dense"]["in_channels"][0] += 1
    (folder / "adapter.json").write_text(json.dumps(m))
    with pytest.raises(IncompatibleAdapter, match="in_channels gives"):
        registry.register(folder)
    m["dense"]["in_channels"][0] -= 1
    m["dense"]["strides"] = [8, 16, 32]
    (folder / "adapter.json").write_text(json.dumps(m))
    with pytest.raises((InvalidAdapter, ValueError), match="same length"):
        registry.register(folder)


def test_dense_spec_rules():
    with pytest.raises(ValueError, match="min_score_threshold"):
        DenseSpec(strides=[8], in_channels=[4], score_threshold=0.1, min_score_threshold=0.2)
    with pytest.raises(ValueError, match="multiple of the largest stride"):
        DenseSpec(strides=[8, 32], in_channels=[4, 4], input_size=100)
