"""Packed linear heads (adapters/head_arena.py): same outputs as an nn.Module head, rows
shared per shape, a row reused only once nobody holds its head."""

from __future__ import annotations

import gc

import torch

from adapters.format.manifest import HeadSpec
from adapters.head_arena import PackedLinearHead, _arena
from adapters.heads import Head, build_head
from adapters.heads_batched import HeadCall, HeadStacks, run_heads


def _module_head(spec, n, seed):
    torch.manual_seed(seed)
    return Head(spec, n).eval().requires_grad_(False)


def test_packed_head_matches_the_module_head_and_its_file():
    spec = HeadSpec(pooling="mean", input_dim=12, normalize=True)
    ref = _module_head(spec, 3, 0)
    packed = build_head(spec, 3, ref.state_for_file())
    assert isinstance(packed, PackedLinearHead)
    x = torch.randn(5, 12)
    torch.testing.assert_close(packed(x), ref(x), rtol=0, atol=0)
    torch.testing.assert_close(packed.net(x), ref.net(x), rtol=0, atol=0)  # no normalisation
    assert {k: tuple(v.shape) for k, v in packed.state_for_file().items()} == {
        "layers.0.weight": (3, 12), "layers.0.bias": (3,)}
    assert sum(p.numel() for p in packed.parameters()) == 3 * 12 + 3
    tokens = torch.randn(2, 4, 12)  # per-token features [texts, seq, hidden]
    torch.testing.assert_close(packed(tokens), ref(tokens), rtol=0, atol=0)
    mlp_spec = HeadSpec(pooling="mean", input_dim=12, hidden=[4])
    assert isinstance(build_head(mlp_spec, 3, _module_head(mlp_spec, 3, 1).state_for_file()), Head)


def test_stacked_and_alone_paths_equal_each_head_alone():
    spec = HeadSpec(pooling="mean", input_dim=8)
    refs = [_module_head(spec, 4, s) for s in range(5)]
    packed = [build_head(spec, 4, r.state_for_file()) for r in refs]
    feats = torch.randn(10, 8)
    calls = [HeadCall(h, False, [i, (i + 3) % 10]) for i, h in enumerate(packed)]
    calls.append(HeadCall(packed[0], False, list(range(10))))  # one head far above the others
    got = run_heads(calls, {"mean": feats}, HeadStacks())
    for c, out in zip(calls, got):
        ref = refs[packed.index(c.head)]
        torch.testing.assert_close(out, torch.softmax(ref(feats[c.rows]), -1), rtol=0, atol=1e-6)


def test_a_row_is_reused_only_after_its_head_is_gone():
    spec = HeadSpec(pooling="mean", input_dim=7)
    arena = _arena(5, 7, "cpu")
    a = PackedLinearHead(spec, torch.ones(5, 7), torch.zeros(5))
    held = a  # an in-flight batch's reference, after the registry released it
    chunk, row = a._chunk, a._row
    del a
    gc.collect()
    b = PackedLinearHead(spec, torch.full((5, 7), 2.0), torch.zeros(5))
    assert (b._chunk, b._row) != (chunk, row)
    assert torch.equal(held.weight, torch.ones(5, 7))  # untouched by b
    del held
    gc.collect()
    c = PackedLinearHead(spec, torch.full((5, 7), 3.0), torch.zeros(5))
    assert (c._chunk, c._row) == (chunk, row) and torch.equal(b.weight, torch.full((5, 7), 2.0))
    assert len(arena.chunks) == 1
