"""A held-out COCO-format detection data set new to the project (scikit-learn's digits on
crops of its sample photos, ``taskswap data digits-coco``) trains, registers, evaluates and
serves end to end through the CLI and HTTP, with the mAP the trainer reported."""

from __future__ import annotations

import base64
import json

import pytest

from training import cli
from training.dense.data import load_coco
from training.dense.metrics import coco_map

from support.server import server, server_factory  # noqa: F401  (pytest fixtures)

pytestmark = pytest.mark.server


def _run(capsys, *argv) -> str:
    code = cli.main([str(a) for a in argv])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    return printed.out


def test_digits_coco_trains_evaluates_and_serves_with_the_reported_map(server, tmp_path, vision_backbone,
                                                                        capsys):
    data = tmp_path / "digits"
    out = _run(capsys, "data", "digits-coco", "--out", data, "--train", 48, "--test", 8, "--canvas", 96,
               "--digits", "0,1,7")
    test_file = data / "test" / "annotations.json"
    assert str(test_file) in out
    doc = json.loads(test_file.read_text())
    assert [c["name"] for c in doc["categories"]] == ["0", "1", "7"] and len(doc["images"]) == 8
    assert all((data / "test" / im["file_name"]).is_file() for im in doc["images"])

    adapter = tmp_path / "adapter"
    _run(capsys, "train", "--name", "digits", "--task-type", "detection", "--data", data / "train" / "annotations.json",
         "--test-data", test_file, "--backbone", vision_backbone.spec.source, "--backbone-name", "vision",
         "--input-size", 96, "--epochs", 40, "--out", adapter, "--quiet",
         "--register", server.url, "--token", server.admin)
    reported = json.loads((adapter / "adapter.json").read_text())["metrics"]
    # the tiny random trunk finds digits poorly, but some: the comparisons below compare boxes
    assert reported["test_map50"] > 0 and reported["headline"]["metric"] == "test_map"

    # the folder, scored in process
    folder = tmp_path / "folder.json"
    _run(capsys, "evaluate", adapter, "--data", test_file, "--backbone", vision_backbone.spec.source,
         "--backbone-name", "vision", "--json", folder, "--quiet")
    # the served task, over HTTP through the typed client
    served = tmp_path / "served.json"
    url_args = ["--token", server.inference] if server.inference else []
    printed = _run(capsys, "evaluate", "--url", server.url, "--task", "digits", "--data", test_file,
                   "--json", served, "--quiet", *url_args)
    assert "mAP@[.5:.95]" in printed
    for got in (json.loads(folder.read_text()), json.loads(served.read_text())):
        for key in ("map", "map50", "map75"):
            assert got["metrics"]["test"][key] == pytest.approx(reported[f"test_{key}"], abs=1e-6), key

    # and /predict's own answers at the task's lowest threshold score the same
    test = load_coco(test_file)
    images = [base64.b64encode((data / "test" / im["file_name"]).read_bytes()).decode()
              for im in doc["images"]]
    info = server.get("/adapters/digits").json()
    r = server.post("/predict", json={"task": "digits", "images": images,
                                      "threshold": info["dense"]["min_score_threshold"]})
    assert r.status_code == 200, r.text
    answers = [p["boxes"] for p in r.json()["results"][0]["predictions"]]
    assert sum(map(len, answers)) > 0
    assert coco_map(test, answers)["map"] == pytest.approx(reported["test_map"], abs=1e-6)
