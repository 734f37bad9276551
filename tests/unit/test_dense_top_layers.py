"""Dense tasks with top layers: the trunk's blocks up to the deepest map read, the task's own copy,
trained by the real trainer on a tiny MobileNetV2, registered and served in mixed batches where the
maps below the split are the shared frozen trunk's and the rows above it run their own blocks."""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open

from adapters.errors import IncompatibleAdapter
from adapters.runtime import EmbedSpec, Runtime
from support.dense_compare import same_rows
from support.dense_factories import dense_adapter, squares, with_masks
from support.factories import head_adapter
from training.dense.fit import DenseFitConfig
from training.dense_run import train_dense
from training.tasks import training_task

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(task_type, strides, **kw):
    # a large blocks lr so that two epochs move the copied blocks far from the frozen ones
    settings = dict(input_size=64, width=8, epochs=2, batch_size=8, blocks_lr=0.02, method="top_layers",
                    progress=False, layers=2)
    return DenseFitConfig(task_type, strides, **{**settings, **kw})


@pytest.fixture(scope="module")
def trained(tmp_path_factory, vision_backbone):
    bb = vision_backbone
    root = tmp_path_factory.mktemp("dense-top")
    det = train_dense("det_top", bb, squares(16, 0), {"test": squares(6, 1)}, _cfg("detection", [8, 16]),
                      root / "det")
    seg = train_dense("seg_top", bb, with_masks(squares(16, 2)), {"test": with_masks(squares(6, 3))},
                      _cfg("segmentation", [8, 16, 32], input_size=96), root / "seg")
    return det, seg


@pytest.fixture
def runtime(trained, tmp_path, registry, vision_backbone):
    det, seg = trained
    registry.register(det.path)
    registry.register(seg.path)
    registry.register(dense_adapter(tmp_path / "det_head", vision_backbone, "det_head", input_size=64,
                                    labels=("a", "b"), min_score_threshold=0.01))
    registry.register(head_adapter(tmp_path / "cls", vision_backbone, "cls"))
    return Runtime(registry)


def test_the_blocks_end_at_the_deepest_map_read(trained, vision_backbone):
    det, seg = trained
    maps = vision_backbone.feature_maps
    m_det = json.loads((det.path / "adapter.json").read_text())
    m_seg = json.loads((seg.path / "adapter.json").read_text())
    assert m_det["kind"] == "top_layers" and m_det["top_layers"]["blocks"] == [maps[16] - 1, maps[16]]
    assert m_seg["top_layers"]["blocks"] == [maps[32] - 1, maps[32]]
    with safe_open(str(det.path / "top_layers.safetensors"), "pt") as f:
        layers = {k.split(".")[1] for k in f.keys()}
    assert layers == {str(maps[16] - 1), str(maps[16])}
    assert m_det["training"]["warm_start"]["head_epochs"] == 2


def test_top_layers_change_the_answers(runtime, trained, tmp_path, registry):
    """The same dense head on the frozen trunk answers differently: the rows ran their own blocks."""
    det, _ = trained
    frozen = tmp_path / "frozen"
    frozen.mkdir()
    m = json.loads((det.path / "adapter.json").read_text())
    m.update(name="det_frozen", kind="head")
    m.pop("top_layers")
    (frozen / "adapter.json").write_text(json.dumps(m))
    (frozen / "head.safetensors").write_bytes((det.path / "head.safetensors").read_bytes())
    registry.register(frozen)
    imgs = squares(3, 9).images
    a = runtime.run([runtime.prepare(["det_top"], imgs, "image", options={"threshold": 0.01})])[0][0]
    b = runtime.run([runtime.prepare(["det_frozen"], imgs, "image", options={"threshold": 0.01})])[0][0]
    assert [[x["score"] for x in r.boxes] for r in a.rows] != [[x["score"] for x in r.boxes] for r in b.rows]


def test_mixed_batch_rows_equal_each_row_alone(runtime):
    """Top-layers detection (64 px) + a frozen-trunk detector (64 px) + top-layers segmentation
    (96 px) + a classifier, two requests, one batch: every row equals the same input sent alone
    with that task alone."""
    imgs = squares(3, 11).images
    opts = {"threshold": 0.01}
    mixed = runtime.run([runtime.prepare(["det_top", "det_head", "seg_top", "cls"], imgs, "image",
                                         embed=EmbedSpec(), options=opts),
                         runtime.prepare(["seg_top", "det_top"], imgs[:1], "image", options=opts)])
    got = {r.task: r for r in mixed[0]}
    assert any(got["det_top"].rows[i].boxes for i in range(len(imgs))), "no box: the comparison is empty"
    for i, img in enumerate(imgs):
        for t in ("det_top", "det_head", "seg_top", "cls"):
            o = opts if t.startswith("det") else None
            single = runtime.run([runtime.prepare([t], [img], "image", options=o)])[0][0]
            same_rows(type(single)(single.task, single.version, single.kind, single.task_type,
                                   [got[t].rows[i]]), single)
    for r in mixed[1]:
        o = opts if r.task.startswith("det") else None
        same_rows(r, runtime.run([runtime.prepare([r.task], imgs[:1], "image", options=o)])[0][0])


def test_the_trainer_s_scores_come_back_from_the_runtime(runtime, trained):
    det, seg = trained
    test = squares(6, 1)
    got = runtime.run([runtime.prepare(["det_top"], test.images, "image", options={"threshold": 0.01})])[0][0]
    assert training_task("detection").served_scores(test, got.rows)["map"] == pytest.approx(
        det.metrics["test"]["map"], abs=1e-6)
    test = with_masks(squares(6, 3))
    got = runtime.run([runtime.prepare(["seg_top"], test.images, "image")])[0][0]
    assert training_task("segmentation").served_scores(test, got.rows)["miou"] == pytest.approx(
        seg.metrics["test"]["miou"], abs=1e-6)


def test_blocks_that_do_not_end_at_the_deepest_map_are_refused(trained, tmp_path, registry):
    det, _ = trained
    broken = tmp_path / "late"
    broken.mkdir()
    m = json.loads((det.path / "adapter.json").read_text())
    m["top_layers"]["blocks"] = [b + 1 for b in m["top_layers"]["blocks"]]
    (broken / "adapter.json").write_text(json.dumps(m))
    for f in ("head.safetensors", "top_layers.safetensors"):
        (broken / f).write_bytes((det.path / f).read_bytes())
    with pytest.raises(IncompatibleAdapter, match="deepest map"):
        registry.register(broken)
