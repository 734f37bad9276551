"""One training run in named phases: check → split → fit → evaluate → export.

This is the Python API behind ``taskswap train`` (and the demo adapters)::

    >>> from adapters.backbones.tiny import tiny_backbone_spec
    >>> from training.config import TrainConfig
    >>> from training.data import LabelledData
    >>> d = LabelledData("text", ["good film", "bad film"] * 10, [1, 0] * 10, ["neg", "pos"], "toy")
    >>> r = train(d, tiny_backbone_spec("text", "/tmp/tiny-doc"),
    ...           TrainConfig(name="toy", epochs=5, progress=False), "/tmp/toy-adapter", cache_dir=None)
    >>> r.manifest.kind, sorted(r.metrics)
    ('head', ['train', 'validation'])

Every problem with the data is raised as ``InvalidInput`` in the first phase, before any
backbone forward pass.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from adapters.backbones.base import Backbone, BackboneSpec, load_backbone
from adapters.errors import InvalidInput
from adapters.format import BackboneRef, HeadSpec, Manifest
from adapters.plugin_checks import validate_manifest
from training.card import CardFacts, render_card
from training.config import TrainConfig
from training.data import LabelledData, stratified_split
from training.export import prepare_output_dir, write_metrics
from training.features import default_cache_dir
from training.fitted import FitOutput
from training.head_fit import History
from training.lora import fit_lora
from training.methods import training_method
from training.metrics import SplitMetrics
from training.plots import plot_loss_curves
from training.tasks import training_task

log = logging.getLogger("taskswap.training")
_DEFAULT = object()


@dataclass
class TrainResult:
    """What a run produced. ``probs[split]``: ``[n, n_labels]`` probabilities it reported."""

    path: Path
    config: TrainConfig
    manifest: Manifest | None  # None for the from-scratch baseline (not an adapter)
    metrics: dict[str, SplitMetrics]
    history: History
    seconds: float
    splits: dict[str, LabelledData]
    probs: dict[str, torch.Tensor]
    servable: bool


# ---- phase 1: check -------------------------------------------------------------------
def check_data(train: LabelledData, val: LabelledData | None, test: LabelledData | None,
               backbone_modality: str | None, task_type_name: str = "single_label") -> None:
    """Raise one ``InvalidInput`` listing every problem with the data sets, or return."""
    problems = []
    task = training_task(task_type_name)
    if train.task_type != task.name and (train.values is not None or task.real_valued):
        problems.append(f"the data is {train.task_type} data (targets: "
                        f"{'real values' if train.values is not None else 'class labels'}) but the "
                        f"task type is {task.name}; pass --task-type {train.task_type}")
        InvalidInput.collect(problems, "data")
    for split, d in (("validation", val), ("test", test)):
        if d is not None and d.label_names != train.label_names:
            problems.append(f"{split} labels {d.label_names} differ from training labels "
                            f"{train.label_names}; pass the same label list to both loaders")
        if d is not None and len(d) == 0:
            problems.append(f"the {split} data set is empty")
        if d is not None and d.modality != train.modality:
            problems.append(f"{split} data is {d.modality} but training data is {train.modality}")
    problems += task.check_data(train)
    if val is None and len(train) < 4:
        problems.append(f"only {len(train)} training examples: too few to carve off a validation "
                        "split; give at least 4 or pass validation data")
    if backbone_modality is not None and train.modality != backbone_modality:
        problems.append(f"the data is {train.modality} but the backbone takes {backbone_modality}; "
                        "choose a backbone of the data's modality")
    InvalidInput.collect(problems, "data")


# ---- phase 2: split -------------------------------------------------------------------
def split_data(train: LabelledData, val: LabelledData | None, cfg: TrainConfig
               ) -> tuple[LabelledData, LabelledData]:
    """Carve a stratified, seeded validation split off ``train`` unless one is given."""
    if val is not None:
        return train, val
    fit, held = stratified_split(train, 1.0 - cfg.val_fraction, seed=cfg.seed)
    if len(held) == 0:
        raise InvalidInput("the validation split came out empty; give more examples or a larger "
                           "val_fraction")
    return fit, held


# ---- phase 3: fit ---------------------------------------------------------------------
def fit(backbone: Backbone, train: LabelledData, val: LabelledData, cfg: TrainConfig,
        cache_dir: Path | None) -> FitOutput:
    """Fit with the method ``cfg.method`` names (:data:`training.methods.METHODS`)."""
    return training_method(cfg.method).fit(backbone, train, val, cfg, cache_dir)


# ---- phase 4: evaluate ----------------------------------------------------------------
def evaluate_split(fitted: FitOutput, data: LabelledData, task_type_name: str = "single_label"
                   ) -> tuple[SplitMetrics, torch.Tensor]:
    """The task type's metrics (with its loss) and ``[n, k]`` outputs (probabilities, or values
    in the targets' units) on one split."""
    task = training_task(task_type_name)
    outputs = fitted.predict(data.inputs)
    return task.metrics(data, outputs, task.eval_loss(outputs, data)), outputs


