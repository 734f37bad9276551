"""``single_label`` training: cross-entropy; accuracy (the headline), macro-F1, confusion."""

from __future__ import annotations

import torch

from adapters.tasks.metrics import classification_metrics
from adapters.tasks.plots import plot_confusion
from training.tasks.base import TrainingTask


class SingleLabelTraining(TrainingTask):
    name = "single_label"
    calibrates = True

    def check_data(self, data) -> list[str]:
        present = [n for n, c in data.class_counts().items() if c > 0]
        if len(present) < 2:
            return [f"training data has examples of {len(present)} class(es) {present}; "
                    "a classifier needs at least 2"]
        return []

    def targets(self, data, scaling=None) -> torch.Tensor:
        return torch.tensor(data.labels, dtype=torch.long)  # [n]

    def loss(self, logits, targets):
        return torch.nn.functional.cross_entropy(logits, targets)

    def headline(self, logits, targets) -> float:
        return float((logits.argmax(1) == targets).float().mean())  # accuracy

    def outputs(self, logits, scaling=None):
        return torch.softmax(logits, dim=-1)

    def eval_loss(self, outputs, data) -> float:
        """Mean cross-entropy of probabilities ``outputs [n, labels]``."""
        y = torch.tensor(data.labels, dtype=torch.long)
        return float(-torch.log(outputs[torch.arange(len(y)), y].clamp_min(1e-12)).mean())

    def metrics(self, data, outputs, loss=None):
        """Accuracy, macro-F1, confusion of ``outputs [n, labels]`` (probabilities) on ``data``."""
        return classification_metrics(data.labels, outputs.argmax(1).tolist(), data.label_names, loss)

    def plot(self, data, outputs, metrics, path, title):
        plot_confusion(metrics.confusion, list(data.label_names), path / "confusion_matrix.png",
                       f"{title} confusion")
        return "confusion_matrix.png"
