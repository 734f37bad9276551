"""The transfer report's training settings per method, for its pooled and token tasks."""

from __future__ import annotations

from training.config import TrainConfig


def config_for(method: str, args, name: str, **fixed) -> TrainConfig:
    """The run's TrainConfig: the report's per-method budgets, plus ``fixed`` fields (e.g. the
    token task's ``task_type``)."""
    extra = dict(fixed)
    if method == "lora":
        extra.update(epochs=args.lora_epochs, max_train_minutes=args.max_minutes, patience=args.patience)
    elif method == "scratch":
        extra.update(epochs=args.scratch_epochs, max_train_minutes=args.max_minutes, patience=args.patience)
    return TrainConfig(name=name, method=method, seed=args.seed, progress=args.progress, **extra)
