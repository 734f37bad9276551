"""The training half of a task type: targets, loss, metrics, headline, card words, plot.

The serving half (manifest fields, features, scoring, answers) is
:class:`adapters.tasks.TaskType`; this one is what only training needs, keyed by the same
task-type name in :data:`training.tasks.TRAINING_TASKS`. Every training method and both
trainers ask it; none of them names a task type.

The **headline** is the one number a run is judged by: the per-epoch validation curve, the
log line, and the comparison a rollout makes (``if_better``, shadow reports). The trainer
records which metric it is and its direction in the manifest's metrics
(:meth:`TrainingTask.headline_record`), so the server can compare two versions without
importing training.

Implementations are stateless singletons, like the serving half.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from adapters.tasks import HEADLINE_KEY


class TrainingTask:
    """How one task type trains. Subclass it, set :attr:`name`, register it in the table."""

    name: ClassVar[str]
    outputs_word: ClassVar[str] = "labels"
    """What the model card calls the outputs ("labels", "outputs", "tags")."""
    loss_words: ClassVar[str] = "cross-entropy"
    """The training loss in words, for the model card."""
    loss_name: ClassVar[str] = "cross-entropy"
    """The loss axis of the loss curves."""
    headline_name: ClassVar[str] = "accuracy"
    """The headline in words: the per-epoch validation curve, the log line, the card."""
    headline_metric: ClassVar[str] = "accuracy"
    """The headline's key in a metrics summary, after the split prefix (``val_accuracy``)."""
    higher_is_better: ClassVar[bool] = True
    """The headline's direction: what a rollout's ``if_better`` promotes on."""
    real_valued: ClassVar[bool] = False
    """Targets are real values (``LabelledData.values``), not class indices."""
    calibrates: ClassVar[bool] = False
    """Whether a head method run fits and records a softmax calibration on its validation split
    (``source_calibration.json``, :mod:`training.calibration`) for prior-shift adaptation."""

    # ---- the headline, as the manifest records it ----------------------------------------
    def headline_record(self, prefix: str = "val") -> dict:
        """``{"headline": {...}}`` for the manifest's metrics: which entry is the headline
        and whether higher is better.

        >>> from training.tasks import training_task
        >>> training_task("regression").headline_record()
        {'headline': {'metric': 'val_r2', 'name': 'R²', 'higher_is_better': True}}
        """
        return {HEADLINE_KEY: {"metric": f"{prefix}_{self.headline_metric}", "name": self.headline_name,
                               "higher_is_better": self.higher_is_better}}

    def manifest_metrics(self, metrics: dict) -> dict:
        """The manifest's metrics of a run: every split's summary (``val_accuracy``,
        ``test_r2``... under the split's prefix, ``val`` for validation) and the headline record."""
        flat = {}
        for split, m in metrics.items():
            flat.update(m.summary("val" if split == "validation" else split))
        return {**flat, **self.headline_record("val")}

    # ---- data and targets ----------------------------------------------------------------
    def check_data(self, data) -> list[str]:
        """Problems with a training set for this type (e.g. a classifier needs 2 classes)."""
        return []

    def target_scaling(self, data) -> dict | None:
        """Scaling fitted on the training targets and stored in the manifest (None: none)."""
        return None

    def targets(self, data, scaling: dict | None = None) -> torch.Tensor:
        """Training targets of ``data`` (``data.labels`` / ``data.values``), scaled by ``scaling``."""
        raise NotImplementedError

    # ---- fitting -------------------------------------------------------------------------
    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean training loss of raw head outputs ``[rows, n]`` against :meth:`targets` rows."""
        raise NotImplementedError

    def headline(self, logits: torch.Tensor, targets: torch.Tensor) -> float:
        """The per-epoch validation headline (accuracy, R²...) of raw outputs against targets."""
        raise NotImplementedError

    def outputs(self, logits: torch.Tensor, scaling: dict | None = None) -> torch.Tensor:
        """What a fitted model reports for raw head outputs: what the server serves
        (probabilities; values in the targets' units)."""
        raise NotImplementedError

    # ---- evaluation and export -----------------------------------------------------------
    def eval_loss(self, outputs: torch.Tensor, data) -> float:
        """The loss reported with the metrics, from :meth:`outputs` on ``data``."""
        raise NotImplementedError

    def metrics(self, data, outputs: torch.Tensor, loss: float | None = None):
        """Scores of ``outputs`` on ``data``: an object with ``n``, ``accuracy`` (the headline),
        ``summary(prefix) -> dict`` for the manifest and ``to_dict()`` (:mod:`adapters.tasks.metrics`)."""
        raise NotImplementedError

    def manifest_fields(self, names: list[str], scaling: dict | None) -> dict:
        """The manifest fields that describe a trained head's outputs."""
        return {"labels": list(names)}

    def plot(self, data, outputs: torch.Tensor, metrics, path, title: str) -> str | None:
        """Write the type's evaluation plot (a PNG) to ``path``; returns its file name or None."""
        return None
