"""The trunk run piecewise, for a chunk where some rows leave the frozen trunk at a block.

The chunk's rows are reduced to distinct (input, trunk key) rows (:meth:`KindBatch.trunk_key`:
rows that change nothing below their exit share the frozen trunk); the frozen stem and
blocks run once on those up to the lowest exit any row needs; from each block on, the rows
still on the frozen trunk continue (with every kind's changes for exactly those rows,
:meth:`KindBatch.applied`), and at an exit its rows leave and run their own blocks, one call
per exit (:meth:`KindBatch.exits`). The finish (pooler) runs once on every row. Between
frozen blocks the chunk may pause (:mod:`adapters.kinds.pausing`) and resume from its hidden
states; a task's own blocks above its exit run in one call, without a pause.
"""

from __future__ import annotations

import contextlib

import torch

from adapters.backbones.base import Features
from adapters.kinds.base import KindBatch, Pause
from adapters.kinds.layouts import layout_of
from adapters.kinds.pausing import Held, let_pause


def _row_keys(batch: dict[str, torch.Tensor], kinds: list[KindBatch], n: int) -> list[int]:
    """For each row, the index of the first row with the same input and the same trunk keys."""
    first: dict[tuple, int] = {}
    out = []
    for i in range(n):
        key = tuple(k.trunk_key(i) for k in kinds) + tuple(v[i].cpu().numpy().tobytes()
                                                          for _, v in sorted(batch.items()))
        out.append(first.setdefault(key, i))
    return out


@contextlib.contextmanager
def _applied(kinds: list[KindBatch], rows: list[int]):
    """Every kind's changes for a forward over chunk ``rows``."""
    with contextlib.ExitStack() as stack:
        for k in kinds:
            stack.enter_context(k.applied(rows))
        yield


def piecewise_forward(backbone, batch: dict[str, torch.Tensor], kinds: list[KindBatch], n: int,
                      collect, pause: Pause | None = None) -> None:
    """Run a chunk of ``n`` rows piecewise (see the module docstring); ``collect`` once.
    ``pause`` is offered after each frozen block (not inside a task's own blocks, which run
    in one call per exit)."""
    model, lay = backbone.model, layout_of(backbone)
    rep = _row_keys(batch, kinds, n)  # on the CPU tensors, before they move
    batch = {k: v.to(backbone.device) for k, v in batch.items()}
    if "pixel_values" in batch:
        batch["pixel_values"] = batch["pixel_values"].to(backbone.dtype)
    mask = batch.get("attention_mask")  # [rows, seq] or None
    modules = dict(model.named_modules())
    block_mods = [[modules[name] for name in names] for names in lay.block_modules(model)]
    n_blocks = len(block_mods)

    exit_at = [n_blocks] * n  # per row: the block before which it leaves the frozen trunk
    exits: dict[int, list] = {}  # block -> [(rows, run)]
    for k in kinds:
        for block, rows, run in k.exits():
            exits.setdefault(block, []).append((rows, run))
            for i in rows:
                exit_at[i] = block
    uniq = sorted(set(rep))  # the rows the frozen trunk runs on
    pos = {u: j for j, u in enumerate(uniq)}
    # A frozen row is needed up to the highest exit of the rows it stands for.
    need = [0] * len(uniq)
    for i in range(n):
        need[pos[rep[i]]] = max(need[pos[rep[i]]], exit_at[i])
    low = min(exit_at)
    final = [None] * n  # per row: its last hidden state
    with backbone.lock, torch.inference_mode():
        idx = torch.tensor(uniq, dtype=torch.long, device=backbone.device)
        sub_mask = None if mask is None else mask[idx]
        with Held(kinds, uniq) as held:
            h = lay.stem(model, {k: v[idx] for k, v in batch.items()})  # [uniq, ...]
            for b in range(low):
                h = lay.run_block(block_mods[b], h, sub_mask, model)
                held.between_blocks(pause)
        active = list(range(len(uniq)))  # positions in uniq still on the frozen trunk
        for b in range(low, n_blocks + 1):
            where = {p: j for j, p in enumerate(active)}
            for rows, run in exits.get(b, []):  # rows leaving here: one call per exit
                sel = torch.tensor([where[pos[rep[i]]] for i in rows], dtype=torch.long, device=h.device)
                m_t = None if mask is None else mask[torch.tensor(rows, dtype=torch.long, device=mask.device)]
                ht = run(lay, block_mods[b:], model, h[sel], m_t)
                for j, i in enumerate(rows):
                    final[i] = ht[j]
            if b == n_blocks:
                break
            keep = [j for j, p in enumerate(active) if need[p] > b]
            if len(keep) < len(active):
                h = h[torch.tensor(keep, dtype=torch.long, device=h.device)]
                active = [active[j] for j in keep]
            if not active:
                break
            a_rows = [uniq[p] for p in active]
            a_mask = None if mask is None else mask[torch.tensor(a_rows, dtype=torch.long, device=mask.device)]
            with _applied(kinds, a_rows):
                h = lay.run_block(block_mods[b], h, a_mask, model)
            let_pause(pause)  # nothing applied here: other work may run
        if active and low <= n_blocks:
            where = {p: j for j, p in enumerate(active)}
            for i in range(n):
                if exit_at[i] == n_blocks:
                    final[i] = h[where[pos[rep[i]]]]
        hidden = torch.stack(final)  # [rows, ...]
        with _applied(kinds, list(range(n))):
            out = lay.finish(model, hidden)
        collect(Features(out, mask))
