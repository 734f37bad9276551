"""Dense metrics from libraries: COCO mAP@[.5:.95] and mAP@.5 with pycocotools' COCOeval,
per-class IoU and mIoU with scikit-learn's ``jaccard_score``. Predictions go through the
served decoding (:func:`adapters.tasks.detection.decode`, :func:`adapters.tasks.segmentation.label_map`),
so the numbers are those of the served answers."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from sklearn.metrics import jaccard_score

from adapters.dense_heads import DenseHead
from adapters.errors import InvalidInput
from adapters.format import DenseSpec
from adapters.tasks.detection import decode
from adapters.tasks.segmentation import label_map
from training.dense.data import DenseData


def head_outputs(head: DenseHead, maps: list[torch.Tensor], batch: int = 64) -> list[torch.Tensor]:
    """Per image ``[n_out, g, g]`` outputs of ``head`` on cached maps."""
    with torch.no_grad():
        return [o for i in range(0, len(maps[0]), batch) for o in head([m[i:i + batch] for m in maps])]


def detections(head: DenseHead, maps, data: DenseData, input_size: int, spec: DenseSpec) -> list[list[dict]]:
    """The boxes the server answers for ``data`` at the lowest threshold a request may ask
    for (``spec.min_score_threshold``: COCO's AP integrates over scores, so low-scoring boxes
    count) and the task's ``max_detections``: what ``taskswap evaluate`` asks a server for."""
    return [decode(raw, head.stride, input_size, im.size, data.label_names, spec.min_score_threshold,
                   spec.max_detections, spec.nms_iou)
            for raw, im in zip(head_outputs(head, maps), data.images)]


def _coco_eval(data: DenseData, dets: list[list[dict]]):
    """pycocotools' accumulated ``COCOeval`` of ``dets`` against ``data``'s boxes (None: no box answered)."""
    gt = {"images": [{"id": i, "width": im.width, "height": im.height} for i, im in zip(data.ids, data.images)],
          "categories": [{"id": k + 1, "name": n} for k, n in enumerate(data.label_names)], "annotations": []}
    for i, b, c in zip(data.ids, data.boxes, data.classes):
        for (x0, y0, x1, y1), k in zip(b.tolist(), c.tolist()):
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i, "category_id": k + 1,
                                      "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                                      "iscrowd": 0})
    res = [{"image_id": i, "category_id": data.label_names.index(d["label"]) + 1,
            "bbox": [d["box"][0], d["box"][1], d["box"][2] - d["box"][0], d["box"][3] - d["box"][1]],
            "score": d["score"]} for i, ds in zip(data.ids, dets) for d in ds]
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its table
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        if not res:
            return None
        ev = COCOeval(coco, coco.loadRes(res), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def coco_map(data: DenseData, dets: list[list[dict]]) -> dict:
    """``{"map": mAP@[.5:.95], "map50": mAP@.5, "map75"...}`` of ``dets`` against ``data``'s boxes."""
    ev = _coco_eval(data, dets)
    if ev is None:
        return {"map": 0.0, "map50": 0.0, "n_images": len(data)}
    s = ev.stats
    return {"map": float(s[0]), "map50": float(s[1]), "map75": float(s[2]), "n_images": len(data)}


def pr_curve50(data: DenseData, dets: list[list[dict]]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(recall points, {label: precision at each})`` at IoU 0.5, all areas, the most detections
    COCOeval keeps: its accumulated precision (the curve whose mean is mAP@.5); NaN where a label
    has no true box, zeros when nothing was answered."""
    ev = _coco_eval(data, dets)
    if ev is None:
        recall = np.linspace(0, 1, 101)
        return recall, {n: np.zeros_like(recall) for n in data.label_names}
    p = ev.eval["precision"][0, :, :, 0, -1]  # [recall points, labels]
    p = np.where(p < 0, np.nan, p)  # -1: no true box of that label
    return np.asarray(ev.params.recThrs), {n: p[:, k] for k, n in enumerate(data.label_names)}


def label_maps(head: DenseHead, maps, data: DenseData) -> list[np.ndarray]:
    """The served masks of ``data``: a class index per pixel of each image."""
    return [label_map(raw, im.size) for raw, im in zip(head_outputs(head, maps), data.images)]


def segmentation_scores(data: DenseData, masks: list[np.ndarray]) -> dict:
    """``{"miou", "iou": {label: IoU}, "pixel_accuracy"}`` of predicted ``masks`` (one
    ``[h, w]`` class map per image) over all pixels of ``data``; a class absent from both
    truth and prediction has no IoU (left out of the mean)."""
    if [m.shape for m in masks] != [m.shape for m in data.masks]:
        raise InvalidInput("the predicted masks are not the size of the images they answer")
    pred = np.concatenate([m.ravel() for m in masks])
    true = np.concatenate([m.ravel() for m in data.masks])
    labels = list(range(len(data.label_names)))
    iou = jaccard_score(true, pred, labels=labels, average=None, zero_division=0)
    seen = np.isin(labels, np.union1d(true, pred))
    per = {n: (float(v) if s else None) for n, v, s in zip(data.label_names, iou, seen)}
    return {"miou": float(iou[seen].mean()), "iou": per, "pixel_accuracy": float((pred == true).mean()),
            "n_images": len(data)}
