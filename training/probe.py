"""The ``head`` method: cached frozen features, then a linear/MLP head fitted on them.

Example::

    >>> from adapters.backbones.base import load_backbone
    >>> from adapters.backbones.tiny import tiny_backbone_spec
    >>>     >>> from training.data import LabelledData
from training.feature_stats import FeatureStats, first_layer_inputs
    >>> bb = load_backbone(tiny_backbone_spec("text", "/tmp/tiny-doc"))
    >>> d = LabelledData("text", ["good", "bad"] * 8, [1, 0] * 8, ["neg", "pos"], "toy")
    >>> out = fit_probe(bb, d, d, TrainConfig(name="t", epochs=5, progress=False), None)
    >>> out.predict(["good"]).shape
    torch.Size([1, 2])

The head learns what ``cfg.task_type`` says (softmax classification by default; a regression
head learns standardised targets, the scaling travelling in ``FitOutput.scaling``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from adapters.backbones.base import Backbone
from adapters.errors import InvalidInput
from adapters.format import HeadSpec
from training.calibration import fit_calibration
from training.config import TrainConfig
from training.data import LabelledData
from training.feature_stats import FeatureStats, first_layer_inputs
from training.features import extract_features
from training.fitted import FitOutput
from training.head_fit import HeadFitConfig, fit_head
from training.init_from import load_warm_start
from training.tasks import training_task


def head_spec(cfg: TrainConfig, backbone: Backbone) -> HeadSpec:
    pooling = cfg.pooling or backbone.default_pooling
    if pooling not in backbone.available_poolings:
        raise InvalidInput(f"pooling {pooling!r} is not available on backbone {backbone.name!r}; "
                           f"choose one of {backbone.available_poolings}")
    return HeadSpec(pooling=pooling, input_dim=backbone.hidden_size, hidden=list(cfg.hidden),
                    activation=cfg.activation, normalize=cfg.normalize)


def head_fit_config(cfg: TrainConfig) -> HeadFitConfig:
    return HeadFitConfig(epochs=cfg.epochs, lr=cfg.lr, weight_decay=cfg.weight_decay,
                         batch_size=cfg.batch_size, patience=cfg.patience, seed=cfg.seed)


def fit_probe(backbone: Backbone, train: LabelledData, val: LabelledData, cfg: TrainConfig,
              cache_dir: Path | None, fit_cfg: HeadFitConfig | None = None) -> FitOutput:
    """Fit a head on frozen features of ``train``, early-stopped on ``val``."""
    spec = head_spec(cfg, backbone)
    memo: dict[int, tuple[list, torch.Tensor]] = {}  # id -> (the list itself, features)

    def features(inputs: list, desc: str) -> torch.Tensor:
        hit = memo.get(id(inputs))
        if hit is None or hit[0] is not inputs:  # each split once per run; disk cache across runs
            hit = memo[id(inputs)] = (inputs, extract_features(
                backbone, inputs, spec.pooling, cache_dir, cfg.feature_batch_size, cfg.progress, desc))
        return hit[1]

    task = training_task(cfg.task_type)
    scaling = task.target_scaling(train)
    warm = None if cfg.init_from is None else load_warm_start(
        Path(cfg.init_from), spec, task.name, backbone.fingerprint, list(train.label_names))
    tx = features(train.inputs, "features (train)")
    vx = features(val.inputs, "features (validation)")
    fit = fit_head(spec, len(train.label_names), tx, task.targets(train, scaling), vx,
                   task.targets(val, scaling), fit_cfg or head_fit_config(cfg), cfg.progress, task, warm)

    def predict(inputs: list) -> torch.Tensor:
        with torch.no_grad():
            return task.outputs(fit.head(features(inputs, "features")), scaling)  # [n, k]

    calibration = None
    if task.calibrates:  # for a later prior-shift adaptation (training.domain.label_shift)
        with torch.no_grad():
            calibration = fit_calibration(fit.head(vx), task.targets(val, scaling))
    return FitOutput(fit.head, fit.history, predict, spec.pooling, scaling=scaling,
                     feature_stats=FeatureStats.of(first_layer_inputs(tx, spec.normalize)),
                     calibration=calibration,
                     notes={"init_from": warm.record()} if warm else {})
