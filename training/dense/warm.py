"""The warm start of the dense methods that train trunk weights (``lora``, ``top_layers``): the
head is first fitted on the frozen trunk's cached maps exactly as the ``head`` method fits it, and
the joint training starts from that head. LoRA's ``B`` factors start at zero and a top-layers
copy starts as the frozen blocks, so before the first joint step the run answers exactly as that
head does (``tests/training/test_dense_warm_start.py``): it starts where the head ends.

With a cap (``max_seconds``) the head fit gets at most half of it; the joint training gets what
is left of the whole run's cap.
"""

from __future__ import annotations

import copy
from dataclasses import replace

from adapters.backbones.base import Backbone
from adapters.dense_heads import DenseHead
from adapters.format import DenseSpec
from training.dense.data import DenseData
from training.dense.fit import DenseFitConfig, fit_dense, new_head


def start_head(backbone: Backbone, data: DenseData, cfg: DenseFitConfig, task,
               channels: list[int]) -> tuple[DenseHead, DenseSpec, dict]:
    """``(head, spec, notes)``: the head joint training starts from: fitted on the frozen maps
    when ``cfg.warm_start`` (notes: its epochs and last loss), else a fresh one."""
    if not cfg.warm_start:
        head, spec = new_head(cfg, channels, len(data.label_names), task)
        return head, spec, {"warm_start": None}
    cap = None if cfg.max_seconds is None else cfg.max_seconds / 2
    warm = fit_dense(backbone, data, replace(cfg, method="head", max_seconds=cap,
                                             epochs=cfg.warm_epochs if cfg.warm_epochs is not None
                                             else cfg.epochs), task)
    head = copy.deepcopy(warm.head).train().requires_grad_(True)
    return head, warm.spec, {"warm_start": {"head_epochs": len(warm.history),
                                            "head_final_loss": warm.history[-1] if warm.history else None}}
