"""``token_classification`` training: word-level rows (each word's first sub-token,
:mod:`training.tokens`); cross-entropy; token accuracy (the headline) and seqeval entity
P/R/F1 per type; a confusion matrix over tags."""

from __future__ import annotations

import torch

from adapters.tasks.plots import plot_confusion
from adapters.tasks.token_metrics import token_metrics
from training.tasks.base import TrainingTask


class TokenClassificationTraining(TrainingTask):
    name = "token_classification"
    outputs_word = "tags"
    loss_words = "cross-entropy over the first sub-token of each word"
    headline_name = "token accuracy"
    headline_metric = "token_accuracy"

    def check_data(self, data) -> list[str]:
        present = {t for tags in data.tags for t in tags}
        if len(present) < 2:
            return [f"the training sentences use {len(present)} tag(s); a tagger needs at least 2"]
        return []

    def targets(self, data, scaling=None) -> torch.Tensor:
        return torch.tensor([t for tags in data.tags for t in tags], dtype=torch.long)  # [words]

    def loss(self, logits, targets):
        return torch.nn.functional.cross_entropy(logits, targets)

    def headline(self, logits, targets) -> float:
        return float((logits.argmax(-1) == targets).float().mean())  # token (word) accuracy

    def outputs(self, logits, scaling=None):
        return torch.softmax(logits, dim=-1)

    def eval_loss(self, outputs, data) -> float:
        y = self.targets(data)
        return float(torch.nn.functional.nll_loss(outputs.clamp_min(1e-12).log(), y))

    def metrics(self, data, outputs, loss=None):
        """Entity-level P/R/F1 per type (seqeval) and token accuracy of word-level
        ``outputs [words, labels]`` (the sentences' words in order) on ``data``."""
        pred = outputs.argmax(-1).tolist()
        out, k = [], 0
        for n in (len(t) for t in data.tags):
            out.append(pred[k:k + n])
            k += n
        return token_metrics(data.tags, out, list(data.label_names), loss)

    def plot(self, data, outputs, metrics, path, title):
        plot_confusion(metrics.confusion, list(data.label_names), path / "confusion_matrix.png",
                       f"{title}: confusion over tags (words)")
        return "confusion_matrix.png"
