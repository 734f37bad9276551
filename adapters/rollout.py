"""Shadow and canary rollouts: the policy, the routing decision and the shadow comparison.

A task may have one *candidate* version beside its active one:

- ``shadow``: every row is answered by the active version; the candidate also scores the
  same rows (a head on the same pooled features, a LoRA on extra trunk rows) and only the
  comparison is kept (:class:`ShadowStats`).
- ``canary``: a ``fraction`` of requests is answered by the candidate. With a routing key
  (a caller id sent in a header) the choice is a hash of (task, candidate, key), so one
  caller always gets the same version for as long as the policy lasts; without a key each
  request draws at random.

The policy is a small JSON document in the store beside the task's alias
(:meth:`adapters.store.base.AdapterStore.update_rollout`), so every replica and worker
applies the same one and it survives restarts. A server keeps each task's policy on its
row of the registry's table (:mod:`adapters.table`), taken in by the store follower.

Example::

    >>> p = RolloutPolicy(task="t", candidate="ab" * 32, mode="canary", fraction=0.5,
    ...                   updated_at="2026-01-01T00:00:00+00:00")
    >>> p.serves_candidate("caller-7") == p.serves_candidate("caller-7")
    True
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger("taskswap.rollout")

Mode = Literal["shadow", "canary"]
MAX_CONFUSION_LABELS = 20  # labels per side kept in a confusion matrix; the rest are "other"
OTHER = "other"


class RolloutPolicy(BaseModel):
    """One task's candidate and how it is exercised (the store document)."""

    model_config = ConfigDict(extra="ignore")
    task: str
    candidate: str = Field(pattern=r"^[0-9a-f]{64}$", description="Full version id of the candidate.")
    mode: Mode
    fraction: float = Field(0.0, ge=0.0, le=1.0, description="canary: share of requests it answers.")
    updated_at: str

    def serves_candidate(self, key: str | None, draw: float | None = None) -> bool:
        """Whether this request goes to the candidate (canary only).

        Sticky per ``key``: the same key maps to the same uniform number in [0, 1) for a
        given (task, candidate), so raising the fraction only adds callers, never swaps them.
        """
        if self.mode != "canary" or self.fraction <= 0.0:
            return False
        if key:
            digest = hashlib.sha256(f"{self.task}\0{self.candidate}\0{key}".encode()).digest()
            u = int.from_bytes(digest[:8], "big") / 2.0 ** 64
        else:
            u = random.random() if draw is None else draw
        return u < self.fraction


def now() -> str:
    return datetime.now(timezone.utc).isoformat()


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


def parse_policy(name: str, doc: dict | None) -> RolloutPolicy | None:
    """A store policy document as a :class:`RolloutPolicy`; a foreign or damaged one is
    ignored (logged), so the task serves without it."""
    if doc is None:
        return None
    try:
        return RolloutPolicy.model_validate(doc)
    except Exception as exc:
        log.warning("rollout policy of %s ignored: %s", name, exc)
        return None


def policy_applies(policy: RolloutPolicy | None, alias) -> bool:
    """Whether ``policy``'s candidate is a stored version of the task other than the active
    one: a promote that crashed between its alias switch and clearing the policy (or a
    policy naming a version this process's alias does not know yet) changes nothing."""
    return (policy is not None and policy.candidate != alias.active
            and any(v.version == policy.candidate for v in alias.versions))


class RolloutBook:
    """Every task's rollout policy read straight from a store, for a tool that holds no
    registry. A server keeps each task's policy on its row of the registry's table
    (:meth:`adapters.table.TaskTable.policy`), taken in by the store follower with the
    task's alias, and its shadow comparisons beside it.

    ``refresh`` keeps the policies that apply (:func:`policy_applies`).
    """

    def __init__(self, store):
        self.store = store
        self._policies: dict[str, RolloutPolicy] = {}

    def refresh(self, aliases: dict) -> None:
        """Reload the policies of the tasks in ``aliases`` ({name: Alias}) from the store."""
        docs = self.store.list_rollouts(sorted(aliases))
        policies = {n: p for n, doc in docs.items() if policy_applies(p := parse_policy(n, doc), aliases[n])}
        self._policies = policies

    def policy(self, task: str) -> RolloutPolicy | None:
        return self._policies.get(task)