# ---- phase 5: export ------------------------------------------------------------------
def build_manifest(cfg: TrainConfig, backbone: Backbone, data: LabelledData, fitted: FitOutput,
                   metrics: dict[str, SplitMetrics], info: dict) -> Manifest:
    task = training_task(cfg.task_type)
    manifest = Manifest(name=cfg.name, kind=training_method(cfg.method).kind, task_type=task.name,
                        **task.manifest_fields(list(data.label_names), fitted.scaling),
                        backbone=BackboneRef(name=backbone.name, fingerprint=backbone.fingerprint,
                                             source=backbone.spec.source),
                        head=HeadSpec.model_validate(fitted.head.spec.model_dump()),
                        preprocessing=backbone.preprocessing_settings(), metrics=task.manifest_metrics(metrics),
                        training=info, created_at=info["finished_at"],
                        **({"top_layers": {"blocks": fitted.top_layers["blocks"]}} if fitted.top_layers else {}))
    return validate_manifest(manifest)  # what its kind and task type require, as the server will check


def export(out: Path, cfg: TrainConfig, backbone: Backbone, splits: dict[str, LabelledData],
           fitted: FitOutput, metrics: dict[str, SplitMetrics], seconds: float,
           carved: bool = False, outputs: dict[str, torch.Tensor] | None = None) -> Manifest | None:
    """Write the adapter (or baseline report) folder: weights, manifest, card, metrics, plots."""
    train = splits["train"]
    finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
    hyper = {**cfg.hyperparameters(), "pooling": fitted.pooling}
    if fitted.lora_targets:
        hyper["lora_targets"] = fitted.lora_targets
    if fitted.top_layers:
        hyper["layers"] = len(fitted.top_layers["blocks"])
    info = {"method": cfg.method, "hyperparameters": hyper, "data": train.source,
            "examples": {s: len(d) for s, d in splits.items()},
            "class_counts": train.class_counts(), "best_epoch": fitted.history.best_epoch,
            "kept_by": fitted.history.kept_by,
            "epochs_run": len(fitted.history.train_loss), "stopped_early": fitted.history.stopped_early,
            "seconds": round(seconds, 2), "finished_at": finished, "torch": torch.__version__,
            **fitted.notes}
    if fitted.scaling:
        info["target_scaling"] = fitted.scaling
    task = training_task(cfg.task_type)
    facts = CardFacts(
        name=cfg.name, **training_method(cfg.method).card_words(backbone.name), task_type=task.name,
        labels=list(train.label_names),
        backbone_name=backbone.name, backbone_source=backbone.spec.source,
        fingerprint=backbone.fingerprint, preprocessing=backbone.preprocessing_settings(),
        data=_data_lines(splits, cfg, carved), hyper=hyper, metrics=metrics, report_split=_report_split(metrics),
        best_epoch=fitted.history.best_epoch, epochs_run=len(fitted.history.train_loss),
        kept_by=fitted.history.kept_by,
        train_seconds=seconds, device=str(backbone.device), created_at=finished,
        n_train=len(train), lora_targets=fitted.lora_targets,
        plot_file=task.plot(splits.get(_report_split(metrics)), outputs[_report_split(metrics)],
                            metrics[_report_split(metrics)], out, cfg.name) if outputs else None,
        outputs_word=task.outputs_word, loss_words=task.loss_words)
    card = render_card(facts)
    method = training_method(cfg.method)
    manifest = build_manifest(cfg, backbone, train, fitted, metrics, info) if method.servable else None
    method.write(out, manifest, card, fitted)
    write_metrics(out, {"metrics": {s: m.to_dict() for s, m in metrics.items()},
                        "history": fitted.history.to_dict(), "training": info})
    curves = {**fitted.history.to_dict(), "loss_name": task.loss_name, "headline_name": task.headline_name}
    plot_loss_curves(curves, out / "loss_curves.png", f"{cfg.name} ({cfg.method})")
    return manifest


