"""Training methods (see :mod:`training.methods.base` for the interface), one table.

Adding one: a new file with a :class:`TrainingMethod` subclass, one entry below, and its
settings in :data:`training.method_settings.METHOD_SETTINGS` (read by ``TrainConfig``, which
never imports this package).
"""

from __future__ import annotations

from training.method_settings import COMMON_HYPERPARAMETERS
from training.methods.base import TrainingMethod
from training.methods.head import HeadMethod
from training.methods.lora import LoraMethod
from training.methods.prompt import PromptMethod
from training.methods.scratch import ScratchMethod
from training.methods.top_layers import TopLayersMethod

METHODS: dict[str, TrainingMethod] = {m.name: m for m in (HeadMethod(), LoraMethod(), TopLayersMethod(),
                                                          ScratchMethod(), PromptMethod())}


def training_method(name: str) -> TrainingMethod:
    """The training method called ``name``; a ``ValueError`` naming the known ones otherwise."""
    m = METHODS.get(name)
    if m is None:
        raise ValueError(f"method {name!r} is unknown; use one of {list(METHODS)}")
    return m


def generation_methods() -> list[str]:
    """Names of the methods that make generation tasks, in table order."""
    return [m.name for m in METHODS.values() if m.fits_generation]


def token_methods() -> list[str]:
    """Names of the methods that train per-token task types, in table order."""
    return [m.name for m in METHODS.values() if m.fits_tokens]


__all__ = ["COMMON_HYPERPARAMETERS", "METHODS", "TrainingMethod", "generation_methods", "token_methods", "training_method"]
