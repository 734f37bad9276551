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
from training.dense.data import DenseData
from training.dense.fit import DenseFitConfig, fit_dense, trunk_maps
from training.tasks import training_task


@dataclass
class DenseResult:
    path: Path
    metrics: dict  # split -> scores
    seconds: float


def score(fit, backbone: Backbone, data: DenseData, cfg: DenseFitConfig) -> dict:
    """The served answers' scores of ``fit`` on ``data``: COCO mAP or IoU."""
    maps = trunk_maps(backbone, data.images, cfg.strides, cfg.input_size, cfg.trunk_batch)
    return training_task(cfg.task_type).dense_scores(fit.head, maps, data, cfg, fit.spec)


def train_dense(name: str, backbone: Backbone, train: DenseData, tests: dict[str, DenseData],
                cfg: DenseFitConfig, out: Path) -> DenseResult:
    """Fit, score on each of ``tests`` (split name -> data), write the adapter to ``out``."""
    start = time.perf_counter()
    task = training_task(cfg.task_type)
    fit = fit_dense(backbone, train, cfg, task)
    metrics = {split: score(fit, backbone, d, cfg) for split, d in tests.items()}
    key, words = task.headline_metric, task.headline_name
    flat = {f"{split}_{k}": v for split, m in metrics.items() for k, v in m.items()
            if isinstance(v, (int, float))}
    first = next(iter(tests), None)
    if first is not None:
        flat.update(task.headline_record(first))
    m = validate_manifest(Manifest(
        name=name, kind="head", task_type=cfg.task_type, labels=list(train.label_names),
        backbone=BackboneRef(name=backbone.name, fingerprint=backbone.fingerprint, source=backbone.spec.source),
        dense=fit.spec, metrics=flat,
        training={"method": "head", "epochs": cfg.epochs, "lr": cfg.lr, "batch_size": cfg.batch_size,
                  "flip": cfg.flip, "scale_jitter": list(cfg.scale_jitter) if cfg.scale_jitter else None,
                  "seed": cfg.seed, "train_images": len(train),
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
              f"horizontal flips {'on' if cfg.flip else 'off'}, scale jitter "
              f"{'{}-{}'.format(*cfg.scale_jitter) if cfg.scale_jitter else 'off'}, seed {cfg.seed}; maps computed once "
              f"({fit.seconds['trunk']:.1f} s), head fitted in {fit.seconds['fit']:.1f} s.", ""]
    return "\n".join(lines)
