"""COCO ``segmentation`` annotations (polygons, uncompressed and compressed RLE) as segmentation
training input: decoded with pycocotools into class masks, refused with the annotation named when
malformed, and trained end to end through ``taskswap train --task-type segmentation --data x.json``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from adapters.errors import InvalidInput
from training import cli
from training.dense.coco_masks import load_coco_masks
from training.tasks import training_task

from support.dense_factories import squares

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _uncompressed(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE of a bool mask, by hand: run lengths in column-major order,
    starting with a run of zeros."""
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, cur, run = [], 0, 0
    for v in flat:
        if v != cur:
            counts.append(run)
            cur, run = v, 0
        run += 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def _write(folder: Path, annotations, size=(40, 30)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (20, 20, 20)).save(folder / "a.png")
    doc = {"images": [{"id": 7, "file_name": "a.png", "width": size[0], "height": size[1]}],
           "categories": [{"id": 3, "name": "cat"}, {"id": 1, "name": "dog"}],
           "annotations": [{"id": i + 1, "image_id": 7, **a} for i, a in enumerate(annotations)]}
    (folder / "c.json").write_text(json.dumps(doc))
    return folder / "c.json"


def test_polygons_and_both_rle_forms_become_class_masks(tmp_path):
    h, w = 30, 40
    big = np.zeros((h, w), bool)
    big[2:28, 2:38] = True
    small = np.zeros((h, w), bool)
    small[10:15, 20:27] = True
    ring = np.zeros((h, w), bool)
    ring[0:2, 0:5] = True
    compressed = mask_utils.encode(np.asfortranarray(ring.astype(np.uint8)))
    path = _write(tmp_path, [
        {"category_id": 1, "segmentation": _uncompressed(small), "iscrowd": 1},      # dog (index 1)
        {"category_id": 3, "segmentation": [[2, 2, 38, 2, 38, 28, 2, 28]]},          # cat (index 2), larger
        {"category_id": 1, "segmentation": {"size": [h, w], "counts": compressed["counts"].decode()}},
    ])
    data = load_coco_masks(path)
    assert data.label_names == ["background", "dog", "cat"] and data.ids == [7]
    mask = data.masks[0]
    assert mask.shape == (h, w)
    assert (mask[small] == 1).all(), "the smaller dog painted over the larger cat keeps its pixels"
    assert (mask[ring] == 1).all(), "the compressed RLE decodes exactly"
    cat = mask == 2
    # pycocotools rasterises the polygon's outline; the filled rectangle is within a pixel of it
    inter = (cat | small) & big
    assert inter.sum() / (cat | small | big).sum() > 0.9
    assert not mask[big == 0][~ring[big == 0]].any(), "nothing outside the annotations"


@pytest.mark.parametrize("seg, words", [
    ([[1, 2, 3, 4, 5]], "polygon"),
    ([[1, 2, 3, 4]], "polygon"),
    ({"size": [10, 10], "counts": [5, 5]}, "size"),
    ({"size": [30, 40], "counts": [5, 5]}, "summing"),
    ({"size": [30, 40], "counts": 12}, "counts"),
    ("nope", "polygons"),
])
def test_malformed_segmentations_are_refused_by_annotation(tmp_path, seg, words):
    path = _write(tmp_path, [{"category_id": 1, "segmentation": seg}])
    with pytest.raises(InvalidInput, match=words) as err:
        load_coco_masks(path)
    assert "annotation 1" in str(err.value)


def test_an_annotation_without_segmentation_is_refused(tmp_path):
    path = _write(tmp_path, [{"category_id": 1, "bbox": [1, 1, 5, 5]}])
    with pytest.raises(InvalidInput, match="no 'segmentation'"):
        load_coco_masks(path)


def _coco_of_squares(data, folder):
    """The squares as a COCO file with one polygon per square (its four corners)."""
    folder.mkdir(parents=True)
    doc = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    for i, (img, b, c) in enumerate(zip(data.images, data.boxes, data.classes)):
        img.save(folder / f"{i}.png")
        doc["images"].append({"id": i + 1, "file_name": f"{i}.png", "width": img.width, "height": img.height})
        for (x0, y0, x1, y1), k in zip(b.tolist(), c.tolist()):
            doc["annotations"].append({"id": len(doc["annotations"]) + 1, "image_id": i + 1, "category_id": k + 1,
                                       "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]]})
    (folder / "annotations.json").write_text(json.dumps(doc))
    return folder / "annotations.json"


def test_a_coco_polygon_file_trains_a_segmenter_through_the_cli(tmp_path, vision_backbone, capsys):
    train = _coco_of_squares(squares(8, 0), tmp_path / "train")
    test = _coco_of_squares(squares(4, 1), tmp_path / "test")
    out = tmp_path / "seg"
    code = cli.main(["train", "--name", "seg_coco", "--task-type", "segmentation", "--data", str(train),
                     "--test-data", str(test), "--backbone", vision_backbone.spec.source, "--backbone-name",
                     "vision", "--input-size", "64", "--epochs", "1", "--out", str(out), "--quiet"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    m = json.loads((out / "adapter.json").read_text())
    assert m["labels"] == ["background", "a", "b"] and "test_miou" in m["metrics"]
    # the file's masks are what the trainer scored against
    data = training_task("segmentation").load_files(test, m["labels"])
    assert [int(x.max()) for x in data.masks] == [int(c.max()) + 1 for c in squares(4, 1).classes]
