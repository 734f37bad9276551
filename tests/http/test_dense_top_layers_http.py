"""Dense tasks with top layers (their own copy of the trunk's blocks up to the deepest map read)
over real HTTP: trained with ``taskswap train --method top_layers`` (detection from a COCO file,
segmentation from mask folders), registered with ``--register``, served beside frozen-trunk tasks
in mixed requests, each row equal to its image sent alone."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from training import cli
from training.dense.data import load_coco
from training.dense.metrics import coco_map

from support.dense_factories import dense_adapter, mask_folders, squares
from support.factories import head_adapter
from support.http_helpers import b64, register_ok
from support.server import server, server_factory  # noqa: F401  (pytest fixtures)

pytestmark = pytest.mark.server
TOL = 1e-5


def _run(capsys, *argv) -> str:
    code = cli.main([str(a) for a in argv])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    return printed.out


def _same(got: dict, ref: dict) -> None:
    if "boxes" in ref:
        assert [b["label"] for b in got["boxes"]] == [b["label"] for b in ref["boxes"]]
        for a, b in zip(got["boxes"], ref["boxes"]):
            assert a["score"] == pytest.approx(b["score"], abs=TOL)
            assert a["box"] == pytest.approx(b["box"], abs=1e-2)
    elif "mask_png" in ref:
        assert got["mask_png"] == ref["mask_png"]
        assert got["shares"] == pytest.approx(ref["shares"], abs=TOL)
    else:
        assert got["label"] == ref["label"] and got["score"] == pytest.approx(ref["score"], abs=TOL)


def test_top_layers_dense_tasks_train_register_and_serve_in_mixed_batches(server, tmp_path, vision_backbone, capsys):
    bb = ["--backbone", vision_backbone.spec.source, "--backbone-name", "vision"]
    reg = ["--register", server.url, "--token", server.admin]
    data = tmp_path / "digits"
    _run(capsys, "data", "digits-coco", "--out", data, "--train", 24, "--test", 6, "--canvas", 64,
         "--digits", "0,1")
    test_file = data / "test" / "annotations.json"
    det = tmp_path / "det"
    _run(capsys, "train", "--name", "det_top", "--task-type", "detection", "--method", "top_layers", "--layers", 2,
         "--data", data / "train" / "annotations.json", "--test-data", test_file, *bb, "--input-size", 64,
         "--epochs", 2, "--out", det, "--quiet", *reg)
    images, masks = mask_folders(squares(12, 0), tmp_path / "seg-train")
    t_images, t_masks = mask_folders(squares(4, 1), tmp_path / "seg-test")
    _run(capsys, "train", "--name", "seg_top", "--task-type", "segmentation", "--method", "top_layers", "--layers", 2,
         "--data", images, "--masks", masks, "--test-data", t_images, "--test-masks", t_masks,
         "--labels", "background,a,b", *bb, "--input-size", 64, "--epochs", 2, "--out", tmp_path / "seg",
         "--quiet", *reg)
    for folder in (dense_adapter(tmp_path / "h", vision_backbone, "det_head", labels=("0", "1"), input_size=64,
                                 min_score_threshold=0.01),
                   head_adapter(tmp_path / "c", vision_backbone, "kind")):
        register_ok(server, folder)
    info = server.get("/adapters/det_top").json()
    assert info["kind"] == "top_layers" and info["dense"]["input_size"] == 64

    doc = json.loads(test_file.read_text())
    imgs = [b64((data / "test" / im["file_name"]).read_bytes()) for im in doc["images"]]
    tasks = ["det_top", "seg_top", "det_head", "kind"]

    def predict(body: dict) -> dict:
        r = server.post("/predict", json={**body, "threshold": 0.01} if "det" in json.dumps(body["tasks"])
                        else body)
        assert r.status_code == 200, r.text
        return r.json()

    # two requests at once (the batcher may join them) beside one with every task
    with ThreadPoolExecutor(3) as pool:
        mixed, lone_det, lone_seg = pool.map(predict, [{"tasks": tasks, "images": imgs},
                                                       {"tasks": ["det_top"], "images": imgs[:2]},
                                                       {"tasks": ["seg_top", "kind"], "images": imgs[2:4]}])
    alone = {(t, i): predict({"tasks": [t], "images": [img]})["results"][0]["predictions"][0]
             for t in tasks for i, img in enumerate(imgs)}
    for res in mixed["results"]:
        for i, p in enumerate(res["predictions"]):
            _same(p, alone[(res["task"], i)])
    for i, p in enumerate(lone_det["results"][0]["predictions"]):
        _same(p, alone[("det_top", i)])
    for res in lone_seg["results"]:
        for i, p in enumerate(res["predictions"]):
            _same(p, alone[(res["task"], i + 2)])

    # the served top-layers detector's answers score the mAP the trainer reported
    reported = json.loads((det / "adapter.json").read_text())["metrics"]
    answers = [alone[("det_top", i)]["boxes"] for i in range(len(imgs))]
    assert coco_map(load_coco(test_file), answers)["map"] == pytest.approx(reported["test_map"], abs=1e-6)
