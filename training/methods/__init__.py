"""Training methods (see :mod:`training.methods.base` for the interface), one table.

Adding one: a new file with a :class:`TrainingMethod` subclass, and one entry below.
"""

from __future__ import annotations

from training.methods.base import COMMON_HYPERPARAMETERS, TrainingMethod
from training.methods.head import HeadMethod
from training.methods.lora import LoraMethod
from training.methods.scratch import ScratchMethod
from training.methods.top_layers import TopLayersMethod

METHODS: dict[str, TrainingMethod] = {m.name: m for m in (HeadMethod(), LoraMethod(), TopLayersMethod(),
                                                          ScratchMethod())}


def training_method(name: str) -> TrainingMethod:
    """The training method called ``name``; a ``ValueError`` naming the known ones otherwise."""
    m = METHODS.get(name)
    if m is None:
        raise ValueError(f"method {name!r} is unknown; use one of {list(METHODS)}")
    return m


def token_methods() -> list[str]:
    """Names of the methods that train per-token task types, in table order."""
    return [m.name for m in METHODS.values() if m.fits_tokens]


__all__ = ["COMMON_HYPERPARAMETERS", "METHODS", "TrainingMethod", "token_methods", "training_method"]
