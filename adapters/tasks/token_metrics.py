"""Metrics of a tagger: entity-level precision / recall / F1 per type, and token accuracy.

Entities are counted as seqeval counts them (its default, conlleval-compatible mode: a
chunk starts at ``B-``/``S-``/``U-`` or at an ``I-`` whose type differs from the previous
tag's; a predicted entity is correct only if its type, start and end all match). For a
label set that is not an entity scheme (``O``, ``COMMA``, ``PERIOD``...), each word tagged
``X`` (not ``O``) is one entity of type ``X``, so the same table reads as per-tag precision
and recall over words. Token accuracy is over words (each word's first sub-token), ``O``
included. The counting is seqeval's definition, implemented here on the same chunk rule
the server uses to merge entity spans (seqeval ships only as a source package whose build
fails in a clean image), and tested against hand-computed cases.

    >>> m = token_metrics([[1, 2, 0, 3]], [[1, 2, 0, 0]], ["O", "B-PER", "I-PER", "B-LOC"])
    >>> round(m.precision, 3), round(m.recall, 3), m.accuracy, [(r.label, r.f1) for r in m.per_type]
    (1.0, 0.5, 0.75, [('LOC', 0.0), ('PER', 1.0)])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from adapters.tasks.metrics import ClassReport, loss_cell, report_table, with_loss
from adapters.tasks.entities import entity_scheme, merge_entities

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
    tags = _as_chunks(names)
    true_chunks = [_chunks([tags[t] for t in sent], i) for i, sent in enumerate(true)]
    pred_chunks = [_chunks([tags[t] for t in sent], i) for i, sent in enumerate(pred)]
    gold = set().union(*true_chunks) if true_chunks else set()
    found = set().union(*pred_chunks) if pred_chunks else set()
    per_type = [TypeReport(typ, *_prf({c for c in gold if c[0] == typ}, {c for c in found if c[0] == typ}))
                for typ in sorted({c[0] for c in gold | found})]
    micro_p, micro_r, micro_f, _ = _prf(gold, found)
    k = len(names)
    confusion = [[0] * k for _ in range(k)]
    right = total = 0
    for ts, ps in zip(true, pred):
        for t, p in zip(ts, ps):
            confusion[t][p] += 1
            right += t == p
            total += 1
    return TokenMetrics(n=total, sentences=len(true), accuracy=right / total if total else 0.0,
                        precision=micro_p, recall=micro_r, f1=micro_f, per_type=per_type,
                        confusion=confusion, loss=loss)


def _chunks(tags: list[str], sentence: int) -> set[tuple[str, int, int, int]]:
    """``(type, sentence, first word, end word)`` of every entity in one sentence's tags."""
    spans = [(i, i + 1) for i in range(len(tags))]
    return {(e["entity"], sentence, e["start"], e["end"])
            for e in merge_entities(tags, spans, [0.0] * len(tags), "")}


def _prf(gold: set, found: set) -> tuple[float, float, float, int]:
    """Precision, recall, F1 (0 where undefined, as seqeval's ``zero_division=0``) and support."""
    hit = len(gold & found)
    p = hit / len(found) if found else 0.0
    r = hit / len(gold) if gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f, len(gold)
