"""``taskswap train`` for dense task types: fit by the run's method (``cfg.method``: a head
on the frozen maps, LoRA on the trunk plus a head, the top blocks' own copy plus a head, or a
from-scratch baseline; each method's
``fit_dense``), score on the held-out sets with the served decoding, write the method's
folder (a head or LoRA adapter directory with the ``dense`` spec and metrics, or a baseline's
report) with a model card.

>>> # see tests/training/test_dense_training.py for a run on a tiny backbone
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from adapters.backbones.base import Backbone
from adapters.errors import InvalidInput
from adapters.format import BackboneRef, Manifest
from adapters.plugin_checks import validate_manifest
from training.dense.data import DenseData
from training.dense.fit import DenseFit, DenseFitConfig
from training.dense.plots import plot_dense_loss
from training.methods import METHODS, training_method
from training.tasks import training_task


@dataclass
class DenseResult:
    path: Path
    metrics: dict  # split -> scores
    seconds: float


def score(fit: DenseFit, data: DenseData, cfg: DenseFitConfig) -> dict:
    """The served answers' scores of ``fit`` on ``data``: COCO mAP or IoU."""
    return training_task(cfg.task_type).dense_scores(fit.head, fit.maps_of(data.images), data, cfg, fit.spec)


def dense_method(name: str):
    """The training method ``name`` if it fits dense tasks; an ``InvalidInput`` naming those that do."""
    method = training_method(name) if name in METHODS else None
    if method is None or not method.fits_dense:
        raise InvalidInput(f"--method {name!r} does not train detection or segmentation tasks; use one of "
                           f"{[k for k, m in METHODS.items() if m.fits_dense]}")
    return method


def train_dense(name: str, backbone: Backbone, train: DenseData, tests: dict[str, DenseData],
                cfg: DenseFitConfig, out: Path) -> DenseResult:
    """Fit by ``cfg.method``, score on each of ``tests`` (split name -> data), write to ``out``."""
    start = time.perf_counter()
    task = training_task(cfg.task_type)
    method = dense_method(cfg.method)
    fit = method.fit_dense(backbone, train, cfg, task)
    maps = {split: fit.maps_of(d.images) for split, d in tests.items()}
    metrics = {split: task.dense_scores(fit.head, maps[split], d, cfg, fit.spec) for split, d in tests.items()}
    key, words = task.headline_metric, task.headline_name
    flat = {f"{split}_{k}": v for split, m in metrics.items() for k, v in m.items()
            if isinstance(v, (int, float))}
    first = next(iter(tests), None)
    if first is not None:
        flat.update(task.headline_record(first))
    m = None
    if method.servable:
        m = validate_manifest(Manifest(
            name=name, kind=method.kind, task_type=cfg.task_type, labels=list(train.label_names),
            backbone=BackboneRef(name=backbone.name, fingerprint=backbone.fingerprint, source=backbone.spec.source),
            dense=fit.spec, metrics=flat, training=_record(cfg, train, fit), **fit.manifest_extra))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots = []
    if fit.history:
        plot_dense_loss(fit.history, out / "loss_curve.png", f"{name}: training loss", task.loss_name)
        plots.append(("loss_curve.png", "training loss per epoch"))
    if first is not None:
        plots += task.dense_plots(fit.head, maps[first], tests[first], cfg, fit.spec, out, first)
    method.write_dense(out, m, _card(name, cfg, train, tests, metrics, fit, words, key, method, plots), fit)
    return DenseResult(out, metrics, time.perf_counter() - start)


def _record(cfg: DenseFitConfig, train: DenseData, fit: DenseFit) -> dict:
    return {"method": cfg.method, "epochs": cfg.epochs, "epochs_run": len(fit.history), "lr": cfg.lr,
            "batch_size": cfg.batch_size, "flip": cfg.flip,
            "scale_jitter": list(cfg.scale_jitter) if cfg.scale_jitter else None,
            "seed": cfg.seed, "train_images": len(train), "max_seconds": cfg.max_seconds,
            "trunk_seconds": round(fit.seconds["trunk"], 1), "fit_seconds": round(fit.seconds["fit"], 1),
            "final_loss": fit.history[-1] if fit.history else None, **fit.notes}


def _card(name, cfg, train, tests, metrics, fit, words, key, method, plots) -> str:
    recipe = method.dense_recipe.format(strides=cfg.strides, width=cfg.width, input_size=cfg.input_size)
    lines = [f"# {name}", "", f"A {cfg.task_type} task ({cfg.method}). {recipe}",
             f"Labels: {', '.join(train.label_names)}.", "", "## Data", "", f"- train: {train.source}"]
    lines += [f"- {split}: {d.source}" for split, d in tests.items()]
    lines += ["", "## Metrics", "", f"| split | {words} | all |", "|---|---|---|"]
    for split, m in metrics.items():
        lines.append(f"| {split} | {m[key]:.3f} | {json.dumps(m)} |")
    stopped = (f" (stopped by the {cfg.max_seconds:g} s cap)" if len(fit.history) < cfg.epochs else "")
    lines += ["", "## Training", "",
              f"{len(fit.history)} of {cfg.epochs} epochs{stopped}, AdamW lr {cfg.lr} (cosine), batch "
              f"{cfg.batch_size}, horizontal flips {'on' if cfg.flip else 'off'}, scale jitter "
              f"{'{}-{}'.format(*cfg.scale_jitter) if cfg.scale_jitter else 'off'}, seed {cfg.seed}; "
              f"trunk maps {fit.seconds['trunk']:.1f} s, fit {fit.seconds['fit']:.1f} s.", ""]
    if plots:
        lines += ["## Plots", ""] + [f"![{caption}]({file})" for file, caption in plots] + [""]
    return "\n".join(lines)
