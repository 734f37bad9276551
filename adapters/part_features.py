"""One input's features put back together from its parts (:mod:`adapters.slices`).

A part is a slice over some windows of one input (a :class:`~adapters.backbones.preprocess.TextPart`
or an :class:`~adapters.backbones.audio_preprocess.AudioPart`); the batch worker runs it like
any request but keeps its rows' features (:class:`~adapters.runtime.PartFeatures`): pooled
``[rows, hidden]`` and, for per-token tasks, the run of each row's stitched token sequence
its windows own. Those are outputs of the trunk, never activations. Once every part has
run, :func:`merge_parts` joins them, row by row, into the features the whole input would
have given: token runs concatenated in order, pooled features combined as the part type
says (a text's read window 0, an audio clip's mean weighs each part by its windows); the
runtime then scores the heads once on them (:meth:`adapters.runtime.Runtime.answer`).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from adapters.runtime import PartFeatures, PreparedRequest
from adapters.tasks import BatchFeatures, TokenFeatures


def original(part):
    """The input a part was cut from, as the whole request sent it (a text: the string)."""
    return str(part) if isinstance(part, str) else part


def merge_parts(parts: list[PartFeatures]) -> tuple[PreparedRequest, BatchFeatures]:
    """The whole input's request (one input, not partial) and its rows' features, from its
    parts' in window order."""
    first = parts[0]
    inputs = [p.request.inputs[0] for p in parts]
    combine = type(inputs[0]).combine
    feats = [p.features for p in parts]
    rows = len(feats[0].inputs)
    pooled = {name: torch.stack([combine(name, [f.pooled[name][r] for f in feats], inputs)
                                 for r in range(rows)])
              for name in feats[0].pooled}  # [rows, hidden]
    tokens = None if feats[0].tokens is None else _join_tokens([f.tokens for f in feats])
    whole = original(inputs[0])
    req = replace(first.request, inputs=[whole], partial=False, windows=None, extra_windows=0)
    return req, BatchFeatures(pooled, tokens, [whole] * rows, feats[0].maps, feats[0].input_tokens)


def _join_tokens(runs: list[TokenFeatures]) -> TokenFeatures:
    """Each row's token runs concatenated in part order, padded to the longest row."""
    rows = runs[0].hidden.shape[0]
    lengths = [[int(t.mask[r].sum()) for t in runs] for r in range(rows)]
    width = max(sum(ls) for ls in lengths)
    hidden = runs[0].hidden.new_zeros(rows, width, runs[0].hidden.shape[-1])  # [rows, seq, hidden]
    mask = torch.zeros(rows, width, dtype=runs[0].mask.dtype)  # [rows, seq]
    has_off = runs[0].offsets is not None
    has_wid = runs[0].word_ids is not None
    offsets = torch.zeros(rows, width, 2, dtype=torch.long) if has_off else None  # [rows, seq, 2]
    word_ids = torch.full((rows, width), -1, dtype=torch.long) if has_wid else None  # [rows, seq]
    for r in range(rows):
        at = 0
        for t, n in zip(runs, lengths[r]):
            hidden[r, at:at + n] = t.hidden[r, :n]
            mask[r, at:at + n] = 1
            if has_off:
                offsets[r, at:at + n] = t.offsets[r, :n]
            if has_wid:
                word_ids[r, at:at + n] = t.word_ids[r, :n]
            at += n
    return TokenFeatures(hidden, mask, offsets, word_ids)
