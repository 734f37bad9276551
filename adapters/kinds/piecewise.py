"""The trunk run piecewise, for a chunk where some rows leave the frozen trunk at a block.

The chunk's rows are reduced to distinct (input, trunk key) rows (:meth:`KindBatch.trunk_key`:
rows that change nothing below their exit share the frozen trunk); the frozen stem and
blocks run once on those up to the lowest exit any row needs; from each block on, the rows
still on the frozen trunk continue (with every kind's changes for exactly those rows,
:meth:`KindBatch.applied`), and at an exit its rows leave and run their own blocks, one call
per exit (:meth:`KindBatch.exits`). The finish (pooler) runs once on every row. The spatial
maps a chunk is asked for are taken as the blocks make them: below a row's exit from its
frozen row, from its exit on from its own blocks. Between frozen blocks the chunk may pause
(:mod:`adapters.kinds.pausing`) and resume from its hidden states; a task's own blocks above
its exit run in one call, without a pause.
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
                      collect, maps: tuple[int, ...] = (), pause: Pause | None = None) -> None:
    """Run a chunk of ``n`` rows piecewise (see the module docstring); ``collect`` once, with
    the spatial maps at ``maps`` strides kept: a row's map below its exit is its frozen row's,
    above it its own blocks' (a dense top-layers task's maps above the split). ``pause`` is
    offered after each frozen block (not inside a task's own blocks, which run in one call
    per exit)."""
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
    stop_at = [n_blocks] * n  # per row: the block after its last one (below n_blocks: no final state)
    exits: dict[int, list] = {}  # block -> [(rows, run)]
    for k in kinds:
        for block, rows, run, end in k.exits():
            exits.setdefault(block, []).append((rows, run))
            for i in rows:
                exit_at[i], stop_at[i] = block, end
    uniq = sorted(set(rep))  # the rows the frozen trunk runs on
    pos = {u: j for j, u in enumerate(uniq)}
    # A frozen row is needed up to the highest exit of the rows it stands for.
    need = [0] * len(uniq)
    for i in range(n):
        need[pos[rep[i]]] = max(need[pos[rep[i]]], exit_at[i])
    low = min(exit_at)
    final = [None] * n  # per row: its last hidden state
    taps = _Taps(backbone, lay, maps, n)
    with backbone.lock, torch.inference_mode():
        idx = torch.tensor(uniq, dtype=torch.long, device=backbone.device)
        sub_mask = None if mask is None else mask[idx]
        with Held(kinds, uniq) as held:
            h = lay.stem(model, {k: v[idx] for k, v in batch.items()})  # [uniq, ...]
            for b in range(low):
                h = lay.run_block(block_mods[b], h, sub_mask, model, tap=taps.frozen(b, range(len(uniq))))
                held.between_blocks(pause)
        active = list(range(len(uniq)))  # positions in uniq still on the frozen trunk
        for b in range(low, n_blocks + 1):
            where = {p: j for j, p in enumerate(active)}
            for rows, run in exits.get(b, []):  # rows leaving here: one call per exit
                sel = torch.tensor([where[pos[rep[i]]] for i in rows], dtype=torch.long, device=h.device)
                m_t = None if mask is None else mask[torch.tensor(rows, dtype=torch.long, device=mask.device)]
                ht = run(lay, block_mods[b:], model, h[sel], m_t, taps.own(rows))
                for j, i in enumerate(rows):
                    if stop_at[i] == n_blocks:
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
                h = lay.run_block(block_mods[b], h, a_mask, model, tap=taps.frozen(b, active))
            let_pause(pause)  # nothing applied here: other work may run
        if active and low <= n_blocks:
            where = {p: j for j, p in enumerate(active)}
            for i in range(n):
                if exit_at[i] == n_blocks:
                    final[i] = h[where[pos[rep[i]]]]
        # A row that stopped below the last block (a dense task's own blocks end at its deepest
        # map) has no final state: zeros stand in, which nothing reads (its task reads maps).
        hidden = torch.stack(_filled(final, lambda: _no_final(backbone, batch)))  # [rows, ...]
        with _applied(kinds, list(range(n))):
            out = lay.finish(model, hidden)
        if maps:
            out.hidden_states = taps.hidden_states([pos[rep[i]] for i in range(n)], batch)
        collect(Features(out, mask, {s: backbone.feature_maps[s] for s in maps} if maps else None))


class _Taps:
    """The maps asked for, as the blocks make them: the frozen rows' per block (with which
    frozen positions they hold), each exited row's own."""

    def __init__(self, backbone, lay, maps: tuple[int, ...], n: int):
        self.backbone, self.n = backbone, n
        self.stride_of = {backbone.feature_maps[s]: s for s in maps}  # hidden index -> stride
        self.block_stride = {lay.block_of_hidden(i): s for i, s in self.stride_of.items()}
        self.frozen_maps: dict[int, tuple[list[int], torch.Tensor]] = {}  # stride -> (positions, map)
        self.own_maps: dict[int, list] = {s: [None] * n for s in maps}  # stride -> per row

    def frozen(self, block: int, positions):
        s = self.block_stride.get(block)
        if s is None:
            return None
        return lambda t: self.frozen_maps.__setitem__(s, (list(positions), t))

    def own(self, rows: list[int]):
        if not self.block_stride:
            return None

        def tap(block, t):
            s = self.block_stride.get(block)
            if s is not None:
                for j, i in enumerate(rows):
                    self.own_maps[s][i] = t[j]
        return tap

    def hidden_states(self, frozen_pos: list[int], batch) -> list:
        """The model's ``hidden_states`` as far as asked: a ``[rows, c, h, w]`` map at each index
        asked for (None elsewhere); a row that made no such map (a dense top-layers row whose
        blocks end below it: its task does not read it) gets zeros."""
        out: list = [None] * (max(self.stride_of, default=-1) + 1)
        for index, s in self.stride_of.items():
            rows = list(self.own_maps[s])
            if s in self.frozen_maps:
                held, t = self.frozen_maps[s]
                at = {p: j for j, p in enumerate(held)}
                rows = [r if r is not None or frozen_pos[i] not in at else t[at[frozen_pos[i]]]
                        for i, r in enumerate(rows)]
            out[index] = torch.stack(_filled(rows, lambda s=s: _no_map(self.backbone, batch, s)))
        return out


def _filled(rows: list, empty) -> list:
    """``rows`` with each None replaced by zeros shaped like the others (or ``empty()``)."""
    like = next((r for r in rows if r is not None), None)
    zero = torch.zeros_like(like) if like is not None else None
    if zero is None and any(r is None for r in rows):
        zero = empty()
    return [zero if r is None else r for r in rows]


def _no_map(backbone, batch, stride: int) -> torch.Tensor:
    """Zeros shaped like one row's map at ``stride`` (no row of the chunk made one)."""
    h, w = batch["pixel_values"].shape[-2:]
    return torch.zeros(backbone.map_channels[stride], -(-h // stride), -(-w // stride),
                       dtype=backbone.dtype, device=backbone.device)


def _no_final(backbone, batch) -> torch.Tensor:
    """Zeros standing in for one conv row's final state (no row of the chunk reached the end)."""
    return torch.zeros(backbone.hidden_size, 1, 1, dtype=backbone.dtype, device=backbone.device)
