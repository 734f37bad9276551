"""Linear heads packed into shared arena tensors: 100,000 heads cost their weights, not
100,000 ``nn.Module`` trees.

A served linear head (no hidden layer) is a weight ``[out, in]`` and a bias ``[out]``.
As an ``nn.Module`` (``Head`` → ``Sequential`` → ``Linear`` + two ``Parameter``\\ s) each
head carries about 8.5 KB of Python bookkeeping, more than the weights of a 384 → 2..10
head. Here the weights of every linear head of one shape (``in``, ``out``, device) live
in rows of a few large chunk tensors (``W [slots, out, in]``, ``b [slots, out]``) and a
head is a small object holding its spec, its chunk and its row index.

A row returns to its chunk's free list only when the head object itself is garbage
(``__del__``), never when the registry releases it: a batch still running on a released
head keeps reading its own weights, and a later head can only reuse the row once nobody
references the old one. Chunks are created as ``torch.empty`` (large ones are mapped
lazily by the allocator, so rows never written cost no resident memory) and are kept once
created: at most one partly used chunk per shape.

``PackedLinearHead`` offers what serving uses of :class:`adapters.heads.Head`: ``spec``,
calling it (L2 normalisation if the spec asks, then the linear map), ``net`` (the linear
map alone), ``linear_layers()`` (objects with ``weight``, ``bias``, ``in_features``,
``out_features``), ``parameters()``, ``state_for_file()`` and ``to(device)``.
"""

from __future__ import annotations

import threading

import torch
from torch import nn

from adapters.format.manifest import HeadSpec

CHUNK_BYTES = 4 << 20  # weights per chunk tensor (a few MB: little slack per shape)
MAX_SLOTS = 4096


class _Chunk:
    """One ``W [slots, out, in]`` + ``b [slots, out]`` pair and its free rows."""

    __slots__ = ("W", "b", "free", "next")

    def __init__(self, slots: int, out: int, inp: int, device):
        self.W = torch.empty(slots, out, inp, device=device)  # [slots, out, in]
        self.b = torch.empty(slots, out, device=device)  # [slots, out]
        self.free: list[int] = []  # rows given back (appended by __del__, lock-free)
        self.next = 0  # rows below this have been handed out at least once


class _Arena:
    """Every chunk of one shape on one device."""

    def __init__(self, out: int, inp: int, device):
        self.out, self.inp, self.device = out, inp, device
        self.slots = max(16, min(MAX_SLOTS, CHUNK_BYTES // max(1, out * inp * 4)))
        self.chunks: list[_Chunk] = []
        self.lock = threading.Lock()

    def take(self) -> tuple[_Chunk, int]:
        with self.lock:
            for chunk in self.chunks:
                if chunk.free:
                    return chunk, chunk.free.pop()
                if chunk.next < self.slots:
                    chunk.next += 1
                    return chunk, chunk.next - 1
            chunk = _Chunk(self.slots, self.out, self.inp, self.device)
            self.chunks.append(chunk)
            chunk.next = 1
            return chunk, 0


_ARENAS: dict[tuple, _Arena] = {}
_ARENAS_LOCK = threading.Lock()


def _arena(out: int, inp: int, device) -> _Arena:
    key = (out, inp, str(torch.device(device)))
    with _ARENAS_LOCK:
        arena = _ARENAS.get(key)
        if arena is None:
            arena = _ARENAS[key] = _Arena(out, inp, torch.device(device))
        return arena


def arena_stats() -> dict[str, int]:
    """``{"shapes", "chunks", "rows_in_use"}`` over every arena (for tests and benches)."""
    with _ARENAS_LOCK:
        arenas = list(_ARENAS.values())
    chunks = [c for a in arenas for c in a.chunks]
    return {"shapes": len(arenas), "chunks": len(chunks),
            "rows_in_use": sum(c.next - len(c.free) for c in chunks)}


class _LinearView:
    """``linear_layers()``'s element: the head's weight and bias as views into its chunk."""

    __slots__ = ("weight", "bias")

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        self.weight, self.bias = weight, bias

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight, self.bias)


class PackedLinearHead:
    """A linear head whose weights are one row of a shared chunk.

    >>> h = PackedLinearHead(HeadSpec(pooling="mean", input_dim=4), torch.ones(3, 4), torch.zeros(3))
    >>> h(torch.ones(2, 4)).tolist()
    [[4.0, 4.0, 4.0], [4.0, 4.0, 4.0]]
    """

    __slots__ = ("spec", "_chunk", "_row", "__weakref__")
    training = False  # what nn.Module.eval() would say: never trained in place

    def __init__(self, spec: HeadSpec, weight: torch.Tensor, bias: torch.Tensor, device=None):
        out, inp = weight.shape
        device = weight.device if device is None else device
        self.spec = spec
        self._chunk, self._row = _arena(out, inp, device).take()
        with torch.no_grad():
            self._chunk.W[self._row].copy_(weight)
            self._chunk.b[self._row].copy_(bias)

    def __del__(self):
        chunk = getattr(self, "_chunk", None)
        if chunk is not None:
            chunk.free.append(self._row)  # atomic under the GIL: no lock (GC may run anywhere)

    @property
    def weight(self) -> torch.Tensor:
        return self._chunk.W[self._row]  # [out, in], a view

    @property
    def bias(self) -> torch.Tensor:
        return self._chunk.b[self._row]  # [out]

    @property
    def net(self) -> _LinearView:
        """The linear map without the spec's normalisation (like ``Head.net``)."""
        return _LinearView(self.weight, self.bias)

    def linear_layers(self) -> list[_LinearView]:
        return [self.net]

    def parameters(self):
        return iter((self.weight, self.bias))

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """``features [..., in] -> logits [..., out]``."""
        if self.spec.normalize:
            features = nn.functional.normalize(features, dim=-1)
        return nn.functional.linear(features, self.weight, self.bias)

    forward = __call__

    def state_for_file(self) -> dict[str, torch.Tensor]:
        return {"layers.0.weight": self.weight.clone(), "layers.0.bias": self.bias.clone()}

    def to(self, device) -> "PackedLinearHead":
        if torch.device(device) == self._chunk.W.device:
            return self
        return PackedLinearHead(self.spec, self.weight.to(device), self.bias.to(device), device)

    def eval(self) -> "PackedLinearHead":
        return self

    def requires_grad_(self, flag: bool = True) -> "PackedLinearHead":
        if flag:
            raise TypeError("a packed head is for serving; train an adapters.heads.Head")
        return self
