"""``multi_label``: any number of labels per input (a sigmoid per label, threshold 0.5)."""

from __future__ import annotations

import torch

from adapters.tasks.base import RowResult
from adapters.tasks.single_label import SingleLabel, _check_labels

THRESHOLD = 0.5


class MultiLabel(SingleLabel):
    """Answers ``{"label", "score", "scores", "labels"}`` (``labels``: every score >= 0.5)."""

    name = "multi_label"
    activation = "sigmoid"
    peft_problem_types = ("multi_label_classification",)

    def check_manifest(self, m) -> list[str]:
        problems = _check_labels(m.labels)
        if not m.labels:
            problems.append(f"a {self.name} task needs at least 1 label")
        if m.head is None:
            problems.append(f"a {self.name} task needs 'head' (its pooling and shape)")
        return problems

    def rows(self, adapter, out: torch.Tensor) -> list[RowResult]:
        res = super().rows(adapter, out)
        for r in res:
            r["labels"] = [lab for lab, v in r["scores"].items() if v >= THRESHOLD]
        return res
