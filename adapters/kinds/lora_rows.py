"""The LoRA rows of one chunk: the one place that turns rows' LoRA weights into per-row
slots (:class:`adapters.lora.batch.LoraBatch`) or, when one adapter holds every row of a
whole-chunk forward, its merged weights (the raw backbone's cost).
"""

from __future__ import annotations

import torch

from adapters.kinds.base import KindBatch
from adapters.lora.batch import LoraBatch, merged_lora, use_lora_batch


def lora_batch(weights: list) -> LoraBatch | None:
    """Per-row slots for ``weights`` (one LoRA or None per row); None when no row has one.

    Slots follow a canonical order by identity, so a replayed set of adapters finds its
    factor stacks cached (:data:`adapters.lora.batch.LORA_STACKS`).
    """
    distinct = sorted({id(w): w for w in weights if w is not None}.items())
    if not distinct:
        return None
    slot_of = {k: i for i, (k, _) in enumerate(distinct, start=1)}
    slots = torch.tensor([0 if w is None else slot_of[id(w)] for w in weights], dtype=torch.long)
    return LoraBatch([w for _, w in distinct], slots)


class LoraRows(KindBatch):
    """``weights[i]``: row ``i``'s LoRA weights, or None (a row of another kind, or plain)."""

    def __init__(self, model: torch.nn.Module, weights: list):
        self.model = model
        self.weights = weights

    def applied(self, rows: list[int] | None = None):
        if rows is None:
            first = self.weights[0] if self.weights else None
            if first is not None and all(w is first for w in self.weights):
                return merged_lora(self.model, first)  # one LoRA on every row: merged weights
            return use_lora_batch(lora_batch(self.weights))
        return use_lora_batch(lora_batch([self.weights[r] for r in rows]))  # per-row deltas

    def trunk_key(self, row: int):
        w = self.weights[row]
        return None if w is None else id(w)

