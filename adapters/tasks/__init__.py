"""Task types: what a head's outputs mean (see :mod:`adapters.tasks.base` for the interface).

Adding one: a new file with a :class:`TaskType` subclass, and one entry below.
"""

from __future__ import annotations

from adapters.errors import InvalidAdapter
from adapters.tasks.base import BatchFeatures, RowResult, TaskType, TokenFeatures
from adapters.tasks.multi_label import MultiLabel
from adapters.tasks.regression import Regression
from adapters.tasks.single_label import SingleLabel

TASK_TYPES: dict[str, TaskType] = {t.name: t for t in (SingleLabel(), MultiLabel(), Regression())}


def task_type(name: str) -> TaskType:
    """The task type called ``name``; an ``InvalidAdapter`` naming the known ones otherwise."""
    t = TASK_TYPES.get(name)
    if t is None:
        raise InvalidAdapter(f"task_type {name!r} is unknown; use one of {sorted(TASK_TYPES)}")
    return t


def for_peft_problem_type(problem_type: str | None, n_outputs: int) -> TaskType:
    """The task type of a plain PEFT ``SEQ_CLS`` adapter (transformers' rule when unset:
    one output is regression, more are single-label classification)."""
    if problem_type:
        for t in TASK_TYPES.values():
            if problem_type in t.peft_problem_types:
                return t
        raise InvalidAdapter(f"problem_type {problem_type!r} is not supported; use one of "
                             f"{sorted(p for t in TASK_TYPES.values() for p in t.peft_problem_types)}")
    return TASK_TYPES["regression" if n_outputs == 1 else "single_label"]


__all__ = ["BatchFeatures", "RowResult", "TASK_TYPES", "TaskType", "TokenFeatures",
           "for_peft_problem_type", "task_type"]
