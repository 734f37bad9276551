"""The hooked trunk pass: plain rows and per-row LoRA rows in one forward.

A chunk holding rows of a ``top_layers`` adapter runs split at the blocks (its row states,
:class:`adapters.kinds.top_layers.TopLayersWeights`, hand the chunk to
:func:`adapters.kinds.top_layers.split_forward`). Otherwise, a chunk whose rows are all
plain runs the frozen trunk as is; one whose rows all use the same LoRA adapter runs on
its merged weights (the raw backbone's cost); a mix runs with per-row deltas gathered
inside the forward hooks (:mod:`adapters.lora.batch`).
"""

from __future__ import annotations

import contextlib

import torch

from adapters.kinds.base import TrunkPass
from adapters.lora.batch import LoraBatch, merged_lora, use_lora_batch


class HookedTrunk(TrunkPass):
    def forward(self, backbone, batch, states, collect) -> None:
        tops = [w for w in states if getattr(w, "split", None) is not None]
        if tops:
            # Top-layers rows: the trunk is shared below their split; their weights know how
            # (that kind names this pass, so this module does not import it).
            return tops[0].split_forward(backbone, batch, states, collect)
        distinct = sorted({id(w): w for w in states if w is not None}.items())
        if not distinct:  # plain rows only
            merged, lb = None, None
        elif len(distinct) == 1 and all(w is not None for w in states):
            merged, lb = distinct[0][1], None  # one LoRA on every row: merged weights cost nothing extra
        else:  # canonical slot order by identity, so a replayed set finds its factor stacks cached
            slot_of = {k: i for i, (k, _) in enumerate(distinct, start=1)}
            slots = torch.tensor([0 if w is None else slot_of[id(w)] for w in states], dtype=torch.long)
            merged, lb = None, LoraBatch([w for _, w in distinct], slots)
        ctx = merged_lora(backbone.model, merged) if merged is not None else contextlib.nullcontext()
        with backbone.lock, use_lora_batch(lb), ctx:
            collect(backbone.forward(batch))


HOOKED_TRUNK = HookedTrunk()
