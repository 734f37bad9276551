"""Task types: what a head's outputs mean (see :mod:`adapters.tasks.base` for the interface).

Adding one: a new file with a :class:`TaskType` subclass, and one entry below.
"""

from __future__ import annotations

from adapters.errors import InvalidAdapter
from adapters.format.manifest import Manifest
from adapters.tasks.base import HEADLINE_KEY, BatchFeatures, RowResult, TaskType, TokenFeatures
from adapters.tasks.detection import Detection
from adapters.tasks.generation import Generation
from adapters.tasks.multi_label import MultiLabel
from adapters.tasks.regression import Regression
from adapters.tasks.segmentation import Segmentation
from adapters.tasks.single_label import SingleLabel
from adapters.tasks.token_classification import TokenClassification
from adapters.tasks.trunk_adaptation import TrunkAdaptation

TASK_TYPES: dict[str, TaskType] = {t.name: t for t in (SingleLabel(), MultiLabel(), Regression(),
                                                       TokenClassification(), Generation(),
                                                       Detection(), Segmentation(),
                                                       TrunkAdaptation())}


def task_type(name: str) -> TaskType:
    """The task type called ``name``; an ``InvalidAdapter`` naming the known ones otherwise."""
    t = TASK_TYPES.get(name)
    if t is None:
        raise InvalidAdapter(f"task_type {name!r} is unknown; use one of {sorted(TASK_TYPES)}")
    return t


def output_names(m: Manifest) -> list[str]:
    """The head's outputs of ``m`` in order, as its task type names them (labels, outputs...)."""
    return task_type(m.task_type).output_names(m)


def peft_task_types() -> list[str]:
    """PEFT ``task_type`` values some task type serves besides ``SEQ_CLS`` (``TOKEN_CLS``)."""
    return sorted(p for t in TASK_TYPES.values() for p in t.peft_task_types)


def for_peft_problem_type(problem_type: str | None, n_outputs: int,
                          peft_task_type: str | None = None) -> TaskType:
    """The task type of a plain PEFT adapter: the one that claims its ``task_type``
    (``TOKEN_CLS``), else for ``SEQ_CLS`` its ``problem_type`` (transformers' rule when
    unset: one output is regression, more are single-label classification)."""
    for t in TASK_TYPES.values():
        if peft_task_type and peft_task_type in t.peft_task_types:
            return t
    if problem_type:
        for t in TASK_TYPES.values():
            if problem_type in t.peft_problem_types:
                return t
        raise InvalidAdapter(f"problem_type {problem_type!r} is not supported; use one of "
                             f"{sorted(p for t in TASK_TYPES.values() for p in t.peft_problem_types)}")
    return TASK_TYPES["regression" if n_outputs == 1 else "single_label"]


__all__ = ["HEADLINE_KEY", "BatchFeatures", "RowResult", "TASK_TYPES", "TaskType", "TokenFeatures",
           "for_peft_problem_type", "output_names", "peft_task_types", "task_type"]