def _report_split(metrics: dict[str, SplitMetrics]) -> str:
    return "test" if "test" in metrics else "validation"


def _data_lines(splits: dict[str, LabelledData], cfg: TrainConfig, carved: bool) -> list[str]:
    train = splits["train"]
    lines = [f"source: {train.source}",
             f"modality: {train.modality}; {len(train.label_names)} "
             f"{'outputs' if train.values is not None else 'labels'}"]
    for s, d in splits.items():
        counts = ", ".join(f"{k} {v}" for k, v in d.class_counts().items())
        lines.append(f"{s}: {len(d)} examples" + (f" ({counts})" if counts else ""))
    if carved:
        lines.append(f"validation carved off the training data ({cfg.val_fraction:.0%}, seed {cfg.seed})")
    return lines


# ---- the run --------------------------------------------------------------------------
def train(data: LabelledData, backbone: Backbone | BackboneSpec, config: TrainConfig, out_dir,
          val: LabelledData | None = None, test: LabelledData | None = None,
          cache_dir=_DEFAULT) -> TrainResult:
    """Train ``config.method`` on ``data`` and write the adapter folder ``out_dir``.

    ``val``: validation data (else ``config.val_fraction`` of ``data``, stratified, seeded).
    ``test``: optional held-out data, scored after training and reported in the card.
    ``cache_dir``: feature cache (default ``$TASKSWAP_HOME/features``; ``None`` disables it).
    """
    check_data(data, val, test, None if isinstance(backbone, BackboneSpec) else backbone.modality,
               config.task_type)
    if isinstance(backbone, BackboneSpec):
        backbone = load_backbone(backbone)
        check_data(data, val, test, backbone.modality, config.task_type)
    out = prepare_output_dir(Path(out_dir))  # only once data and backbone are known good
    cache = default_cache_dir() if cache_dir is _DEFAULT else (Path(cache_dir) if cache_dir else None)
    torch.manual_seed(config.seed)
    start = time.perf_counter()
    fit_data, val_data = split_data(data, val, config)
    splits = {"train": fit_data, "validation": val_data}
    fitted = fit(backbone, fit_data, val_data, config, cache)
    seconds = time.perf_counter() - start
    metrics, probs = {}, {}
    eval_splits = dict(splits)
    if not training_method(config.method).scores_train_split:
        eval_splits.pop("train")  # a full trunk pass over the training set: skipped for speed
    if test is not None:
        eval_splits["test"] = test
        splits["test"] = test
    for split, d in eval_splits.items():
        metrics[split], probs[split] = evaluate_split(fitted, d, config.task_type)
    manifest = export(out, config, backbone, splits, fitted, metrics, seconds, carved=val is None,
                      outputs=probs)
    log.info("trained %s (%s) in %.1fs: val headline %.4f", config.name, config.method, seconds,
             metrics["validation"].accuracy)
    return TrainResult(out, config, manifest, metrics, fitted.history, seconds, splits, probs,
                       fitted.servable)
