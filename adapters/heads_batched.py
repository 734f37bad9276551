"""Many tasks' heads on one batch of pooled features, without a Python loop per task.

Heads of the same shape (pooling, normalisation, layer widths, activation, output count
and output activation) form a group. A group's rows are laid out per head, padded to the
longest head's row count (``[heads, rows, features]``), and every layer of every head in
the group runs as one batched matmul over stacked weights (``baddbmm``): one block per
layer whether the batch holds 2 tasks or 1,000. The task type's output activation
(softmax, sigmoid or none, :data:`ACTIVATIONS`) runs once per group and
the probabilities leave the device in one transfer per group (one sync on a GPU, not
one per task).

Stacked weights are cached per tuple of heads (small LRU), so a batch over the same
heads as a recent one only gathers feature rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from adapters.heads import Head
from adapters.identity_cache import IdentityCache


ACTIVATIONS = {"softmax": lambda z: torch.softmax(z, dim=-1), "sigmoid": torch.sigmoid,
               "identity": lambda z: z}


@dataclass(frozen=True)
class HeadCall:
    """Apply ``head`` to feature rows ``rows`` (indices into its pooling's feature matrix),
    then ``activation`` (a key of :data:`ACTIVATIONS`; True/False mean sigmoid/softmax)."""

    head: Head
    activation: str | bool
    rows: list[int]

    def __post_init__(self):
        if isinstance(self.activation, bool):
            object.__setattr__(self, "activation", "sigmoid" if self.activation else "softmax")

    @property
    def multi_label(self) -> bool:
        return self.activation == "sigmoid"


class HeadStacks(IdentityCache[list]):
    """LRU of ``[(Wt [heads, in, out], b [heads, 1, out]) per layer]`` keyed by head identities."""

    def __init__(self, size: int = 32):
        super().__init__(size)

    def stacked(self, heads: tuple[Head, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self.get(heads, lambda: _stack_layers(heads))


def _stack_layers(heads: tuple[Head, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    layers = [h.linear_layers() for h in heads]
    with torch.inference_mode():
        return [(torch.stack([ls[j].weight.T for ls in layers]),  # [heads, in, out]
                 torch.stack([ls[j].bias for ls in layers]).unsqueeze(1))  # [heads, 1, out]
                for j in range(len(layers[0]))]


HEAD_STACKS = HeadStacks()


def _shape_key(call: HeadCall) -> tuple:
    s = call.head.spec
    n_labels = call.head.linear_layers()[-1].out_features
    return (s.pooling, s.normalize, tuple(s.hidden), s.activation if s.hidden else None,
            n_labels, call.activation)


def run_heads(calls: list[HeadCall], features: dict[str, torch.Tensor],
              cache: HeadStacks | None = None) -> list[torch.Tensor]:
    """Outputs ``[len(call.rows), n_outputs]`` (float32, CPU) for each call, in order.

    ``features`` maps each pooling to ``[rows, hidden]`` on the heads' device.

    >>> from adapters.format.manifest import HeadSpec
    >>> h = Head(HeadSpec(pooling="mean", input_dim=4), n_labels=3)
    >>> [p.shape for p in run_heads([HeadCall(h, False, [0, 1])], {"mean": torch.zeros(2, 4)})]
    [torch.Size([2, 3])]
    """
    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(calls):
        groups.setdefault(_shape_key(c), []).append(i)
    out: list[torch.Tensor | None] = [None] * len(calls)
    for key, idx in groups.items():
        probs = _run_group([calls[i] for i in idx], features[key[0]], HEAD_STACKS if cache is None else cache)
        for i, p in zip(idx, probs):
            out[i] = p
    return out  # type: ignore[return-value]


def _run_group(calls: list[HeadCall], feats: torch.Tensor, cache: HeadStacks) -> list[torch.Tensor]:
    spec = calls[0].head.spec
    # Rows per distinct head (a task named by several requests in the batch is one head).
    segs: dict[int, tuple[Head, list[int]]] = {}
    where: list[tuple[int, int]] = []  # per call: (id of its head, offset in that head's rows)
    for c in calls:
        head, rows = segs.setdefault(id(c.head), (c.head, []))
        where.append((id(head), len(rows)))
        rows.extend(c.rows)
    x = nn.functional.normalize(feats, dim=-1) if spec.normalize else feats
    # Padding every head to the longest one wastes work when one task dominates the batch:
    # heads far above the average row count run on their own, the rest as one block.
    cap = max(4, 2 * -(-sum(len(r) for _, r in segs.values()) // len(segs)))
    alone = {k for k, (_, rows) in segs.items() if len(rows) > cap or len(segs) == 1}
    block = sorted(k for k in segs if k not in alone)  # sorted: a stable cache key
    logits: dict[int, torch.Tensor] = {}
    with torch.inference_mode():
        for k in alone:
            head, rows = segs[k]
            logits[k] = head.net(x[rows])  # [rows, labels]: plain matmuls
        if len(block) == 1:
            head, rows = segs[block[0]]
            logits[block[0]] = head.net(x[rows])
        elif block:
            stacked = _stacked([segs[k][0] for k in block], [segs[k][1] for k in block], x, cache)
            logits.update(zip(block, stacked))
        keys = list(logits)
        z = torch.cat([logits[k] for k in keys])  # [all rows of the group, labels]
        probs = ACTIVATIONS[calls[0].activation](z).float().cpu()
    start, total = {}, 0
    for k in keys:  # one transfer for the group, then views per call
        start[k] = total
        total += len(segs[k][1])
    return [probs[start[k] + off: start[k] + off + len(c.rows)] for c, (k, off) in zip(calls, where)]


def _stacked(heads: list[Head], seg_rows: list[list[int]], x: torch.Tensor,
             cache: HeadStacks) -> list[torch.Tensor]:
    """Every head's logits on its own rows, all heads in one ``baddbmm`` per layer."""
    longest = max(len(r) for r in seg_rows)
    idx = torch.zeros(len(heads), longest, dtype=torch.long)  # [heads, longest]; pads read row 0
    for i, rows in enumerate(seg_rows):
        idx[i, : len(rows)] = torch.tensor(rows, dtype=torch.long)
    h = x[idx.to(x.device)]  # [heads, longest, in]
    act = heads[0].net[1] if heads[0].spec.hidden else None  # the activation module, if any
    for j, (wt, b) in enumerate(cache.stacked(tuple(heads))):
        if j:
            h = act(h)
        h = torch.baddbmm(b, h, wt)  # [heads, longest, out_j]
    return [h[i, : len(rows)] for i, rows in enumerate(seg_rows)]
