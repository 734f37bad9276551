"""A request cut into slices of bounded cost, and the slices' answers put back together.

A slice is the same :class:`~adapters.runtime.PreparedRequest` (same pinned adapter
versions, rollout roles and shadows, the same ``timings`` dict) over a contiguous run of its
inputs whose estimated cost (:mod:`adapters.cost`) stays within a budget; an input costlier
than the budget is a slice of its own. The batch worker runs slices like requests, so a
heavy request is interleaved with everyone else's (:mod:`adapters.fair_queue`) and only a
slice's activations are alive at a time; what a request keeps between its slices is their
answers (per-row label scores, values or tags, and embeddings if asked): outputs, never
activations.

>>> cut([5.0, 5.0, 5.0, 20.0, 1.0], budget=10.0)
[range(0, 2), range(2, 3), range(3, 4), range(4, 5)]
"""

from __future__ import annotations

from dataclasses import replace

import torch

from adapters.runtime import PreparedRequest, Results, ShadowResult, TaskResult


def cut(costs: list[float], budget: float) -> list[range]:
    """Contiguous runs of ``costs`` each summing to at most ``budget`` (a single item may
    exceed it); greedy, in order."""
    if budget <= 0:
        raise ValueError(f"budget {budget} must be > 0")
    out: list[range] = []
    start, acc = 0, 0.0
    for i, c in enumerate(costs):
        if i > start and acc + c > budget:
            out.append(range(start, i))
            start, acc = i, 0.0
        acc += c
    if start < len(costs):
        out.append(range(start, len(costs)))
    return out


def slice_request(req: PreparedRequest, parts: list[range]) -> list[PreparedRequest]:
    """``req`` restricted to each run of inputs in ``parts`` (``[req]`` for one part)."""
    if len(parts) == 1:
        return [req]
    out = []
    for p in parts:
        windows = None if req.windows is None else req.windows[p.start:p.stop]
        extra = 0 if windows is None else sum(windows) - len(windows)
        # the same timings dict: the runtime stamps the request's first start and last finish
        out.append(replace(req, inputs=req.inputs[p.start:p.stop], windows=windows,
                           extra_windows=extra, timings=req.timings))
    return out


def merge(parts: list[Results]) -> Results:
    """One request's :class:`Results` from its slices' results, in input order."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    tasks = [_merge_task([p[i] for p in parts]) for i in range(len(first))]
    emb = None if first.embeddings is None else torch.cat([p.embeddings for p in parts])  # [inputs, hidden]
    tokens = None if first.tokens is None else sum(p.tokens for p in parts)
    return Results(tasks, emb, tokens)


def _merge_task(results: list[TaskResult]) -> TaskResult:
    r = results[0]
    shadow = None
    if r.shadow is not None:
        shadows = [x.shadow for x in results]
        shadow = ShadowResult(_merge_task([s.result for s in shadows]),
                              sum(s.added_seconds for s in shadows),
                              sum(s.extra_trunk_rows for s in shadows))
    return replace(r, rows=[row for x in results for row in x.rows], shadow=shadow)
