"""The training half of every task type (:mod:`training.tasks.base`), keyed by the same
names as the serving half's :data:`adapters.tasks.TASK_TYPES`.

Adding a task type's training: a new file with a :class:`TrainingTask` subclass, and one
entry below.
"""

from __future__ import annotations

from adapters.errors import InvalidInput
from training.tasks.base import TrainingTask
from training.tasks.detection import DetectionTraining
from training.tasks.generation import GenerationTraining
from training.tasks.multi_label import MultiLabelTraining
from training.tasks.regression import RegressionTraining
from training.tasks.segmentation import SegmentationTraining
from training.tasks.single_label import SingleLabelTraining
from training.tasks.token_classification import TokenClassificationTraining
from training.tasks.trunk_adaptation import TrunkAdaptationTraining

TRAINING_TASKS: dict[str, TrainingTask] = {t.name: t for t in (
    SingleLabelTraining(), MultiLabelTraining(), RegressionTraining(), TokenClassificationTraining(),
    DetectionTraining(), SegmentationTraining(), GenerationTraining(), TrunkAdaptationTraining())}


def training_task(name: str) -> TrainingTask:
    """The training half of task type ``name``; an ``InvalidInput`` naming the known ones otherwise."""
    t = TRAINING_TASKS.get(name)
    if t is None:
        raise InvalidInput(f"task_type {name!r} cannot be trained; use one of {sorted(TRAINING_TASKS)}")
    return t


__all__ = ["TRAINING_TASKS", "TrainingTask", "training_task"]
