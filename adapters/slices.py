"""A request cut into slices of bounded cost, and the slices' answers put back together.

A slice is the same :class:`~adapters.runtime.PreparedRequest` (same pinned adapter
versions, rollout roles and shadows, the same ``timings`` dict) over a contiguous run of its
inputs whose estimated cost (:mod:`adapters.cost`) stays within a budget; an input costlier
than the budget is a slice of its own. The batch worker runs slices like requests, so a
heavy request is interleaved with everyone else's (:mod:`adapters.fair_queue`) and only a
slice's activations are alive at a time; what a request keeps between its slices is their
answers (per-row label scores, values or tags, and embeddings if asked): outputs, never
activations.

One input costlier than the budget is cut too, where its cost says it may be
(:attr:`adapters.cost.Cost.units`: an audio clip's model windows, a long text's token
windows read by per-token tasks only): into parts of whole windows, each a slice of one
:class:`~adapters.backbones.preprocess.TextPart` or
:class:`~adapters.backbones.audio_preprocess.AudioPart` input (:class:`Parts`). A part's slice
keeps its rows' features (:class:`~adapters.runtime.PartFeatures`: pooled vectors and
per-token runs, no activations); the last one done joins them (:mod:`adapters.part_features`)
and the heads run once on the input's whole features, so the answer equals the unsplit one.

>>> cut([5.0, 5.0, 5.0, 20.0, 1.0], budget=10.0)
[range(0, 2), range(2, 3), range(3, 4), range(4, 5)]
>>> cut([5.0, 40.0, 1.0], budget=10.0, units=[1, 8, 1])
[range(0, 1), Parts(index=1, per_part=2, unit_cost=5.0), range(2, 3)]
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from adapters.backbones.preprocess import TextPart
from adapters.part_features import merge_parts
from adapters.runtime import PartFeatures, PreparedRequest, Results, ShadowResult, TaskResult


@dataclass(frozen=True)
class Parts:
    """Input ``index`` cut into parts of at most ``per_part`` windows, each costing
    ``unit_cost`` per window."""

    index: int
    per_part: int
    unit_cost: float


def cut(costs: list[float], budget: float, units: list[int] | tuple = ()) -> list:
    """Contiguous runs of ``costs`` each summing to at most ``budget``, greedy, in order; an
    input costlier than ``budget`` is a run of its own, or, where ``units[i] > 1`` says it
    may be cut into that many windows of equal cost, :class:`Parts` of it within ``budget``."""
    if budget <= 0:
        raise ValueError(f"budget {budget} must be > 0")
    out: list = []
    start, acc = 0, 0.0
    for i, c in enumerate(costs):
        n = units[i] if i < len(units) else 1
        if c > budget and n > 1:
            if i > start:
                out.append(range(start, i))
            out.append(Parts(i, max(1, int(budget // (c / n))), c / n))
            start, acc = i + 1, 0.0
            continue
        if i > start and acc + c > budget:
            out.append(range(start, i))
            start, acc = i, 0.0
        acc += c
    if start < len(costs):
        out.append(range(start, len(costs)))
    return out


def slice_request(req: PreparedRequest, parts: list) -> list[PreparedRequest]:
    """``req`` restricted to each piece of ``parts`` (``[req]`` for one run of every input)."""
    return [s for s, _ in slice_with_costs(req, parts)]


def slice_with_costs(req: PreparedRequest, parts: list, costs: list[float] | None = None) -> list[tuple]:
    """``(slice, its cost)`` for each piece of ``parts`` (:func:`cut`): ``req`` over a run of
    inputs, or over some windows of one input (a partial request per part of it). Without
    ``costs`` (per input) a slice's cost is 0. An input that turns out not to be cuttable
    (an audio clip shorter once trimmed) is one slice."""
    costs = list(costs) if costs is not None else [0.0] * len(req.inputs)
    if len(parts) == 1 and isinstance(parts[0], range):
        return [(req, sum(costs))]
    out = []
    for p in parts:
        if isinstance(p, Parts):
            out.extend(_input_parts(req, p, costs[p.index]))
            continue
        windows = None if req.windows is None else req.windows[p.start:p.stop]
        extra = 0 if windows is None else sum(windows) - len(windows)
        # the same timings dict: the runtime stamps the request's first start and last finish
        out.append((replace(req, inputs=req.inputs[p.start:p.stop], windows=windows,
                            extra_windows=extra, timings=req.timings), sum(costs[p.start:p.stop])))
    return out


def _input_parts(req: PreparedRequest, p: Parts, cost: float) -> list[tuple]:
    """Partial requests over input ``p.index``, ``p.per_part`` windows each."""
    x = req.inputs[p.index]
    pieces = _pieces(req, x, p)
    if pieces is None:
        windows = None if req.windows is None else [req.windows[p.index]]
        extra = 0 if windows is None else windows[0] - 1
        return [(replace(req, inputs=[x], windows=windows, extra_windows=extra, timings=req.timings), cost)]
    return [(replace(req, inputs=[piece], windows=None if req.windows is None else [piece.units],
                     extra_windows=0 if req.windows is None else piece.units - 1, partial=True,
                     timings=req.timings), p.unit_cost * piece.units)
            for piece in pieces]


def _pieces(req: PreparedRequest, x, p: Parts) -> list | None:
    """The part inputs of ``x`` (None: it stays whole)."""
    bb = req.backbone
    if isinstance(x, str):
        total = req.windows[p.index] if req.windows is not None else 1
        if total <= p.per_part:
            return None
        return [TextPart(x, lo, min(total, lo + p.per_part), total) for lo in range(0, total, p.per_part)]
    parts = getattr(bb.preprocessor, "parts", None)
    return None if parts is None else parts(bb.model, x, p.per_part)


def merge(parts: list, answer=None) -> Results:
    """One request's :class:`Results` from its slices' results, in input order; the
    :class:`PartFeatures` of one input's parts are joined and answered by ``answer(request,
    features)`` first (:meth:`adapters.runtime.Runtime.answer`)."""
    parts = _answer_parts(parts, answer)
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    tasks = [_merge_task([p[i] for p in parts]) for i in range(len(first))]
    emb = None if first.embeddings is None else torch.cat([p.embeddings for p in parts])  # [inputs, hidden]
    tokens = None if first.tokens is None else sum(p.tokens for p in parts)
    return Results(tasks, emb, tokens)


_SETTLED = object()
"""Where a part's features were, once its input's parts were answered (:func:`settle`)."""


def settle(parts: list, index: int, answer) -> None:
    """If slot ``index`` of ``parts`` (a request's slice results so far, None where still
    running) completed every part of its input, replace that run by the input's answers
    (``answer(request, features)``), in place: its features are let go at once, not held
    until the request's last slice."""
    if not isinstance(parts[index], PartFeatures):
        return
    start = index
    while parts[start].request.inputs[0].lo > 0:
        start -= 1
        if not isinstance(parts[start], PartFeatures):
            return  # an earlier part still runs
    end = index
    while parts[end].request.inputs[0].hi < parts[end].request.inputs[0].total:
        end += 1
        if not isinstance(parts[end], PartFeatures):
            return  # a later part still runs
    parts[start] = answer(*merge_parts(parts[start:end + 1]))
    for k in range(start + 1, end + 1):
        parts[k] = _SETTLED


def _answer_parts(parts: list, answer) -> list[Results]:
    """``parts`` with each run of one input's :class:`PartFeatures` replaced by its answers."""
    out, run = [], []
    for p in [p for p in parts if p is not _SETTLED] + [None]:
        if isinstance(p, PartFeatures) and (not run or p.request.inputs[0].lo > run[-1].request.inputs[0].lo):
            run.append(p)
            continue
        if run:
            if answer is None:
                raise ValueError("parts of one input need the runtime's answer to be merged")
            out.append(answer(*merge_parts(run)))
            run = []
        if isinstance(p, PartFeatures):
            run.append(p)
        elif p is not None:
            out.append(p)
    return out


def _merge_task(results: list[TaskResult]) -> TaskResult:
    r = results[0]
    shadow = None
    if r.shadow is not None:
        shadows = [x.shadow for x in results]
        shadow = ShadowResult(_merge_task([s.result for s in shadows]),
                              sum(s.added_seconds for s in shadows),
                              sum(s.extra_trunk_rows for s in shadows))
    return replace(r, rows=[row for x in results for row in x.rows], shadow=shadow)
