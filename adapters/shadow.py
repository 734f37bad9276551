"""A shadow candidate's comparison with the active version, kept per (task, candidate).

In shadow mode (:mod:`adapters.rollout`) the candidate scores the same rows as the active
version and never answers; what is kept is this comparison: agreement of the top labels
(a bounded confusion matrix for classification task types), the mean |delta| of the top
scores, and what the candidate cost (added seconds, extra trunk rows). A server keeps one
per (active, candidate) pair on the task's row of the table (:mod:`adapters.table`).
"""

from __future__ import annotations

import threading

MAX_CONFUSION_LABELS = 20  # labels per side kept in a confusion matrix; the rest are "other"
OTHER = "other"


class ShadowStats:
    """Active-vs-candidate comparison of one (task, candidate), thread-safe and bounded.

    >>> s = ShadowStats("t", "a" * 64, "b" * 64)
    >>> s.observe([("pos", 0.9), ("neg", 0.6)], [("pos", 0.7), ("pos", 0.55)], 0.002, 0)
    >>> r = s.report(); r["rows"], r["agreement"], round(r["mean_abs_delta_top_score"], 3)
    (2, 0.5, 0.125)
    """

    def __init__(self, task: str, active: str, candidate: str):
        self.task, self.active, self.candidate = task, active, candidate
        self._lock = threading.Lock()
        self.rows = 0
        self.labelled = 0  # rows with a top label on both sides (classification task types)
        self.agree = 0
        self.sum_abs_delta = 0.0
        self.added_seconds = 0.0
        self.extra_trunk_rows = 0
        self.confusion: dict[str, dict[str, int]] = {}
        self._labels_a: set[str] = set()
        self._labels_c: set[str] = set()

    def _bucket(self, label: str, seen: set[str]) -> str:
        if label in seen or len(seen) < MAX_CONFUSION_LABELS:
            seen.add(label)
            return label
        return OTHER

    def observe(self, active: list[tuple[str, float]], candidate: list[tuple[str, float]],
                added_seconds: float, extra_trunk_rows: int) -> None:
        """Rows scored by both: ``(top label, top score)`` per row, in the same order
        (label ``None`` for task types without labels, e.g. regression: the score is then
        the first output's value, and only |delta| is kept)."""
        with self._lock:
            for (la, sa), (lc, sc) in zip(active, candidate):
                self.rows += 1
                self.sum_abs_delta += abs(sa - sc)
                if la is None or lc is None:
                    continue
                self.labelled += 1
                self.agree += la == lc
                row = self.confusion.setdefault(self._bucket(la, self._labels_a), {})
                key = self._bucket(lc, self._labels_c)
                row[key] = row.get(key, 0) + 1
            self.added_seconds += added_seconds
            self.extra_trunk_rows += extra_trunk_rows

    def report(self) -> dict:
        with self._lock:
            n = self.rows
            return {"active_version": self.active, "candidate_version": self.candidate, "rows": n,
                    "agreement": self.agree / self.labelled if self.labelled else None,
                    "mean_abs_delta_top_score": self.sum_abs_delta / n if n else None,
                    "added_seconds_per_row": self.added_seconds / n if n else None,
                    "added_seconds_total": self.added_seconds,
                    "extra_trunk_rows": self.extra_trunk_rows,
                    "confusion": {a: dict(row) for a, row in self.confusion.items()}}
