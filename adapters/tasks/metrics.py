"""Metrics for model cards and manifests, one function per family of task types.

Classification: accuracy, macro-F1, per class (scikit-learn, from integer labels and
predictions). Regression: MAE, RMSE, R² and Spearman per output (and their mean), in
the units of the targets. The numbers mean exactly what they mean everywhere else.

Example::

    >>> m = classification_metrics([0, 1, 1, 0], [0, 1, 0, 0], ["neg", "pos"])
    >>> m.accuracy, round(m.macro_f1, 3), m.confusion
    (0.75, 0.733, [[2, 0], [1, 1]])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support


@dataclass
class ClassReport:
    label: str
    precision: float
    recall: float
    f1: float
    support: int


def report_table(first_column: str, reports: Sequence[ClassReport]) -> str:
    """A model card's Markdown table of ``reports``, one row each, under ``first_column``."""
    rows = [f"| {c.label} | {c.precision:.3f} | {c.recall:.3f} | {c.f1:.3f} | {c.support} |" for c in reports]
    return "\n".join([f"| {first_column} | precision | recall | F1 | support |", "|---|---|---|---|---|", *rows])


def loss_cell(loss: float | None) -> str:
    """The loss column of a card row: empty when no loss was measured."""
    return "" if loss is None else f"{loss:.4f}"


def with_loss(out: dict[str, float | int], prefix: str, loss: float | None) -> dict[str, float | int]:
    """``out`` with ``{prefix}_loss`` added when a loss was measured (a summary's last entry)."""
    if loss is not None:
        out[f"{prefix}_loss"] = round(loss, 6)
    return out


@dataclass
class ClassificationMetrics:
    """Scores of one labelled split. ``confusion[i][j]``: true class i predicted as j."""

    n: int
    accuracy: float
    macro_f1: float
    per_class: list[ClassReport]
    confusion: list[list[int]]
    loss: float | None = None

    def summary(self, prefix: str) -> dict[str, float | int]:
        """Flat numbers for ``adapter.json`` (``{prefix}_accuracy`` ...)."""
        return with_loss({f"{prefix}_accuracy": round(self.accuracy, 6), f"{prefix}_macro_f1": round(self.macro_f1, 6),
                          f"{prefix}_examples": self.n}, prefix, self.loss)

    def to_dict(self) -> dict:
        return asdict(self)

    # ---- the model card's tables ----------------------------------------------------------
    CARD_HEADER = "| split | examples | accuracy | macro-F1 | loss |\n|---|---|---|---|---|"
    DETAIL_TITLE = "Per-class report"

    def card_row(self, split: str) -> str:
        return f"| {split} | {self.n} | {self.accuracy:.4f} | {self.macro_f1:.4f} | {loss_cell(self.loss)} |"

    def detail_table(self) -> str:
        return report_table("label", self.per_class)


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], label_names: Sequence[str],
                           loss: float | None = None) -> ClassificationMetrics:
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
    accuracy = float(accuracy_score(y_true, y_pred)) if len(y_true) else 0.0
    return ClassificationMetrics(n=int(len(y_true)), accuracy=accuracy, macro_f1=macro, per_class=per_class,
                                 confusion=confusion_matrix(y_true, y_pred, labels=labels).tolist(), loss=loss)


@dataclass
class RegressionMetrics:
    """Scores of one split of a regression task, per output and averaged over outputs.

    >>> m = regression_metrics([[1.0], [2.0], [3.0]], [[1.0], [2.0], [4.0]], ["y"])
    >>> round(m.mae, 3), round(m.r2, 3), m.spearman
    (0.333, 0.5, 1.0)
    """

    n: int
    mae: float
    rmse: float
    r2: float
    spearman: float
    per_output: dict[str, dict[str, float]]
    loss: float | None = None

    @property
    def accuracy(self) -> float:  # the trainer logs one headline number per split
        return self.r2

    def summary(self, prefix: str) -> dict[str, float | int]:
        """Flat numbers for ``adapter.json`` (``{prefix}_r2`` ...)."""
        out = {f"{prefix}_{k}": round(getattr(self, k), 6) for k in ("mae", "rmse", "r2", "spearman")}
        out[f"{prefix}_examples"] = self.n
        return with_loss(out, prefix, self.loss)

    def to_dict(self) -> dict:
        return asdict(self)

    CARD_HEADER = "| split | examples | MAE | RMSE | R² | Spearman | loss (MSE) |\n|---|---|---|---|---|---|---|"
    DETAIL_TITLE = "Per-output report"

    def card_row(self, split: str) -> str:
        return (f"| {split} | {self.n} | {self.mae:.4f} | {self.rmse:.4f} | {self.r2:.4f} | "
                f"{self.spearman:.4f} | {loss_cell(self.loss)} |")

    def detail_table(self) -> str:
        rows = [f"| {k} | {v['mae']:.4f} | {v['rmse']:.4f} | {v['r2']:.4f} | {v['spearman']:.4f} |"
                for k, v in self.per_output.items()]
        return "\n".join(["| output | MAE | RMSE | R² | Spearman |", "|---|---|---|---|---|", *rows])


def regression_metrics(y_true, y_pred, names: Sequence[str], loss: float | None = None) -> RegressionMetrics:
    """MAE, RMSE, R² (1 - SSE/SST) and Spearman rank correlation per output, then their means."""
    t = np.asarray(y_true, dtype=np.float64).reshape(len(y_true), -1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(len(y_pred), -1)
    per = {}
    for j, name in enumerate(names):
        err = p[:, j] - t[:, j]
        sst = float(((t[:, j] - t[:, j].mean()) ** 2).sum()) if len(t) else 0.0
        rho = spearmanr(t[:, j], p[:, j]).statistic if len(t) > 1 else float("nan")
        per[str(name)] = {"mae": float(np.abs(err).mean()) if len(t) else 0.0,
                          "rmse": float(np.sqrt((err ** 2).mean())) if len(t) else 0.0,
                          "r2": 1.0 - float((err ** 2).sum()) / sst if sst > 0 else 0.0,
                          "spearman": 0.0 if not np.isfinite(rho) else float(rho)}
    mean = {k: float(np.mean([v[k] for v in per.values()])) for k in ("mae", "rmse", "r2", "spearman")}
    return RegressionMetrics(n=int(len(t)), per_output=per, loss=loss, **mean)
