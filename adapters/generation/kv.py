"""KV caches: one per sequence, padded into a batch for one decode step, and their byte budget.

Each sequence keeps its own keys and values per layer (``[1, kv_heads, length, head_dim]``).
A decode step left-pads them to the longest into one ``DynamicCache`` (``[rows, kv_heads,
longest, head_dim]``) with an attention mask over the padding, runs the model once, and
hands each sequence back its own slice, one position longer. Sequences join and leave the
batch at any step because nothing is shared between steps but their own caches. The copy
costs one pass over the batch's cache per step: a paged cache that avoids it is not built.

The budget is a reservation: a sequence is admitted only when ``(prompt + max new tokens) *
bytes per token`` fits beside every admitted sequence's reservation, so a running sequence
never runs out of cache and nothing is ever preempted.
"""

from __future__ import annotations

import threading

import torch
from transformers import DynamicCache


class SequenceCache:
    """Keys and values of one sequence (``layers[i] = (k, v)``, each ``[1, kv_heads, length,
    head_dim]``), empty before its first forward."""

    def __init__(self):
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] = []

    @property
    def length(self) -> int:
        return int(self.layers[0][0].shape[2]) if self.layers else 0

    def as_cache(self, config) -> DynamicCache:
        """A ``DynamicCache`` holding this sequence (a forward extends it in place)."""
        if not self.layers:
            return DynamicCache(config=config)
        return DynamicCache(ddp_cache_data=list(self.layers), config=config)

    def take(self, cache: DynamicCache, row: int = 0, pad: int = 0) -> None:
        """Keep row ``row`` of ``cache`` after its first ``pad`` (padding) positions."""
        self.layers = [(layer.keys[row:row + 1, :, pad:], layer.values[row:row + 1, :, pad:])
                       for layer in cache.layers]


def batched_cache(caches: list[SequenceCache], config) -> tuple[DynamicCache, torch.Tensor, list[int]]:
    """``(cache [rows, kv_heads, longest, head_dim] per layer, attention mask [rows, longest + 1],
    left padding per row)`` for one decode step of ``caches`` (each already prefilled)."""
    lengths = [c.length for c in caches]
    longest = max(lengths)
    pads = [longest - n for n in lengths]
    data = []
    for layer in range(len(caches[0].layers)):
        k0, v0 = caches[0].layers[layer]
        k = k0.new_zeros(len(caches), k0.shape[1], longest, k0.shape[3])  # [rows, kvh, longest, hd]
        v = v0.new_zeros(len(caches), v0.shape[1], longest, v0.shape[3])
        for i, (c, pad) in enumerate(zip(caches, pads)):
            k[i, :, pad:] = c.layers[layer][0][0]
            v[i, :, pad:] = c.layers[layer][1][0]
        data.append((k, v))
    mask = torch.ones(len(caches), longest + 1, dtype=torch.long)  # [rows, longest + 1]
    for i, pad in enumerate(pads):
        mask[i, :pad] = 0
    return DynamicCache(ddp_cache_data=data, config=config), mask, pads


class KvBudget:
    """Bytes of KV cache reserved by admitted sequences, at most ``total``.

    >>> b = KvBudget(100)
    >>> b.reserve(60), b.reserve(60), b.used
    (True, False, 60)
    """

    def __init__(self, total: int):
        self.total = int(total)
        self.used = 0
        self._lock = threading.Lock()

    def reserve(self, n: int) -> bool:
        with self._lock:
            if self.used + n > self.total:
                return False
            self.used += n
            return True

    def release(self, n: int) -> None:
        with self._lock:
            self.used -= n
