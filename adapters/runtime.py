"""The batched forward: many requests, many tasks, one backbone pass per backbone.

``prepare`` (in the request's thread) checks the tasks and inputs and pins the
adapter versions; ``run`` (in the batch worker) executes a list of prepared requests:

1. group requests by backbone and preprocess all their inputs once;
2. build rows: one plain row per input for the head tasks of its request, plus one
   row per (input, LoRA task), each row carrying its LoRA slot;
3. one trunk pass over all rows, LoRA deltas selected per row (:mod:`adapters.lora.batch`);
   a pass whose rows all use one LoRA adapter runs on its merged weights instead;
4. every task's head on its rows, heads of the same shape stacked into one batched
   matmul per layer (:mod:`adapters.heads_batched`), then softmax (single label) or
   sigmoid (multi label).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from adapters.backbones.base import Backbone
from adapters.errors import InvalidInput
from adapters.heads_batched import HeadCall, run_heads
from adapters.loading import LoadedAdapter
from adapters.lora.batch import LoraBatch, merged_lora, use_lora_batch
from adapters.registry import Registry


@dataclass
class Prepared:
    """One request, validated, with its adapters pinned (fixed versions for this request)."""

    backbone: Backbone
    inputs: list
    adapters: list[LoadedAdapter]

    @property
    def rows(self) -> int:
        """Trunk rows this request costs: one per input for heads, one per input per LoRA."""
        heads = any(a.kind == "head" for a in self.adapters)
        return len(self.inputs) * (int(heads) + sum(a.kind == "lora" for a in self.adapters))


@dataclass
class RowResult:
    label: str
    score: float
    scores: dict[str, float]
    labels: list[str] | None = None  # multi-label: every label over the threshold


@dataclass
class TaskResult:
    task: str
    version: str
    kind: str
    task_type: str
    rows: list[RowResult] = field(default_factory=list)


class Runtime:
    """Turns prepared requests into per-task scores.

    >>> import tempfile
    >>> from adapters.store import open_store
    >>> rt = Runtime(Registry(open_store(tempfile.mkdtemp()), {}))
    >>> rt.run([])
    []
    """

    def __init__(self, registry: Registry, max_forward_rows: int = 256):
        self.registry = registry
        self.max_forward_rows = max_forward_rows

    def prepare(self, tasks: list[str], inputs: list, modality: str) -> Prepared:
        """Resolve and pin ``tasks`` for ``inputs`` of ``modality`` ('text' | 'image')."""
        if not tasks:
            raise InvalidInput("name at least one task")
        if len(set(tasks)) != len(tasks):
            raise InvalidInput(f"tasks {tasks} name a task twice")
        if not inputs:
            raise InvalidInput("inputs are empty: send at least one text or image")
        adapters = [self.registry.resolve(t) for t in tasks]
        backbones = {a.backbone.name for a in adapters}
        if len(backbones) > 1:
            raise InvalidInput(f"tasks {tasks} run on different backbones {sorted(backbones)}; "
                               "send one request per backbone")
        bb = adapters[0].backbone
        if bb.modality != modality:
            need = "texts" if bb.modality == "text" else "images"
            raise InvalidInput(f"task {tasks[0]!r} takes {need} (backbone {bb.name!r} is a "
                               f"{bb.modality} model), but {modality} inputs were sent")
        return Prepared(bb, list(inputs), adapters)

    def run(self, requests: list[Prepared]) -> list[list[TaskResult]]:
        """Results per request, per task in the order the request named them."""
        out: list[list[TaskResult] | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(r.backbone.name, []).append(i)
        for idx in groups.values():
            for i, res in zip(idx, self._run_group([requests[i] for i in idx])):
                out[i] = res
        return out  # type: ignore[return-value]

    def _run_group(self, reqs: list[Prepared]) -> list[list[TaskResult]]:
        bb = reqs[0].backbone
        inputs, row_input, row_lora = [], [], []  # per trunk row: its input, its LoRA (or None)
        plan = []  # per request: list of (adapter, row indices)
        for r in reqs:
            base = len(inputs)
            inputs.extend(r.inputs)
            n = len(r.inputs)
            head_rows = None
            tasks = []
            for a in r.adapters:
                if a.kind == "head" and head_rows is not None:
                    tasks.append((a, head_rows))  # several head tasks share one trunk row
                    continue
                rows = list(range(len(row_input), len(row_input) + n))
                row_input.extend(range(base, base + n))
                row_lora.extend([a.lora if a.kind == "lora" else None] * n)
                if a.kind == "head":
                    head_rows = rows
                tasks.append((a, rows))
            plan.append(tasks)
        lora_list, row_slot = _slots(row_lora)
        poolings = sorted({a.head.spec.pooling for r in reqs for a in r.adapters})
        feats = self._trunk(bb, inputs, row_input, row_slot, lora_list, poolings)
        pairs = [(a, rows) for tasks in plan for a, rows in tasks]
        probs = iter(run_heads([HeadCall(a.head, a.manifest.task_type == "multi_label", rows)
                                for a, rows in pairs], feats))
        return [[_result(a, next(probs)) for a, _ in tasks] for tasks in plan]

    def _trunk(self, bb: Backbone, inputs: list, row_input: list[int], row_slot: list[int],
               lora_list: list, poolings: list[str]) -> dict[str, torch.Tensor]:
        """Pooled features for every row: ``{pooling: [rows, hidden]}`` on the backbone's device."""
        enc = bb.preprocess(inputs)  # each input once, even if several LoRA rows reuse it
        parts: dict[str, list[torch.Tensor]] = {p: [] for p in poolings}
        ri = torch.tensor(row_input, dtype=torch.long)
        rs = torch.tensor(row_slot, dtype=torch.long)
        for start in range(0, len(row_input), self.max_forward_rows):
            sl = slice(start, start + self.max_forward_rows)
            batch = {k: v[ri[sl]] for k, v in enc.items()}
            used = set(row_slot[sl])
            if used == {0}:  # head rows only: the plain trunk
                merged, lb = None, None
            elif len(used) == 1:  # one LoRA on every row: its merged weights cost nothing extra
                merged, lb = lora_list[used.pop() - 1], None
            else:
                merged, lb = None, LoraBatch(lora_list, rs[sl])
            with bb.lock, use_lora_batch(lb), _maybe_merged(bb, merged):
                f = bb.forward(batch)
                for p in poolings:  # computed while the LoRA context is still set
                    parts[p].append(f.get(p))
        return {p: torch.cat(v) for p, v in parts.items()}


