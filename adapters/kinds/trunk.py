"""The composed trunk pass: plain, LoRA and top-layers rows of a chunk in one forward.

The chunk's rows are bucketed by kind (each row's :class:`~adapters.kinds.base.RowState`
names its kind), and each kind builds its bucket's :class:`~adapters.kinds.base.KindBatch`
(LoRAX's per-kind ``BatchAdapterWeights``). When no row leaves the frozen trunk, the
backbone runs whole with every kind's changes applied (LoRA: per-row deltas in the forward
hooks, :mod:`adapters.lora.batch`, or one adapter's merged weights); when some do (a
top-layers task's own blocks), it runs piecewise (:mod:`adapters.kinds.piecewise`). Given a
pause (preemption: the batch worker lets owed work of another namespace run between blocks),
a chunk runs block by block (:mod:`adapters.kinds.stepwise`) where its backbone has a layout.
"""

from __future__ import annotations

import contextlib

from adapters.kinds.base import KindBatch, TrunkPass
from adapters.kinds.piecewise import piecewise_forward
from adapters.kinds.stepwise import can_step, stepwise_forward


def kind_batches(backbone, states: list) -> list[KindBatch]:
    """One :class:`KindBatch` per kind present in ``states`` (None: a plain row), in order of
    first appearance; each sees its own rows' weights and None elsewhere."""
    kinds = {}
    for s in states:
        if s is not None:
            kinds.setdefault(id(s.kind), s.kind)
    return [k.batch(backbone, [s.weights if s is not None and s.kind is k else None for s in states])
            for k in kinds.values()]


class ComposedTrunk(TrunkPass):
    def forward(self, backbone, batch, states, collect, maps=(), pause=None) -> None:
        kinds = kind_batches(backbone, states)
        if any(k.exits() for k in kinds):
            return piecewise_forward(backbone, batch, kinds, len(states), collect, maps, pause)
        if pause is not None and can_step(backbone, maps):  # preemptible between blocks
            return stepwise_forward(backbone, batch, kinds, collect, pause)
        with backbone.lock, contextlib.ExitStack() as stack:
            for k in kinds:
                stack.enter_context(k.applied())
            collect(backbone.forward(batch, maps) if maps else backbone.forward(batch))


COMPOSED_TRUNK = ComposedTrunk()
"""The pass every kind names (heads, LoRA, top layers): one forward per chunk."""
