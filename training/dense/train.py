"""``taskswap train`` for dense task types: fit a head on the frozen maps, score it on the
held-out sets with the served decoding, write a head adapter directory (manifest with the
``dense`` spec and metrics, ``head.safetensors``, model card).

>>> # see tests/training/test_dense_training.py for a run on a tiny backbone
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from adapters.backbones.base import Backbone
from adapters.format import BackboneRef, Manifest, write_head_adapter
from adapters.plugin_checks import validate_manifest
from adapters.tasks import HEADLINE_KEY
from training.dense.data import DenseData
from training.dense.fit import DenseFitConfig, fit_dense, trunk_maps
from training.dense.metrics import coco_map, detections, segmentation_scores

HEADLINES = {"detection": ("map", "mAP@[.5:.95]"), "segmentation": ("miou", "mIoU")}


@dataclass
class DenseResult:
    path: Path
    metrics: dict  # split -> scores
    seconds: float


def score(fit, backbone: Backbone, data: DenseData, cfg: DenseFitConfig) -> dict:
    """The served answers' scores of ``fit`` on ``data``: COCO mAP or IoU."""
    maps = trunk_maps(backbone, data.images, cfg.strides, cfg.input_size, cfg.trunk_batch)
    if cfg.task_type == "detection":
        return coco_map(data, detections(fit.head, maps, data, cfg.input_size,
                                         fit.spec.max_detections, fit.spec.nms_iou))
    return segmentation_scores(fit.head, maps, data)


def train_dense(name: str, backbone: Backbone, train: DenseData, tests: dict[str, DenseData],
                cfg: DenseFitConfig, out: Path) -> DenseResult:
    """Fit, score on each of ``tests`` (split name -> data), write the adapter to ``out``."""
    start = time.perf_counter()
    fit = fit_dense(backbone, train, cfg)
    metrics = {split: score(fit, backbone, d, cfg) for split, d in tests.items()}
    key, words = HEADLINES[cfg.task_type]
    flat = {f"{split}_{k}": v for split, m in metrics.items() for k, v in m.items()
            if isinstance(v, (int, float))}
    first = next(iter(tests), None)
    if first is not None:
        flat[HEADLINE_KEY] = {"metric": f"{first}_{key}", "name": words, "higher_is_better": True}
    m = validate_manifest(Manifest(
        name=name, kind="head", task_type=cfg.task_type, labels=list(train.label_names),
        backbone=BackboneRef(name=backbone.name, fingerprint=backbone.fingerprint, source=backbone.spec.source),
        dense=fit.spec, metrics=flat,
        training={"method": "head", "epochs": cfg.epochs, "lr": cfg.lr, "batch_size": cfg.batch_size,
                  "flip": cfg.flip, "seed": cfg.seed, "train_images": len(train),
                  "trunk_seconds": round(fit.seconds["trunk"], 1), "fit_seconds": round(fit.seconds["fit"], 1),
                  "final_loss": fit.history[-1] if fit.history else None}))
    path = write_head_adapter(out, m, fit.head.state_for_file(),
                              card=_card(name, cfg, train, tests, metrics, fit, words, key))
    return DenseResult(path, metrics, time.perf_counter() - start)


def _card(name, cfg, train, tests, metrics, fit, words, key) -> str:
    lines = [f"# {name}", "",
             f"A {cfg.task_type} head (a one-level FPN over strides {cfg.strides}, width {cfg.width}) "
             f"on the frozen trunk's spatial maps at {cfg.input_size} px; labels: {', '.join(train.label_names)}.",
             "", "## Data", "", f"- train: {train.source}"]
    lines += [f"- {split}: {d.source}" for split, d in tests.items()]
    lines += ["", "## Metrics", "", f"| split | {words} | all |", "|---|---|---|"]
    for split, m in metrics.items():
        lines.append(f"| {split} | {m[key]:.3f} | {json.dumps(m)} |")
    lines += ["", "## Training", "",
              f"{cfg.epochs} epochs, AdamW lr {cfg.lr} (cosine), batch {cfg.batch_size}, "
              f"horizontal flips {'on' if cfg.flip else 'off'}, seed {cfg.seed}; maps computed once "
              f"({fit.seconds['trunk']:.1f} s), head fitted in {fit.seconds['fit']:.1f} s.", ""]
    return "\n".join(lines)
