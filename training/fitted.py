"""What every training method hands back to a trainer: a head, curves and a predictor."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from adapters.heads import Head
from training.calibration import Calibration
from training.feature_stats import FeatureStats
from training.head_fit import History


@dataclass
class FitOutput:
    """A fitted model.

    ``predict(inputs) -> [n, n_outputs]``: what the served adapter answers (probabilities,
    or values in the targets' units), computed the way the server computes them (the
    exported head on the exported trunk). ``scaling``: the task type's target scaling,
    stored in the manifest (regression), or None. ``peft_model`` is
    set for LoRA (saved with PEFT's ``save_pretrained``); ``servable`` is False for the
    from-scratch baseline.
    """

    head: Head
    history: History
    predict: Callable[[list], torch.Tensor]
    pooling: str
    peft_model: object | None = None
    lora_targets: list[str] = field(default_factory=list)
    servable: bool = True
    notes: dict = field(default_factory=dict)
    scaling: dict | None = None
    top_layers: dict | None = None
    """``top_layers``: ``{"blocks": [indices], "state": {backbone tensor name: tensor}}``."""
    feature_stats: FeatureStats | None = None
    """The training rows' first-layer feature statistics (head method), for domain adaptation."""
    calibration: Calibration | None = None
    """The head's calibration on the validation split (head method, task types that calibrate),
    for prior-shift adaptation (:mod:`training.domain.label_shift`)."""


@dataclass
class TokenFit:
    """A fitted per-token model (:mod:`training.tokens`).

    ``predict(data) -> ([kept words, labels] probabilities, kept word indices per sentence)``.
    ``head`` is None for the scratch baseline (a report, not an adapter); ``peft_model`` and
    ``lora_targets`` are set for LoRA; ``trained_parameters`` for the baseline's card.
    """

    head: Head | None
    history: History
    predict: Callable
    peft_model: object | None = None
    lora_targets: list[str] = field(default_factory=list)
    trained_parameters: int | None = None
