"""The transfer report's backbones and training settings per method, for its pooled and token tasks."""

from __future__ import annotations

from pathlib import Path

from adapters.backbones.base import BackboneSpec
from adapters.backbones.defaults import default_spec
from adapters.backbones.tiny import tiny_backbone_spec
from training.config import TrainConfig


def backbone_spec(kind: str, args) -> BackboneSpec:
    """The embedded default backbone of ``kind`` (text, vision, audio); with ``--smoke`` a tiny
    random one written under ``args.tiny_root``."""
    return tiny_backbone_spec(kind, Path(args.tiny_root) / kind) if args.smoke else default_spec(kind)


def config_for(method: str, args, name: str, **fixed) -> TrainConfig:
    """The run's TrainConfig: the report's per-method budgets, plus ``fixed`` fields (e.g. the
    token task's ``task_type``)."""
    extra = dict(fixed)
    if method == "lora":
        extra.update(epochs=args.lora_epochs, max_train_minutes=args.max_minutes, patience=args.patience)
    elif method == "scratch":
        extra.update(epochs=args.scratch_epochs, max_train_minutes=args.max_minutes, patience=args.patience)
    return TrainConfig(name=name, method=method, seed=args.seed, progress=args.progress, **extra)
