"""Kinds compose in one trunk pass: the pass buckets a chunk's rows by kind and each kind
builds its own bucket's batch (``AdapterKind.batch``); nobody tests a row for another kind.

A kind defined here only (never in ``KINDS``) joins a chunk with plain and LoRA rows: it
sees its own rows' weights and None elsewhere, and the other rows' features are unchanged.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from adapters.kinds.base import AdapterKind, KindBatch, RowState
from adapters.kinds.trunk import COMPOSED_TRUNK, kind_batches
from support.factories import peft_lora_dir

TEXTS = ["good movie", "the plot was awful", "fun fun fun", "a very sad film"]


class Recording(KindBatch):
    def __init__(self, weights, seen):
        self.weights = weights
        seen.append(self)
        self.applied_to = []

    def applied(self, rows=None):
        self.applied_to.append(rows)
        return contextlib.nullcontext()


class MarkerKind(AdapterKind):
    """A kind that changes nothing on the trunk; it records what the pass hands it."""

    name = "test_marker"
    weight_files = ()

    def __init__(self):
        self.seen: list[Recording] = []

    def batch(self, backbone, weights):
        return Recording(weights, self.seen)


@pytest.fixture
def lora_state(tmp_path, registry, text_backbone):
    registry.register(peft_lora_dir(tmp_path / "lora", str(text_backbone.source_path), seed=2),
                      name="lora", labels=["neg", "pos"])
    a = registry.resolve("lora")
    return a.impl.trunk_state(a.weights)


def pooled(backbone, states):
    out = []
    COMPOSED_TRUNK.forward(backbone, backbone.preprocess(TEXTS[:len(states)]), states,
                           lambda f: out.append(f.get("mean")))
    return out[0]


def test_each_kind_builds_its_own_bucket(text_backbone, lora_state):
    marker = MarkerKind()
    mine = RowState(marker, object())
    states = [None, lora_state, mine, lora_state]
    batches = kind_batches(text_backbone, states)
    assert len(batches) == 2  # LoRA's and the marker's; plain rows need none
    rec = batches[1]
    assert rec.weights == [None, None, mine.weights, None]
    assert batches[0].weights == [None, lora_state.weights, None, lora_state.weights]


def test_a_new_kind_joins_a_mixed_chunk_without_changing_other_rows(text_backbone, lora_state):
    marker = MarkerKind()
    states = [None, lora_state, RowState(marker, object()), lora_state]
    got = pooled(text_backbone, states)
    assert marker.seen[0].applied_to == [None]  # one whole-chunk forward
    ref = pooled(text_backbone, [None, lora_state, None, lora_state])
    assert torch.equal(got, ref)
    plain = pooled(text_backbone, [None] * 4)
    assert torch.allclose(got[[0, 2]], plain[[0, 2]], atol=1e-5)  # plain and marker rows: the frozen trunk
    assert not torch.allclose(got[1], plain[1], atol=1e-3)  # the LoRA row really has its deltas
