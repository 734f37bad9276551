"""``taskswap evaluate`` for dense tasks: an adapter folder scored on held-out data (a COCO
file; image + PNG mask folders) gives the numbers the trainer reported for that data, in
process and through the CLI."""

from __future__ import annotations

import json

import pytest

from training import cli
from training.dense.data import load_coco, load_mask_folders, write_coco
from training.dense.fit import DenseFitConfig
from training.dense_run import train_dense
from training.evaluate_dense import evaluate_dense_adapter, held_out, is_dense

from support.dense_factories import mask_folders, squares
from support.factories import head_adapter


def _cli_json(tmp_path, capsys, *args) -> dict:
    out = tmp_path / "eval.json"
    code = cli.main(["evaluate", *map(str, args), "--json", str(out), "--quiet"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    return json.loads(out.read_text())


def test_detection_evaluate_equals_the_trainer_s_map(tmp_path, vision_backbone, capsys):
    train = load_coco(write_coco(squares(24, 11), tmp_path / "train"))
    test_file = write_coco(squares(8, 12), tmp_path / "test")
    cfg = DenseFitConfig("detection", [8, 16], input_size=64, width=16, epochs=6, trunk_batch=8)
    res = train_dense("boxes", vision_backbone, train, {"test": load_coco(test_file)}, cfg, tmp_path / "out")
    reported = json.loads((res.path / "adapter.json").read_text())["metrics"]
    assert reported["headline"]["metric"] == "test_map" and reported["test_map"] > 0  # boxes were found

    assert is_dense(res.path)
    tests = held_out("detection", ["a", "b"], path=test_file)
    [ev] = evaluate_dense_adapter(res.path, tests, vision_backbone, progress=False)
    assert ev.split == "test" and ev.task == "boxes"
    for key in ("map", "map50", "map75"):
        assert ev.metrics[key] == pytest.approx(reported[f"test_{key}"], abs=1e-6)

    got = _cli_json(tmp_path, capsys, res.path, "--data", test_file,
                    "--backbone", vision_backbone.spec.source, "--backbone-name", "vision")
    assert got["task_type"] == "detection"
    assert got["metrics"]["test"]["map"] == pytest.approx(reported["test_map"], abs=1e-6)


def test_segmentation_evaluate_equals_the_trainer_s_miou(tmp_path, vision_backbone, capsys):
    labels = ["background", "a", "b"]
    train = load_mask_folders(*mask_folders(squares(16, 13), tmp_path / "train"), labels)
    images, masks = mask_folders(squares(6, 14), tmp_path / "test")
    cfg = DenseFitConfig("segmentation", [8, 16, 32], input_size=64, width=16, epochs=5, trunk_batch=8)
    res = train_dense("blocks", vision_backbone, train, {"test": load_mask_folders(images, masks, labels)},
                      cfg, tmp_path / "out")
    reported = json.loads((res.path / "adapter.json").read_text())["metrics"]
    assert reported["headline"]["metric"] == "test_miou"

    tests = held_out("segmentation", labels, path=images, masks=masks)
    [ev] = evaluate_dense_adapter(res.path, tests, vision_backbone, progress=False)
    assert ev.metrics["miou"] == pytest.approx(reported["test_miou"], abs=1e-9)
    assert ev.metrics["iou"] == pytest.approx(res.metrics["test"]["iou"], abs=1e-9)

    got = _cli_json(tmp_path, capsys, res.path, "--data", images, "--masks", masks,
                    "--backbone", vision_backbone.spec.source, "--backbone-name", "vision")
    assert got["metrics"]["test"]["miou"] == pytest.approx(reported["test_miou"], abs=1e-9)
    assert got["metrics"]["test"]["pixel_accuracy"] == pytest.approx(reported["test_pixel_accuracy"], abs=1e-9)


def test_dense_evaluate_names_bad_held_out_data(tmp_path, vision_backbone, capsys):
    test_file = write_coco(squares(2, 15), tmp_path / "test")
    with pytest.raises(Exception, match=r"categories \['a', 'b'\].*not the task's labels \['x', 'y'\]"):
        held_out("detection", ["x", "y"], path=test_file)
    with pytest.raises(Exception, match="--masks"):
        held_out("segmentation", ["bg", "a"], path=tmp_path)
    with pytest.raises(Exception, match="not a detection data set"):
        held_out("detection", ["a", "b"], demo="brain-regions")
    assert not is_dense(head_adapter(tmp_path / "cls", vision_backbone, "kind"))
