"""A whole chunk run block by block so it can pause between blocks (preemption).

The same pieces as the piecewise pass (:mod:`adapters.kinds.layouts`: stem -> blocks ->
finish), for a chunk where every row runs the frozen trunk to its end (heads, LoRA rows,
shared adaptations, embeddings, token tasks): every kind's changes are applied over the whole
chunk (:meth:`KindBatch.applied` with ``rows=None``: one LoRA on every row still runs on its
merged weights) and stay applied from block to block, and after each block but the last the
pass offers a :class:`~adapters.kinds.base.Pause`. When one is due, the changes are let go,
the other work runs, and the chunk resumes from its hidden states with the changes applied
again: the answer is the one the chunk would have had without the pause.

A backbone whose model type has no layout (the speech encoder, a model type not in
:data:`adapters.kinds.layouts.LAYOUTS`), and a chunk whose tasks read spatial maps, run in one
call as before (:func:`can_step`): such a chunk is not preemptible.
"""

from __future__ import annotations

import torch

from adapters.backbones.base import Features
from adapters.kinds.base import KindBatch, Pause
from adapters.kinds.layouts import LAYOUTS
from adapters.kinds.pausing import Held


def can_step(backbone, maps: tuple[int, ...] = ()) -> bool:
    """Whether a chunk on ``backbone`` reading ``maps`` can run block by block."""
    return not maps and backbone.model_type in LAYOUTS


def stepwise_forward(backbone, batch: dict[str, torch.Tensor], kinds: list[KindBatch],
                     collect, pause: Pause | None) -> None:
    """Run a chunk through the frozen trunk block by block, offering ``pause`` between
    blocks; ``collect(features)`` once, with the changes still applied."""
    model, lay = backbone.model, LAYOUTS[backbone.model_type]
    batch = {k: v.to(backbone.device) for k, v in batch.items()}
    if "pixel_values" in batch:
        batch["pixel_values"] = batch["pixel_values"].to(backbone.dtype)
    mask = batch.get("attention_mask")  # [rows, seq] or None (images)
    modules = dict(model.named_modules())
    blocks = [[modules[name] for name in names] for names in lay.block_modules(model)]
    with backbone.lock, torch.inference_mode(), Held(kinds, None) as held:
        h = lay.stem(model, batch)  # [rows, seq, hidden] or [rows, c, h, w]
        for b, mods in enumerate(blocks):
            h = lay.run_block(mods, h, mask, model)
            if b + 1 < len(blocks):
                held.between_blocks(pause)
        collect(Features(lay.finish(model, h), mask))
