"""Per-row LoRA inside one shared backbone pass.

Each adapted module gets one forward hook, installed once. During a batch the
runtime sets a :class:`LoraBatch` in a context variable (per thread, never shared
model state: the bug of PEFT #804), and the hook adds, for every row, the low-rank
delta of *that row's* adapter: gathered factors and two batched matmuls.
Outside a batch, or for a module no row adapts, the hook adds nothing.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import nn

from adapters.lora.weights import LoraWeights

_ACTIVE: ContextVar["LoraBatch | None"] = ContextVar("taskswap_lora_batch", default=None)


class LoraBatch:
    """Row ``i`` uses ``adapters[slots[i] - 1]``; slot 0 means no LoRA for that row.

    >>> b = LoraBatch([], torch.zeros(3, dtype=torch.long))
    >>> b.delta("any.module", torch.zeros(3, 4, 8)) is None
    True
    """

    def __init__(self, adapters: list[LoraWeights], slots: torch.Tensor):
        self.adapters = adapters
        self.slots = slots  # [rows] long
        self._cache: dict[str, tuple | None] = {}

    def _factors(self, name: str, device) -> tuple | None:
        if name not in self._cache:
            self._cache[name] = self._build(name, device)
        return self._cache[name]

    def _build(self, name: str, device):
        mods = [a.modules.get(name) for a in self.adapters]
        present = [m for m in mods if m is not None]
        if not present:
            return None
        slots = self.slots.to(device)
        used = torch.unique(slots)
        if used.numel() == 1 and int(used[0]) > 0 and mods[int(used[0]) - 1] is not None:
            m = mods[int(used[0]) - 1]
            return ("one", m.A, m.B)  # every row, one adapter: plain matmuls, no gather
        r = max(m.rank for m in present)
        ref = present[0]
        A = ref.A.new_zeros(len(mods) + 1, r, ref.A.shape[1])  # [slots, r, in]; slot 0 = zero
        B = ref.B.new_zeros(len(mods) + 1, ref.B.shape[0], r)  # [slots, out, r]
        for i, m in enumerate(mods, start=1):
            if m is not None:  # zero-padding a smaller rank leaves its delta unchanged
                A[i, : m.rank] = m.A
                B[i, :, : m.rank] = m.B
        return ("rows", A[slots], B[slots])  # [rows, r, in], [rows, out, r]

    def delta(self, name: str, x: torch.Tensor, conv: bool = False) -> torch.Tensor | None:
        f = self._factors(name, x.device)
        if f is None:
            return None
        mode, A, B = f
        A, B = A.to(x.dtype), B.to(x.dtype)
        if conv:  # x: [rows, in, h, w]
            rows, c, h, w = x.shape
            x3 = x.reshape(rows, c, h * w)
            if mode == "one":
                return (B @ (A @ x3)).reshape(rows, -1, h, w)
            return torch.bmm(B, torch.bmm(A, x3)).reshape(rows, -1, h, w)
        if mode == "one":  # x: [rows, ..., in]
            return (x @ A.T) @ B.T
        x3 = x.reshape(x.shape[0], -1, x.shape[-1])  # [rows, tokens, in]
        d = torch.bmm(torch.bmm(x3, A.transpose(1, 2)), B.transpose(1, 2))  # [rows, tokens, out]
        return d.reshape(*x.shape[:-1], d.shape[-1])


@contextmanager
def use_lora_batch(batch: LoraBatch | None):
    """Make ``batch`` the LoRA selection for forwards in this thread; always restored."""
    token = _ACTIVE.set(batch)
    try:
        yield batch
    finally:
        _ACTIVE.reset(token)


def _hook_for(name: str, conv: bool):
    def hook(module, inputs, output):
        batch = _ACTIVE.get()
        if batch is None:
            return None
        d = batch.delta(name, inputs[0], conv)
        return None if d is None else output + d
    return hook


def ensure_hooked(model: nn.Module, names) -> None:
    """Install the per-row LoRA hook on each named module once (idempotent)."""
    modules = dict(model.named_modules())
    for name in names:
        mod = modules[name]
        if not getattr(mod, "_taskswap_lora_hooked", False):
            mod.register_forward_hook(_hook_for(name, isinstance(mod, nn.Conv2d)))
            mod._taskswap_lora_hooked = True
