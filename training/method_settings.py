"""The settings half of each training method, one table: defaults and reported settings.

:class:`training.config.TrainConfig` fills the hyper-parameters a run leaves ``None`` from
here, and the method classes in :mod:`training.methods` (which fit, and import the fitting
code that reads ``TrainConfig``) read their settings from here too. This module sits below
both and imports neither, so the settings never import the code that trains.

Adding a method: one entry below, and its behaviour class in ``training/methods/``
(``tests/training/test_training_methods.py`` checks that the two tables name the same methods).

Example::

    >>> method_settings("lora").defaults_for("single_label")["head_init"]
    'normal'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

COMMON_HYPERPARAMETERS = ("method", "task_type", "hidden", "activation", "pooling", "normalize", "epochs",
                          "lr", "batch_size", "patience", "weight_decay", "select", "val_fraction", "seed")
"""Settings every run reports (manifest ``training.hyperparameters`` and the card), in order."""


@dataclass(frozen=True)
class MethodSettings:
    """What a method sets on :class:`~training.config.TrainConfig` and what it reports."""

    name: str
    """The ``method`` value that selects it (a key of :data:`METHOD_SETTINGS`)."""
    defaults: Mapping[str, object]
    """Values of the ``TrainConfig`` fields left ``None``."""
    task_defaults: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    """Task type name -> defaults that differ from :attr:`defaults` for that type."""
    hyperparameters: tuple[str, ...] = ()
    """Settings of this method reported after :data:`COMMON_HYPERPARAMETERS`."""
    warm_starts_from_a_head: bool = False
    """Whether ``init_from`` (another task's head as the starting point) applies to it."""

    def __post_init__(self):
        # Shared by every run: read-only, so no run can change another's defaults.
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))
        object.__setattr__(self, "task_defaults", MappingProxyType(
            {t: MappingProxyType(dict(d)) for t, d in self.task_defaults.items()}))

    def defaults_for(self, task_type: str) -> dict:
        """The defaults of a run of this method for ``task_type`` (a fresh dict).

        >>> method_settings("head").defaults_for("regression")["epochs"]
        200
        """
        return {**self.defaults, **self.task_defaults.get(task_type, {})}


_FINE_TUNING = ("head_lr", "warmup_fraction", "schedule", "clip_norm", "head_dropout", "head_init", "warm_start")

HEAD = MethodSettings(
    name="head",
    defaults={"epochs": 200, "lr": 1e-3, "batch_size": 64, "patience": 10, "weight_decay": 1e-4, "select": "loss"},
    warm_starts_from_a_head=True,
)

LORA = MethodSettings(
    name="lora",
    defaults={"epochs": 6, "lr": 2e-3, "batch_size": 32, "patience": 6, "weight_decay": 0.0, "head_lr": 2e-3,
              "select": "headline", "head_init": "standardised", "head_dropout": 0.0},
    task_defaults={
        # The token LoRA tagger has its own recipe (warm-started head, constant lr, lowest
        # validation loss kept: training/token_fit.py); these are the settings its transfer
        # report was measured with (docs/token-classification.md), so the pooled recipe's
        # changes do not reach it unmeasured.
        "token_classification": {"epochs": 5, "lr": 5e-4, "patience": 2, "select": "loss"},
        # BERT's classifier head: measured on single-label classification (+1.0 on the development
        # set, +2.7 on the test set at 200 labels per class, docs/top-layers.md). Regression and
        # multi-label keep the standardised head (on Whissell regression, one run of 1,500 words,
        # BERT's head scored test R² 0.353 against 0.371).
        "single_label": {"head_init": "normal", "head_dropout": 0.1},
        # A causal-LM LoRA (training/generation/fit.py): few epochs over short pairs, batch 8,
        # the best validation chrF kept.
        "generation": {"epochs": 3, "lr": 1e-3, "batch_size": 8, "select": "headline"},
    },
    hyperparameters=("lora_r", "lora_alpha", "lora_dropout", "lora_targets", *_FINE_TUNING),
)

TOP_LAYERS = MethodSettings(
    name="top_layers",
    # The top block's lr; blocks below get layer_decay times the one above, the head head_lr.
    defaults={"epochs": 6, "lr": 5e-4, "batch_size": 32, "patience": 6, "weight_decay": 0.01,
              "head_lr": 2e-3, "select": "headline", "head_init": "standardised", "head_dropout": 0.0},
    hyperparameters=("layers", "layer_decay", *_FINE_TUNING),
)

SCRATCH = MethodSettings(
    name="scratch",
    # Scratch runs all its epochs (patience = epochs) and keeps the best validation state:
    # from random weights the validation loss is flat for the first epochs on small data,
    # and a patience of 3 stopped runs before they had learnt anything (see bench/transfer_report.py).
    defaults={"epochs": 10, "lr": 1e-3, "batch_size": 32, "patience": 10, "weight_decay": 1e-2, "select": "loss"},
)

PROMPT = MethodSettings(
    # A generation task from its prompt alone (training/methods/prompt.py): nothing is fitted;
    # batch_size is the evaluation's decode batch.
    name="prompt",
    defaults={"epochs": 1, "lr": 1e-3, "batch_size": 16, "patience": 1, "weight_decay": 0.0, "select": "last"},
)

METHOD_SETTINGS: dict[str, MethodSettings] = {s.name: s for s in (HEAD, LORA, TOP_LAYERS, SCRATCH, PROMPT)}
"""Method name -> its settings, in the order the CLI and the docs list them."""


def method_settings(name: str) -> MethodSettings:
    """The settings of the method called ``name``; a ``ValueError`` naming the known ones otherwise."""
    s = METHOD_SETTINGS.get(name)
    if s is None:
        raise ValueError(f"method {name!r} is unknown; use one of {list(METHOD_SETTINGS)}")
    return s
