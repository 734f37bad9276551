"""Unsupervised domain adaptation methods (see :mod:`training.domain.base`), one table.

Example::

    >>> adaptation_method("coral").name
    'coral'
"""

from __future__ import annotations

from adapters.errors import InvalidInput
from training.domain.base import AdaptationMethod, AdaptConfig, AdaptContext, Adapted
from training.domain.composed import Composed
from training.domain.coral_method import CoralMethod
from training.domain.label_shift_method import LabelShiftMethod
from training.domain.pseudo_label_method import PseudoLabelMethod
from training.feature_stats import STATS_FILE, FeatureStats

ADAPTATIONS: dict[str, AdaptationMethod] = {m.name: m for m in (
    CoralMethod(), PseudoLabelMethod(), LabelShiftMethod(),
    Composed(CoralMethod(), LabelShiftMethod()), Composed(PseudoLabelMethod(), LabelShiftMethod()))}


def adaptation_method(name: str) -> AdaptationMethod:
    """The adaptation method called ``name``; ``InvalidInput`` naming the known ones otherwise."""
    m = ADAPTATIONS.get(name)
    if m is None:
        raise InvalidInput(f"adaptation method {name!r} is unknown; use one of {list(ADAPTATIONS)}")
    return m


__all__ = ["ADAPTATIONS", "STATS_FILE", "AdaptConfig", "AdaptContext", "Adapted", "AdaptationMethod", "FeatureStats",
           "adaptation_method"]
