"""Words to sub-tokens: a tagger's sentences encoded for the trunk, each word at its first sub-token.

Shared by the frozen-trunk and LoRA taggers (:mod:`training.tokens`) and the from-scratch
baseline (:mod:`training.token_scratch`).
"""

from __future__ import annotations

import torch

from adapters.backbones.base import Backbone


def encode_words(backbone: Backbone, sentences: list[list[str]]) -> tuple[dict, torch.Tensor, int]:
    """``(batch [n, seq] tensors, first [n, seq], dropped)``: ``first`` holds the word index at
    each word's first sub-token and -1 elsewhere; ``dropped`` = words cut by ``max_length``."""
    tok = backbone.preprocessor.tokenizer
    enc = tok(sentences, is_split_into_words=True, truncation=True, padding=True,
              max_length=backbone.preprocessor.max_length, return_tensors="pt")
    first = torch.full(enc["input_ids"].shape, -1, dtype=torch.long)
    dropped = 0
    for i, words in enumerate(sentences):
        seen = set()
        for p, w in enumerate(enc.word_ids(i)):
            if w is not None and w not in seen:
                seen.add(w)
                first[i, p] = w
        dropped += len(words) - len(seen)
    return dict(enc), first, dropped
