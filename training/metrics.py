"""Classification metrics for model cards and manifests: accuracy, macro-F1, per class.

Computed with scikit-learn from integer labels and predictions, so the numbers in a card
mean exactly what they mean everywhere else.

Example::

    >>> m = classification_metrics([0, 1, 1, 0], [0, 1, 0, 0], ["neg", "pos"])
    >>> m.accuracy, round(m.macro_f1, 3), m.confusion
    (0.75, 0.733, [[2, 0], [1, 1]])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support


@dataclass
class ClassReport:
    label: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class Metrics:
    """Scores of one labelled split. ``confusion[i][j]``: true class i predicted as j."""

    n: int
    accuracy: float
    macro_f1: float
    per_class: list[ClassReport]
    confusion: list[list[int]]
    loss: float | None = None

    def summary(self, prefix: str) -> dict[str, float | int]:
        """Flat numbers for ``adapter.json`` (``{prefix}_accuracy`` ...)."""
        out = {f"{prefix}_accuracy": round(self.accuracy, 6), f"{prefix}_macro_f1": round(self.macro_f1, 6),
               f"{prefix}_examples": self.n}
        if self.loss is not None:
            out[f"{prefix}_loss"] = round(self.loss, 6)
        return out

    def to_dict(self) -> dict:
        return asdict(self)


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], label_names: Sequence[str],
                           loss: float | None = None) -> Metrics:
    """Accuracy, macro-F1 (over every label, absent ones count as 0), report and confusion."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    labels = list(range(len(label_names)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    per_class = [ClassReport(str(n), float(p[i]), float(r[i]), float(f[i]), int(s[i]))
                 for i, n in enumerate(label_names)]
    # Macro-F1 over the classes present in y_true: a class with no examples in a small
    # validation split would otherwise drag the mean to 0 for no fault of the model.
    present = [i for i in labels if s[i] > 0]
    macro = float(np.mean([f[i] for i in present])) if present else 0.0
    return Metrics(n=int(len(y_true)), accuracy=float(accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
                   macro_f1=macro, per_class=per_class,
                   confusion=confusion_matrix(y_true, y_pred, labels=labels).tolist(), loss=loss)
