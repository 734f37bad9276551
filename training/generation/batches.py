"""Length-bucketed batches: examples of similar length share a batch, so little is padded.

    >>> length_buckets([5, 1, 4, 2], batch_size=2, seed=None)
    [[1, 3], [2, 0]]
"""

from __future__ import annotations

import random

import torch

from training.generation.encode import IGNORE, Encoded


def length_buckets(lengths: list[int], batch_size: int, seed: int | None) -> list[list[int]]:
    """Indices sorted by length, cut into batches of ``batch_size``; with a ``seed`` the batch
    order is shuffled (and ties broken at random), so each epoch visits lengths in a new order."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    if seed is not None:
        rng = random.Random(seed)
        keys = {i: (lengths[i], rng.random()) for i in order}
        order.sort(key=keys.__getitem__)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if seed is not None:
        random.Random(seed + 1).shuffle(batches)
    return batches


def collate(items: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels``, each ``[batch, longest]``."""
    width = max(len(e.ids) for e in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    for r, e in enumerate(items):
        n = len(e.ids)
        ids[r, :n] = torch.tensor(e.ids)
        mask[r, :n] = 1
        labels[r, :n] = torch.tensor(e.labels)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
