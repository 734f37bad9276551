"""Taskswap training: turn a labelled data set into a servable adapter directory.

The Python API (the same code as the ``taskswap`` console script)::

    from adapters.backbones.defaults import default_spec
    from training import DataSource, TrainConfig, train, evaluate_adapter

    data = DataSource(path="reviews.csv", text_column="body").load()
    result = train(data, default_spec("text"), TrainConfig(name="reviews", method="head"), "out/reviews")
    print(result.metrics["validation"].accuracy)

Several tasks with one shared LoRA (``training.multitask``)::

    from training import MultitaskConfig, MultitaskData, train_multitask
    result = train_multitask(backbone, [MultitaskData("sentiment", train_a, val_a),
                                        MultitaskData("topic", train_b, val_b)],
                             "out", MultitaskConfig(name="reviews-base", weights=[1.0, 0.5]))

Names are imported lazily, so ``import training`` stays cheap.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "train": "training.trainer", "TrainResult": "training.trainer", "TrainConfig": "training.config",
    "DataSource": "training.sources", "evaluate_adapter": "training.evaluate",
    "register_with_server": "training.register", "build_demo": "training.demo",
    "train_multitask": "training.multitask", "MultitaskConfig": "training.multitask",
    "MultitaskData": "training.multitask",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'training' has no attribute {name!r}")
