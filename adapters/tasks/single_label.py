"""``single_label``: one class per input (softmax over ``labels``)."""

from __future__ import annotations

import torch

from adapters.tasks.base import RowResult, TaskType


class SingleLabel(TaskType):
    """Answers ``{"label", "score", "scores"}``; trained with cross-entropy; accuracy, macro-F1."""

    name = "single_label"
    activation = "softmax"
    peft_problem_types = ("single_label_classification",)

    def output_names(self, m) -> list[str]:
        return list(m.labels)

    def check_manifest(self, m) -> list[str]:
        problems = _check_labels(m.labels)
        if len(m.labels) < 2:
            problems.append(f"a {self.name} task needs at least 2 labels")
        if m.head is None:
            problems.append(f"a {self.name} task needs 'head' (its pooling and shape)")
        return problems

    def from_peft(self, n_outputs: int, names: list[str] | None) -> dict:
        return {"labels": list(names) if names else [f"LABEL_{i}" for i in range(n_outputs)]}

    def rows(self, adapter, out: torch.Tensor) -> list[RowResult]:
        labels = adapter.manifest.labels
        res = []
        for p in out.tolist():
            best = max(range(len(p)), key=p.__getitem__)
            res.append(RowResult(label=labels[best], score=p[best], scores=dict(zip(labels, p))))
        return res

    # ---- training ---------------------------------------------------------------------
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
        from adapters.tasks.metrics import classification_metrics  # training only: no sklearn in the server
        return classification_metrics(data.labels, outputs.argmax(1).tolist(), data.label_names, loss)

    def plot(self, data, outputs, metrics, path, title):
        from adapters.tasks.plots import plot_confusion  # training only: no matplotlib in the server
        plot_confusion(metrics.confusion, list(data.label_names), path / "confusion_matrix.png",
                       f"{title} confusion")
        return "confusion_matrix.png"


def _check_labels(labels: list[str]) -> list[str]:
    if len(set(labels)) != len(labels):
        return [f"labels must be unique, got {labels}"]
    return []