def _slots(row_lora: list) -> tuple[list, list[int]]:
    """Number the distinct LoRA adapters of a batch 1..n (0 = none) in a canonical order.

    The order depends only on the *set* of adapters (by identity), so a batch over the same
    adapters as a recent one finds its factor stacks in :data:`adapters.lora.batch.STACKS`.
    """
    distinct = sorted({id(w): w for w in row_lora if w is not None}.items())
    slot_of = {k: i for i, (k, _) in enumerate(distinct, start=1)}
    return [w for _, w in distinct], [0 if w is None else slot_of[id(w)] for w in row_lora]


def _maybe_merged(bb: Backbone, lora):
    return merged_lora(bb.model, lora) if lora is not None else contextlib.nullcontext()


def _result(a: LoadedAdapter, probs: torch.Tensor) -> TaskResult:
    """Per-row labels and scores of one task from its ``[rows, labels]`` probabilities (CPU)."""
    multi = a.manifest.task_type == "multi_label"
    labels = a.labels
    res = TaskResult(a.name, a.version, a.kind, a.manifest.task_type)
    for p in probs.tolist():
        best = max(range(len(p)), key=p.__getitem__)
        res.rows.append(RowResult(
            label=labels[best], score=p[best], scores=dict(zip(labels, p)),
            labels=[lab for lab, v in zip(labels, p) if v >= 0.5] if multi else None))
    return res
