"""Which of two versions of a task is better, on its task type's headline metric.

A trained adapter's manifest records its metrics (``val_accuracy``, ``val_r2``,
``val_token_accuracy``...) and which of them is the headline, with its direction::

    "metrics": {"val_r2": 0.61, ..., "headline": {"metric": "val_r2", "name": "R²",
                                                   "higher_is_better": true}}

(written by the training half of the task type, :mod:`training.tasks`). ``if_better``
promotion and the shadow report compare on that entry; a manifest from before the record
(only ``val_accuracy``) reads as accuracy, higher is better, as it always did.

    >>> h = Headline.of({"val_mae": 0.2, "headline": {"metric": "val_mae", "name": "MAE",
    ...                                               "higher_is_better": False}})
    >>> h.better(0.1, 0.2), h.better(0.3, 0.2), h.better(None, 0.2)
    (True, False, False)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from adapters.tasks import HEADLINE_KEY



@dataclass(frozen=True)
class Headline:
    """The metric two versions are compared on: its key in the metrics, its name, its direction."""

    metric: str
    name: str
    higher_is_better: bool = True

    @classmethod
    def of(cls, metrics: dict | None) -> "Headline":
        """The headline a manifest's ``metrics`` record; validation accuracy when none is recorded."""
        rec = (metrics or {}).get(HEADLINE_KEY)
        if isinstance(rec, dict) and isinstance(rec.get("metric"), str) and rec["metric"]:
            return cls(rec["metric"], str(rec.get("name") or rec["metric"]),
                       rec.get("higher_is_better", True) is not False)
        return LEGACY

    def value(self, metrics: dict | None) -> float | None:
        """This headline's number in ``metrics`` (None when absent or not a finite number)."""
        v = (metrics or {}).get(self.metric)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return None
        return float(v)

    def better(self, mine: float | None, theirs: float | None) -> bool:
        """Whether ``mine`` strictly beats ``theirs`` in this headline's direction."""
        if mine is None or theirs is None:
            return False
        return mine > theirs if self.higher_is_better else mine < theirs

    def describe(self) -> dict:
        return {"headline": self.metric, "headline_name": self.name, "higher_is_better": self.higher_is_better}


LEGACY = Headline("val_accuracy", "accuracy", True)


def if_better(candidate: dict, active: dict | None) -> dict:
    """The ``if_better`` verdict of a fitted candidate (its manifest ``metrics``) against the
    active version's metrics on the same validation examples (``active``: the fit job's
    ``{"comparable", "version", "metrics", "reason"}``; None: the task had no active version).

    The result names both numbers as ``candidate_<metric>`` / ``active_<metric>``
    (``candidate_val_accuracy`` for classification, ``candidate_val_r2`` for regression).
    """
    h = Headline.of(candidate)
    mine = h.value(candidate)
    out = {**h.describe(), f"candidate_{h.metric}": mine}
    if active is None:
        return {"promote": True, "reason": "the task had no active version", **out}
    if not active.get("comparable"):
        return {"promote": False, "reason": active.get("reason"), **out}
    theirs = h.value(active.get("metrics", active))  # a record from before "metrics": flat numbers
    better = h.better(mine, theirs)
    return {"promote": better, **out, f"active_{h.metric}": theirs, "active_version": active.get("version"),
            "reason": ("beats" if better else "does not beat") + f" the active version on {h.name} over the "
                      "same validation examples"}


def recorded(active: dict | None, candidate: dict | None) -> dict:
    """The shadow report's comparison of two versions' *recorded* validation headlines (each on
    its own validation data; the shadow rows themselves carry no truth to score)."""
    h = Headline.of(candidate)
    a, c = h.value(active), h.value(candidate)
    return {**h.describe(), "active": a, "candidate": c,
            "candidate_better": None if a is None or c is None else h.better(c, a)}
