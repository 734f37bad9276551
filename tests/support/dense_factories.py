"""Builders for dense (detection, segmentation) adapter directories on tiny vision backbones."""

from __future__ import annotations

from pathlib import Path

import torch

from adapters.backbones.base import Backbone
from adapters.dense_heads import DenseHead
from adapters.format import BackboneRef, DenseSpec, Manifest, write_head_adapter
from adapters.tasks import TASK_TYPES


def dense_adapter(folder: Path, backbone: Backbone, name: str, task_type: str = "detection",
                  labels=("shirt", "shoe"), strides=(8, 16), width: int = 8, seed: int = 0,
                  input_size: int | None = None, **limits) -> Path:
    """A randomly initialised (seeded) dense head adapter directory for ``backbone``."""
    torch.manual_seed(seed)
    spec = DenseSpec(strides=list(strides), in_channels=[backbone.map_channels[s] for s in strides],
                     width=width, input_size=input_size, **limits)
    m = Manifest(name=name, kind="head", task_type=task_type, labels=list(labels),
                 backbone=BackboneRef(name=backbone.name, fingerprint=backbone.fingerprint),
                 dense=spec)
    head = DenseHead(spec, TASK_TYPES[task_type].n_out(m))
    for p in head.parameters():  # big enough weights that answers differ between seeds
        torch.nn.init.normal_(p, std=0.3)
    return write_head_adapter(folder, m, head.state_for_file(), card=f"# {name}\n")
