"""``single_label``: one class per input (softmax over ``labels``)."""

from __future__ import annotations

import torch

from adapters.tasks.base import RowResult, TaskType


class SingleLabel(TaskType):
    """Answers ``{"label", "score", "scores"}``."""

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


def _check_labels(labels: list[str]) -> list[str]:
    if len(set(labels)) != len(labels):
        return [f"labels must be unique, got {labels}"]
    return []
