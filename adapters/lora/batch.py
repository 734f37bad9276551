"""Per-row LoRA inside one shared backbone pass.

Each adapted module gets one forward hook, installed once. During a batch the
runtime sets a :class:`LoraBatch` in a context variable (per thread, never shared
model state: the bug of PEFT #804), and the hook adds, for every row, the low-rank
delta of *that row's* adapter: factors gathered per row and two batched matmuls, the
second one fused with the add into the module's output (``baddbmm_``, no extra
output-sized tensor). Outside a batch, or for a module no row adapts, the hook adds
nothing.

The per-module factor stacks of a set of adapters are built once and kept in a small
LRU keyed by the adapters' identities (:class:`LoraStacks`), so a batch over the same
adapters as a recent one (a few busy adapters, one adapter, a replayed mix) only
gathers rows. Rows with no LoRA (head tasks in the same pass) are left out of the
LoRA matmuls altogether.

When every row of a pass uses the *same* adapter, :func:`merged_lora` swaps each
adapted weight for ``W + B @ A`` for the duration of the pass instead: the forward
then costs exactly what the raw backbone costs.

Convolutions: a 1x1 convolution is a matmul over channels; a k x k one (PEFT puts
``lora_A`` = the same k x k conv with ``r`` outputs, ``lora_B`` = 1x1) is the same maths
on the unfolded patches (im2col). A model that folds time into the batch dimension
(the speech encoder runs ``[rows * windows, ...]`` through its convs, row-major) gets its
rows' slots repeated to match: a module input of ``k * rows`` entries is read as ``k``
consecutive entries per row.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import nn

from adapters.identity_cache import IdentityCache
from adapters.lora.weights import LoraModule, LoraWeights

_ACTIVE: ContextVar["LoraBatch | None"] = ContextVar("taskswap_lora_batch", default=None)


class LoraStacks(IdentityCache[dict]):
    """LRU of per-module factor stacks, keyed by the tuple of adapters in a batch (each
    entry is a dict the hooks fill one module at a time, at most ``size`` entries of
    stacks, each the size of the adapters' own factors)."""

    def __init__(self, size: int = 8):
        super().__init__(size)

    def stacks_for(self, adapters: tuple[LoraWeights, ...]) -> dict:
        """The (mutable, per-module-filled) stack dict for this exact tuple of adapters."""
        return self.get(adapters, dict)


LORA_STACKS = LoraStacks()


def _stack(mods: list[LoraModule | None], device) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Slot 0 is zeros (no LoRA); slot ``i`` holds adapter ``i-1``, zero-padded to the max rank.

    Returns ``At [slots, in, r]`` and ``Bt [slots, r, out]``, transposed once here so the
    per-batch matmuls read them contiguously. Zero-padding a smaller rank leaves its
    delta unchanged.
    """
    present = [m for m in mods if m is not None]
    if not present:
        return None
    r = max(m.rank for m in present)
    ref = present[0]
    zero_a = ref.A.new_zeros(ref.A.shape[1], r)  # [in, r]
    zero_b = ref.B.new_zeros(r, ref.B.shape[0])  # [r, out]
    at, bt = [zero_a], [zero_b]
    for m in mods:
        if m is None:
            at.append(zero_a)
            bt.append(zero_b)
        elif m.rank == r:
            at.append(m.A.T)
            bt.append(m.B.T)
        else:
            at.append(nn.functional.pad(m.A.T, (0, r - m.rank)))
            bt.append(nn.functional.pad(m.B.T, (0, 0, 0, r - m.rank)))
    return torch.stack(at).to(device), torch.stack(bt).to(device)


class LoraBatch:
    """Row ``i`` uses ``adapters[slots[i] - 1]``; slot 0 means no LoRA for that row.

    >>> b = LoraBatch([], torch.zeros(3, dtype=torch.long))
    >>> b.delta("any.module", torch.zeros(3, 4, 8)) is None
    True
    """

    def __init__(self, adapters: list[LoraWeights], slots: torch.Tensor,
                 cache: LoraStacks | None = None):
        self.adapters = adapters
        self.slots = slots  # [rows] long, on the CPU
        self._stacks = (LORA_STACKS if cache is None else cache).stacks_for(tuple(adapters)) if adapters else {}
        self._stack_lock = threading.Lock()
        lora_rows = torch.nonzero(slots > 0).flatten()
        # None = every row has a LoRA (the common case: no subset to gather or scatter).
        self._rows = None if lora_rows.numel() == slots.numel() else lora_rows
        self._on: dict = {}  # (device, fold) -> (slots of the LoRA rows, their row indices)

    def _device_index(self, device, fold: int = 1):
        """Slots of the rows that have a LoRA (and their indices, None = all rows), for a
        module whose input has ``fold`` consecutive entries per batch row."""
        key = (device, fold)
        if key not in self._on:
            all_slots = self.slots if fold == 1 else self.slots.repeat_interleave(fold)
            rows = None if self._rows is None else torch.nonzero(all_slots > 0).flatten()
            slots = all_slots if rows is None else all_slots[rows]
            self._on[key] = (slots.to(device), None if rows is None else rows.to(device))
        return self._on[key]

    def _fold(self, name: str, x: torch.Tensor) -> int:
        n, rows = x.shape[0], self.slots.numel()
        if rows == 0 or n % rows:
            raise RuntimeError(f"LoRA module {name!r} sees {n} entries for a batch of {rows} rows; "
                               "a model may only fold extra entries per row into dim 0, row-major")
        return n // rows

    def _factors(self, name: str, device):
        with self._stack_lock:  # the stack dict is shared with other batches of this set
            if name not in self._stacks:
                self._stacks[name] = _stack([a.modules.get(name) for a in self.adapters], device)
            return self._stacks[name]

    def delta(self, name: str, x: torch.Tensor, conv: bool = False) -> torch.Tensor | None:
        """The LoRA delta for the module ``name`` on its input ``x``, or None if no row adapts it."""
        f = self._factors(name, x.device)
        if f is None:
            return None
        shape = list(x.shape)
        shape[1 if conv else -1] = f[1].shape[-1]  # Bt: [slots, r, out]
        return self.apply(name, x, x.new_zeros(shape), conv)

    def apply(self, name: str, x: torch.Tensor, out: torch.Tensor, conv: bool = False,
              module: nn.Module | None = None) -> torch.Tensor:
        """Add each LoRA row's delta to the module output ``out`` (in place where it can).

        ``module``: the Conv2d itself when it is not a plain 1x1 (its kernel, stride,
        padding and dilation say how to unfold ``x``)."""
        f = self._factors(name, x.device)
        if f is None:
            return out
        slots, rows = self._device_index(x.device, self._fold(name, x))
        at, bt = f[0][slots].to(x.dtype), f[1][slots].to(x.dtype)  # [n, in, r], [n, r, out]
        xs = x if rows is None else x[rows]
        if module is not None:  # k x k conv: [n, c*kh*kw, L] patches, then the 1x1 maths
            cols = nn.functional.unfold(xs, module.kernel_size, dilation=module.dilation,
                                        padding=module.padding, stride=module.stride)
            u = torch.bmm(at.transpose(1, 2), cols)  # [n, r, c*kh*kw] @ [n, c*kh*kw, L] -> [n, r, L]
            d = torch.bmm(bt.transpose(1, 2), u).view(u.shape[0], -1, *out.shape[2:])  # [n, out, oh, ow]
            return out.add_(d) if rows is None else out.index_add_(0, rows, d)
        if conv:  # a 1x1 convolution is the same maths over channels, kept channels-first:
            n, c, h, w = xs.shape  # [n, c, h, w] -> [n, c, hw]: a view, no transposed copy
            x3 = xs.reshape(n, c, h * w)
            u = torch.bmm(at.transpose(1, 2), x3)  # [n, r, in] @ [n, in, hw] -> [n, r, hw]
            b = bt.transpose(1, 2)  # [n, out, r] (a strided view; BLAS reads it transposed)
            if rows is None and out.is_contiguous():
                out.view(n, -1, h * w).baddbmm_(b, u)  # [n, out, hw] += B @ u, in place
                return out
            d = torch.bmm(b, u).view(n, -1, h, w)  # [n, out, h, w]
            return out.add_(d) if rows is None else out.index_add_(0, rows, d)
        x3 = xs.reshape(xs.shape[0], -1, xs.shape[-1])  # [n, tokens, in]
        if rows is None:
            out = out.contiguous()  # a no-op for Linear outputs; the view below must share memory
            o3 = out.view(out.shape[0], -1, out.shape[-1])  # [rows, tokens, out]
            o3.baddbmm_(torch.bmm(x3, at), bt)
            return out
        d = torch.bmm(torch.bmm(x3, at), bt)  # [n, tokens, out]
        return out.index_add_(0, rows, d.reshape(-1, *out.shape[1:]))


@contextmanager
def use_lora_batch(batch: LoraBatch | None):
    """Make ``batch`` the LoRA selection for forwards in this thread; always restored."""
    token = _ACTIVE.set(batch)
    try:
        yield batch
    finally:
        _ACTIVE.reset(token)


def _plain_1x1(mod: nn.Conv2d) -> bool:
    return (mod.kernel_size == (1, 1) and mod.stride == (1, 1) and mod.padding == (0, 0)
            and mod.dilation == (1, 1))


def _hook_for(name: str, conv: bool, kxk: bool):
    def hook(module, inputs, output):
        batch = _ACTIVE.get()
        if batch is None:
            return None
        return batch.apply(name, inputs[0], output, conv, module if kxk else None)
    return hook


def ensure_hooked(model: nn.Module, names) -> None:
    """Install the per-row LoRA hook on each named module once (idempotent)."""
    modules = dict(model.named_modules())
    for name in names:
        mod = modules[name]
        if not getattr(mod, "_taskswap_lora_hooked", False):
            conv = isinstance(mod, nn.Conv2d)
            mod.register_forward_hook(_hook_for(name, conv, conv and not _plain_1x1(mod)))
            mod._taskswap_lora_hooked = True


# ---- one adapter for the whole pass: merged weights ---------------------------------------
class MergedCache(IdentityCache[dict]):
    """The merged weights (``W + B @ A``) of the last few single-adapter passes.

    One entry costs a copy of every weight the adapter touches, so it stays small.
    """

    def __init__(self, size: int = 2):
        super().__init__(size)

    def merged(self, model: nn.Module, lora: LoraWeights) -> dict[str, torch.Tensor]:
        return self.get((model, lora), lambda: _merge(model, lora))


MERGED = MergedCache()


def _merge(model: nn.Module, lora: LoraWeights) -> dict[str, torch.Tensor]:
    modules = dict(model.named_modules())
    merged = {}
    with torch.inference_mode():
        for name, m in lora.modules.items():
            w = modules[name].weight  # [out, in] or [out, in, kh, kw]
            delta = m.B.to(w.device, torch.float32) @ m.A.to(w.device, torch.float32)  # [out, in*kh*kw]
            merged[name] = (w.float() + delta.reshape(w.shape)).to(w.dtype)  # fp32 sum, fp16 safe
    return merged


@contextmanager
def merged_lora(model: nn.Module, lora: LoraWeights, cache: MergedCache | None = None):
    """Serve one adapter on every row with its merged weights; the originals come back after.

    The caller holds the backbone's lock, so no other forward sees the swapped weights.
    The original parameter objects are put back in ``finally`` (never ``W - B @ A``, which
    would drift), so an exception mid-forward leaves the backbone exactly as it was.
    """
    merged = (MERGED if cache is None else cache).merged(model, lora)
    modules = dict(model.named_modules())
    saved: list[tuple[nn.Module, nn.Parameter]] = []
    try:
        for name, w in merged.items():
            mod = modules[name]
            saved.append((mod, mod.weight))
            mod.weight = nn.Parameter(w, requires_grad=False)  # nn.Module re-registers it
        yield
    finally:
        for mod, original in saved:
            mod.weight = original
