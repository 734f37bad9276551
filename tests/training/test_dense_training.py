"""Dense training on a tiny MobileNetV2: COCO files and mask folders in, a head adapter out
that the registry serves with the numbers the trainer reported; targets that the served
decoding reads back exactly; flips that keep boxes and masks on their objects."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from adapters.errors import InvalidInput
from adapters.runtime import Runtime
from adapters.tasks.detection import decode
from training.dense.data import load_coco, load_mask_folders, write_coco
from training.dense.fit import DenseFitConfig
from training.dense.metrics import coco_map
from training.dense.targets import detection_targets, flip_boxes, flip_image, flip_mask
from training.dense_run import train_dense

from support.dense_factories import squares


def test_targets_decode_back_to_their_boxes():
    boxes = np.array([[10, 20, 40, 44], [60, 8, 90, 30]], dtype=np.float32)
    heat, reg, centre = detection_targets(boxes, np.array([0, 1]), (100, 50), 64, 8, 2)
    raw = torch.cat([torch.where(heat == 1, 10.0, -10.0),  # logits of the targets
                     torch.logit(reg[:2].clamp(1e-6, 1 - 1e-6)), reg[2:]])
    got = decode(raw, 8, 64, (100, 50), ["a", "b"], 0.5, 10, 0.5)
    assert sorted(g["label"] for g in got) == ["a", "b"]
    for g in got:
        want = boxes[["a", "b"].index(g["label"])]
        assert np.allclose(g["box"], want, atol=0.02)


def test_flips_keep_boxes_and_masks_on_their_objects():
    d = squares(2, 0)
    for img, b in zip(d.images, d.boxes):
        f, fb = flip_image(img), flip_boxes(b, img.width)
        for (x0, y0, x1, y1), (u0, v0, u1, v1) in zip(b.astype(int).tolist(), fb.astype(int).tolist()):
            crop = np.asarray(img.crop((x0, y0, x1, y1)))
            assert (np.asarray(f.crop((u0, v0, u1, v1)))[:, ::-1] == crop).all()
    mask = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert (flip_mask(mask) == np.asarray(flip_image(Image.fromarray(mask)))).all()


def test_coco_file_trains_and_serves_with_the_reported_map(tmp_path, vision_backbone, registry):
    train_file = write_coco(squares(24, 1), tmp_path / "train")
    test_file = write_coco(squares(8, 2), tmp_path / "test")
    train, test = load_coco(train_file), load_coco(test_file)
    assert len(train) == 24 and train.label_names == ["a", "b"]
    cfg = DenseFitConfig("detection", [8, 16], input_size=64, width=16, epochs=6, trunk_batch=8,
                         limits={"score_threshold": 0.3, "min_score_threshold": 0.01})
    res = train_dense("squares", vision_backbone, train, {"test": test}, cfg, tmp_path / "out")
    manifest = json.loads((res.path / "adapter.json").read_text())
    assert manifest["task_type"] == "detection" and manifest["dense"]["input_size"] == 64
    assert manifest["metrics"]["test_map"] == res.metrics["test"]["map"]
    assert "mAP" in (res.path / "README.md").read_text()

    registry.register(res.path)
    rt = Runtime(registry)
    served = rt.run([rt.prepare(["squares"], test.images, "image", options={"threshold": 0.01})])[0][0]
    again = coco_map(test, [r.boxes for r in served.rows])
    assert again["map"] == pytest.approx(res.metrics["test"]["map"], abs=1e-6)


def test_mask_folders_train_a_segmenter_scored_by_iou(tmp_path, vision_backbone, registry):
    for split, seed, n in (("train", 3, 16), ("test", 4, 6)):
        d = squares(n, seed)
        (tmp_path / split / "images").mkdir(parents=True)
        (tmp_path / split / "masks").mkdir()
        for i, (img, b, c) in enumerate(zip(d.images, d.boxes, d.classes)):
            mask = np.zeros((64, 64), dtype=np.uint8)
            for (x0, y0, x1, y1), k in zip(b.astype(int).tolist(), c.tolist()):
                mask[y0:y1, x0:x1] = k + 1
            img.save(tmp_path / split / "images" / f"{i}.png")
            Image.fromarray(mask).save(tmp_path / split / "masks" / f"{i}.png")
    labels = ["background", "a", "b"]
    train = load_mask_folders(tmp_path / "train/images", tmp_path / "train/masks", labels)
    test = load_mask_folders(tmp_path / "test/images", tmp_path / "test/masks", labels)
    cfg = DenseFitConfig("segmentation", [8, 16, 32], input_size=64, width=16, epochs=5, trunk_batch=8)
    res = train_dense("blocks", vision_backbone, train, {"test": test}, cfg, tmp_path / "out")
    m = res.metrics["test"]
    assert set(m["iou"]) == set(labels) and 0 <= m["miou"] <= 1
    registry.register(res.path)
    rt = Runtime(registry)
    served = rt.run([rt.prepare(["blocks"], test.images, "image")])[0][0]
    pred = np.concatenate([np.asarray(Image.open(io.BytesIO(base64.b64decode(r.mask_png)))).ravel()
                           for r in served.rows])
    true = np.concatenate([x.ravel() for x in test.masks])
    assert (pred == true).mean() == pytest.approx(m["pixel_accuracy"], abs=1e-9)


def test_bad_dense_files_are_named(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(InvalidInput, match="categories"):
        load_coco(tmp_path / "c.json")
    (tmp_path / "im").mkdir()
    (tmp_path / "m").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "im" / "x.png")
    with pytest.raises(InvalidInput, match="has no mask"):
        load_mask_folders(tmp_path / "im", tmp_path / "m", ["bg", "x"])
    Image.fromarray(np.full((8, 8), 5, dtype=np.uint8)).save(tmp_path / "m" / "x.png")
    with pytest.raises(InvalidInput, match="holds class 5"):
        load_mask_folders(tmp_path / "im", tmp_path / "m", ["bg", "x"])


def test_cli_trains_a_detector_from_coco_files(tmp_path, vision_backbone, capsys):
    from training import cli
    train_file = write_coco(squares(12, 5), tmp_path / "train")
    test_file = write_coco(squares(4, 6), tmp_path / "test")
    out = tmp_path / "adapter"
    code = cli.main(["train", "--name", "cli-boxes", "--task-type", "detection", "--data", str(train_file),
                     "--test-data", str(test_file), "--backbone", vision_backbone.spec.source,
                     "--backbone-name", "vision", "--image-size", "32", "--input-size", "64",
                     "--epochs", "2", "--out", str(out), "--quiet"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "test: map " in printed.out
    m = json.loads((out / "adapter.json").read_text())
    assert m["task_type"] == "detection" and m["metrics"]["headline"]["metric"] == "test_map"
    code = cli.main(["train", "--name", "x", "--demo", "brain-regions", "--task-type", "detection",
                     "--backbone", vision_backbone.spec.source, "--out", str(tmp_path / "x")])
    assert code != 0 and "not a detection data set" in capsys.readouterr().err


def test_cli_dense_methods_come_from_the_method_table(tmp_path, vision_backbone, capsys):
    """--method picks the dense fitting from the table: a scratch baseline writes a report (and
    refuses --register); a method that fits no dense task is named with the ones that do."""
    from training import cli
    train_file = write_coco(squares(8, 5), tmp_path / "train")
    test_file = write_coco(squares(3, 6), tmp_path / "test")
    common = ["--task-type", "detection", "--data", str(train_file), "--backbone", vision_backbone.spec.source,
              "--backbone-name", "vision", "--image-size", "32", "--input-size", "64", "--epochs", "1", "--quiet"]
    out = tmp_path / "scratch"
    code = cli.main(["train", "--name", "s", "--method", "scratch", "--test-data", str(test_file),
                     "--out", str(out), "--max-seconds", "30", *common])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "loss_curve.png", "pr_curve.png", "predictions.png"]
    assert "from random weights" in (out / "README.md").read_text()
    code = cli.main(["train", "--name", "t", "--method", "prompt", "--out", str(tmp_path / "t"), *common])
    err = capsys.readouterr().err
    assert code != 0 and "'prompt' does not train detection" in err and "lora" in err and "top_layers" in err
    code = cli.main(["train", "--name", "s", "--method", "scratch", "--register", "http://127.0.0.1:9",
                     "--out", str(tmp_path / "s2"), *common])
    assert code != 0 and "baseline report" in capsys.readouterr().err
