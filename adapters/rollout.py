"""Shadow and canary rollouts: the policy and the routing decision.

A task may have one *candidate* version beside its active one:

- ``shadow``: every row is answered by the active version; the candidate also scores the
  same rows (a head on the same pooled features, a LoRA on extra trunk rows) and only the
  comparison is kept (:class:`adapters.shadow.ShadowStats`).
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
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger("taskswap.rollout")

Mode = Literal["shadow", "canary"]


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


def canary_choice(lookup, rollout, task: str, routing_key: str | None):
    """The candidate that answers this request for ``task`` when a canary routes it there
    (the same sticky draw as ``Runtime.prepare``), else None; a candidate that cannot be
    loaded is logged and the active version answers (it never fails the request).
    ``lookup`` has ``candidate(task, version)``, ``rollout`` has ``policy(task)``."""
    policy = rollout.policy(task)
    if policy is None or not policy.serves_candidate(routing_key):
        return None
    try:
        return lookup.candidate(task, policy.candidate)
    except Exception as exc:  # noqa: BLE001  (any load failure: the active path is unaffected)
        log.warning("rollout candidate %s of %s unavailable: %s", policy.candidate[:12], task, exc)
        return None


def policy_applies(policy: RolloutPolicy | None, alias) -> bool:
    """Whether ``policy``'s candidate is a stored version of the task other than the active
    one: a promote that crashed between its alias switch and clearing the policy (or a
    policy naming a version this process's alias does not know yet) changes nothing."""
    return (policy is not None and policy.candidate != alias.active
            and any(v.version == policy.candidate for v in alias.versions))
