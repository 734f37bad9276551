"""Metrics of a tagger: entity-level precision / recall / F1 per type, and token accuracy.

Entities are counted as seqeval counts them (its default, conlleval-compatible mode: a
chunk starts at ``B-``/``S-``/``U-`` or at an ``I-`` whose type differs from the previous
tag's; a predicted entity is correct only if its type, start and end all match). For a
label set that is not an entity scheme (``O``, ``COMMA``, ``PERIOD``...), each word tagged
``X`` (not ``O``) is one entity of type ``X``, so the same table reads as per-tag precision
and recall over words. Token accuracy is over words (each word's first sub-token), ``O``
included. seqeval is imported lazily: only training and evaluation reach this module.

    >>> m = token_metrics([[1, 2, 0, 3]], [[1, 2, 0, 0]], ["O", "B-PER", "I-PER", "B-LOC"])
    >>> round(m.precision, 3), round(m.recall, 3), m.accuracy, [(r.label, r.f1) for r in m.per_type]
    (1.0, 0.5, 0.75, [('LOC', 0.0), ('PER', 1.0)])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from adapters.tasks.metrics import ClassReport, loss_cell, report_table, with_loss
from adapters.tasks.token_classification import entity_scheme

TypeReport = ClassReport  # the same five numbers, per entity type


@dataclass
class TokenMetrics:
    """One split: ``n`` words in ``sentences`` sentences; micro-averaged entity P/R/F1;
    ``accuracy`` = token accuracy; ``confusion[i][j]``: words tagged i predicted as j."""

    n: int
    sentences: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    per_type: list[TypeReport]
    confusion: list[list[int]]
    loss: float | None = None

    def summary(self, prefix: str) -> dict[str, float | int]:
        return with_loss({f"{prefix}_token_accuracy": round(self.accuracy, 6), f"{prefix}_entity_f1": round(self.f1, 6),
                          f"{prefix}_entity_precision": round(self.precision, 6),
                          f"{prefix}_entity_recall": round(self.recall, 6), f"{prefix}_words": self.n,
                          f"{prefix}_sentences": self.sentences}, prefix, self.loss)

    def to_dict(self) -> dict:
        return asdict(self)

    CARD_HEADER = ("| split | sentences | words | token accuracy | entity P | entity R | entity F1 | loss |\n"
                   "|---|---|---|---|---|---|---|---|")
    DETAIL_TITLE = "Per-type report (entity level)"

    def card_row(self, split: str) -> str:
        return (f"| {split} | {self.sentences} | {self.n} | {self.accuracy:.4f} | {self.precision:.4f} | "
                f"{self.recall:.4f} | {self.f1:.4f} | {loss_cell(self.loss)} |")

    def detail_table(self) -> str:
        return report_table("type", self.per_type)


def _as_chunks(names: list[str]) -> list[str]:
    """Tag names seqeval reads: an entity scheme as is, else ``X`` -> ``B-X`` (``O`` stays)."""
    if entity_scheme(names):
        return list(names)
    return [x if x == "O" else f"B-{x}" for x in names]


def token_metrics(true: list[list[int]], pred: list[list[int]], names: list[str],
                  loss: float | None = None) -> TokenMetrics:
    """Scores of predicted tags ``pred`` against ``true`` (per sentence, indices into ``names``)."""
    from seqeval.metrics import classification_report
    tags = _as_chunks(names)
    y_true = [[tags[t] for t in s] for s in true]
    y_pred = [[tags[t] for t in s] for s in pred]
    rep = classification_report(y_true, y_pred, output_dict=True, zero_division=0) if true else {}
    per_type = [TypeReport(k, float(v["precision"]), float(v["recall"]), float(v["f1-score"]),
                           int(v["support"])) for k, v in sorted(rep.items()) if not k.endswith(" avg")]
    micro = rep.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
    k = len(names)
    confusion = [[0] * k for _ in range(k)]
    right = total = 0
    for ts, ps in zip(true, pred):
        for t, p in zip(ts, ps):
            confusion[t][p] += 1
            right += t == p
            total += 1
    return TokenMetrics(n=total, sentences=len(true), accuracy=right / total if total else 0.0,
                        precision=float(micro["precision"]), recall=float(micro["recall"]),
                        f1=float(micro["f1-score"]), per_type=per_type, confusion=confusion, loss=loss)
