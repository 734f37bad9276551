"""Unsupervised domain adaptation of a head adapter: a new version for a target domain.

This is the Python API behind ``taskswap adapt`` and ``POST /adapters/{task}/adapt``::

    >>> from training.adapt import adapt                                   # doctest: +SKIP
    >>> r = adapt("var/store/.../<version>", drug_review_texts, "out/sentiment-drugs")
    >>> r.manifest.training["adaptation"]["method"]
    'coral'

The source is a ``head`` adapter folder (a store version, or a training output). A method
that reads source feature statistics (``coral``) takes them from its
``source_stats.safetensors`` (recorded by ``taskswap train`` since it existed) or, for older
adapters, from ``source_inputs`` (its training inputs, again). The adapted folder is an
ordinary adapter of the method's kind (``coral``, ``label_shift``: a head; ``pseudo_label``: a LoRA; same
labels, backbone and preprocessing) whose manifest records, under ``training.adaptation``,
the source version, the method, the target data's fingerprint (sha256 over its inputs) and
where the source statistics came from. ``label_shift`` also reads the source head's calibration
(``source_calibration.json``, written by ``taskswap train``). A head-only method's version also holds the *target*
statistics in its own ``source_stats.safetensors`` (the distribution the adapted head now
reads), so it can be adapted again.

With ``target_labelled`` (a few labelled target examples, used only for scoring), the
manifest's metrics are the adapted head's on them (``val_*``), and the result also holds
the source head's on the same examples; without, the manifest carries no metrics of its
own (the source's move to ``training.adaptation.source_metrics``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors.torch import load_file

from adapters.backbones.base import Backbone, load_backbone
from adapters.kinds import adapter_kind
from adapters.errors import IncompatibleAdapter, InvalidAdapter, InvalidInput
from adapters.format import content_hash
from adapters.heads import Head
from adapters.plugin_checks import read_adapter_dir, validate_manifest
from training.calibration import Calibration
from training.data import LabelledData
from training.domain import AdaptConfig, AdaptContext, FeatureStats, adaptation_method
from training.feature_stats import first_layer_inputs
from training.evaluate import backbone_spec_for
from training.export import prepare_output_dir
from training.features import extract_features, inputs_digest
from training.fitted import FitOutput
from training.head_fit import History
from training.tasks import training_task
from training.trainer import evaluate_split

log = logging.getLogger("taskswap.training")
MIN_TARGET_ROWS = 20  # a covariance from fewer rows is mostly shrinkage


@dataclass
class AdaptResult:
    path: Path
    manifest: object  # adapters.format.Manifest
    source_version: str
    target_fingerprint: str
    seconds: float
    metrics: dict  # {"adapted": SplitMetrics, "source": SplitMetrics} on target_labelled, or {}


def load_head(folder: Path, manifest) -> Head:
    """The head of a head adapter folder, as a trainable-shape ``Head`` (eval mode)."""
    tensors = load_file(str(Path(folder) / "head.safetensors"))
    head = Head(manifest.head, len(manifest.labels or manifest.outputs))
    for i, lin in enumerate(head.linear_layers()):
        lin.weight.data.copy_(tensors[f"layers.{i}.weight"])
        lin.bias.data.copy_(tensors[f"layers.{i}.bias"])
    return head.eval().requires_grad_(False)


def _check_source(folder: Path):
    adir = read_adapter_dir(folder)
    m = adir.manifest
    if m is None or not adapter_kind(adir.kind).shares_trunk_row or m.head is None:  # a head on frozen features
        raise InvalidInput(f"{folder} is a {adir.kind!r} adapter; domain adaptation needs a 'head' "
                           "adapter on pooled features (LoRA and top-layers sources are not supported yet)")
    return m


def _features(backbone: Backbone, inputs: list, manifest, cfg: AdaptConfig, cache_dir, desc: str) -> torch.Tensor:
    if not inputs:
        raise InvalidInput(f"no {desc}")
    x = extract_features(backbone, inputs, manifest.head.pooling, cache_dir, cfg.feature_batch_size,
                         cfg.progress, desc)
    return first_layer_inputs(x, manifest.head.normalize)  # [n, dim]


def _scores(head: Head, pooling: str, feats: dict, data: LabelledData, task_type: str, scaling, predict=None):
    """``data``'s metrics: ``predict`` (a trunk-adapting method's), else ``head`` on the frozen features."""
    task = training_task(task_type)

    def on_features(inputs):
        with torch.no_grad():
            return task.outputs(head(feats[id(inputs)]), scaling)
    predict = predict or on_features
    return evaluate_split(FitOutput(head, History(), predict, pooling, scaling=scaling), data, task_type)[0]


def adapt(source_dir, target_inputs: list, out_dir, config: AdaptConfig | None = None,
          backbone: Backbone | None = None, source_inputs: list | None = None,
          target_labelled: LabelledData | None = None, target_description: str = "unlabelled inputs",
          cache_dir=None) -> AdaptResult:
    """Adapt the head adapter at ``source_dir`` to ``target_inputs`` (texts or file paths) and
    write the new version to ``out_dir``."""
    cfg = config or AdaptConfig()
    method = adaptation_method(cfg.method)
    source_dir = Path(source_dir)
    manifest = _check_source(source_dir)
    if method.task_types is not None and manifest.task_type not in method.task_types:
        raise InvalidInput(f"{method.name} adapts {list(method.task_types)} tasks; {manifest.name!r} is "
                           f"{manifest.task_type!r} (use coral)")
    if len(target_inputs) < MIN_TARGET_ROWS:
        raise InvalidInput(f"{len(target_inputs)} target inputs; give at least {MIN_TARGET_ROWS} "
                           "(the adaptation estimates their feature covariance)")
    recorded = FeatureStats.load(source_dir)
    if recorded is None and not source_inputs and method.needs_source_stats:
        raise InvalidInput(f"{source_dir} records no source feature statistics ({'source_stats.safetensors'} "
                           "is written by `taskswap train` for head adapters); pass the source "
                           "training data (--source-data, or source_texts over HTTP)")
    calibration = Calibration.load(source_dir) if method.needs_calibration else None
    if method.needs_calibration and calibration is None:
        raise InvalidInput(f"{source_dir} records no calibration (source_calibration.json, written by "
                           "`taskswap train --method head` for single-label heads on their validation split); "
                           f"{method.name} needs it: retrain the source head, or use coral / pseudo_label")
    if backbone is None:
        backbone = load_backbone(backbone_spec_for(source_dir))
    if backbone.fingerprint != manifest.backbone.fingerprint:
        raise IncompatibleAdapter(f"the backbone {backbone.name!r} is not the one {source_dir} was trained "
                                  "on (fingerprints differ); adapt on the adapter's own backbone")
    out = prepare_output_dir(Path(out_dir))
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    target = _features(backbone, target_inputs, manifest, cfg, cache_dir, "target features")
    if not method.needs_source_stats:
        source, stats_from = None, f"not used by {method.name}"
    elif recorded is not None:
        source, stats_from = recorded, "recorded in the source adapter (source_stats.safetensors)"
    else:
        source = FeatureStats.of(_features(backbone, source_inputs, manifest, cfg, cache_dir, "source features"))
        stats_from = f"computed from {len(source_inputs)} source inputs given at adaptation time"
    if source is not None and source.dim != manifest.head.input_dim:
        raise InvalidAdapter(f"source statistics are {source.dim}-d but the head reads "
                             f"{manifest.head.input_dim}-d features")
    head = load_head(source_dir, manifest)
    adapted = method.run(AdaptContext(head, manifest, source, list(target_inputs), target, backbone, calibration),
                         cfg)
    seconds = time.perf_counter() - start
    metrics, new_metrics = {}, {}
    if target_labelled is not None:
        feats = {id(target_labelled.inputs): _features(backbone, target_labelled.inputs, manifest, cfg,
                                                       cache_dir, "labelled target features")}
        # a head that normalises does so again on these normalised rows: idempotent
        for key, h, predict in (("adapted", adapted.head, adapted.predict), ("source", head, None)):
            metrics[key] = _scores(h, manifest.head.pooling, feats, target_labelled, manifest.task_type,
                                   manifest.target_scaling, predict)
        new_metrics = training_task(manifest.task_type).manifest_metrics({"validation": metrics["adapted"]})
    version = content_hash(source_dir)
    fingerprint = inputs_digest(target_inputs)
    record = {"method": method.name, "source_task": manifest.name, "source_version": version,
              "target_data": {"sha256": fingerprint, "inputs": len(target_inputs),
                              "description": target_description},
              "source_statistics": stats_from, "settings": asdict(cfg) | {"progress": None},
              "trunk_changed": method.trunk_changed, "kind": method.kind, "source_kind": manifest.kind,
              "source_metrics": manifest.metrics, "seconds": round(seconds, 2), **adapted.notes}
    finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
    new = manifest.model_copy(update={"kind": method.kind, "metrics": new_metrics, "created_at": finished,
                                      "training": {**manifest.training, "adaptation": record}})
    new = validate_manifest(new)
    card = _card(source_dir, record, method.recipe.format(**asdict(cfg), source_rows=source.rows if source else 0,
                                                          target_rows=len(target_inputs)), metrics,
                 method.card_lines(adapted.notes))
    method.write(out, new, card, adapted)
    if not method.trunk_changed:
        FeatureStats.of(target).save(out)  # what the adapted head now reads (the frozen trunk's)
    log.info("adapted %s (%s) to %d target inputs in %.1fs", manifest.name, method.name,
             len(target_inputs), seconds)
    return AdaptResult(out, new, version, fingerprint, seconds, metrics)


def _card(source_dir: Path, record: dict, recipe: str, metrics: dict, found: list[str]) -> str:
    """The source card with a domain-adaptation section first."""
    lines = ["## Domain adaptation", "",
             f"This version is the `{record['source_task']}` version `{record['source_version'][:12]}` "
             f"adapted to a new domain without labels, by `{record['method']}`.", "", recipe, "",
             f"- target data: {record['target_data']['inputs']} inputs ({record['target_data']['description']}), "
             f"sha256 `{record['target_data']['sha256'][:16]}…`",
             f"- source statistics: {record['source_statistics']}", *found]
    if metrics:
        lines += ["", "On the labelled target examples given for scoring only (never for fitting):", ""]
        for key, m in metrics.items():
            nums = ", ".join(f"{k} {v:.4f}" for k, v in m.summary("target").items() if isinstance(v, float))
            lines.append(f"- {key} version: {nums}")
    else:
        lines += ["", "No labelled target data was given: this version has no metrics of its own; the "
                  "source version's are under `training.adaptation.source_metrics` in adapter.json. "
                  "Roll it out in shadow or canary, or give labelled target examples for `if_better`."]
    src = Path(source_dir) / "README.md"
    rest = src.read_text() if src.is_file() else ""
    return "\n".join(lines) + "\n\n## Source version's card\n\n" + rest
