"""The batched forward: many requests, many tasks, one backbone pass per backbone.

``prepare`` (in the request's thread) checks the tasks and inputs and pins the
adapter versions; ``run`` (in the batch worker) executes a list of prepared requests:

1. group requests by backbone and preprocess all their inputs once;
2. build rows, as each adapter's kind says: one plain row per input shared by the
   request's tasks that read the frozen trunk (heads), plus one row per (input, task) for
   kinds that change the trunk (LoRA), each row carrying its kind's trunk state; tasks of
   a request whose states are equal (``RowState.key``: riding on one shared adaptation
   version) share one adapted row per input;
3. run the rows through their kind's trunk pass (:mod:`adapters.kinds.trunk`: plain,
   per-row LoRA deltas, or one adapter's merged weights) in sub-batches — text rows sorted
   by length and cut under a budget of padded tokens (:mod:`adapters.length_batches`), so
   a batch does not pay for padding every row to its longest — keeping the features the
   batch's task types need (pooled per pooling, per-token when asked, a vision backbone's
   spatial maps at the strides asked for: never computed otherwise);
4. every task type scores its tasks' heads on their rows (same-shaped heads stacked into
   one batched matmul per layer, :mod:`adapters.heads_batched`) and shapes the answers.

A request may also ask for the pooled features themselves (:class:`EmbedSpec`): they are
read off the same plain trunk rows its head tasks use, so an embedding beside tasks costs
no extra trunk pass, and an embeddings-only request is one more row set in the shared batch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Protocol

import torch

from adapters.backbones.base import Backbone, map_feature, map_strides
from adapters.embed_spec import DEFAULT_TOKEN_BUDGET, EmbedSpec  # noqa: F401  (re-exported)
from adapters.errors import InvalidInput, NotFound, TaskswapError
from adapters.trunk_rows import own_row_adapters
from adapters.kinds.base import Pause
from adapters.kinds.pausing import let_pause
from adapters.kinds.trunk import COMPOSED_TRUNK
from adapters.length_batches import fixed_sub_batches, plan_sub_batches
from adapters.loading import LoadedAdapter
from adapters.tasks import BatchFeatures, RowResult, TokenFeatures

log = logging.getLogger("taskswap.runtime")


_NEED_NAMES = {"text": "texts", "image": "images", "audio": "audio clips",
               "generation": "prompts (it generates text: use /v1/completions, /v1/chat/completions, "
                             "/generate or /predict)"}


# Plain rows (no adapter state) run in the pass every kind names (adapters.kinds.trunk).
PLAIN_PASS = COMPOSED_TRUNK


@dataclass
class PreparedRequest:
    """One request, validated, with its adapters pinned (fixed versions for this request).

    ``shadows[i]``: a candidate version that also scores task ``i``'s rows (never answers);
    ``roles[i]``: ``"active"`` or ``"canary"`` (which version of task ``i`` answers).
    ``timings``: ``time.time_ns()`` stamps the batcher and runtime fill in (``submitted``,
    ``started``, ``trunk_done``, ``heads_done``) for tracing.
    """

    backbone: Backbone
    inputs: list
    adapters: list[LoadedAdapter]
    embed: EmbedSpec | None = None
    shadows: list[LoadedAdapter | None] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    timings: dict[str, int] = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    """Request options task types read (detection: ``threshold``, ``max_detections``), checked
    against each task's limits by ``prepare``."""
    input_size: int | None = None
    """Square image size this request's trunk rows run at (None: the backbone's own); set on
    the per-size parts :meth:`Runtime.run` splits a request into."""
    extra_windows: int = 0
    """Windows past the first over all inputs (texts longer than ``max_length`` tokens): each
    trunk row that per-token tasks read runs once more per extra window (set by ``prepare``)."""
    windows: list[int] | None = None
    """Token windows per input when per-token tasks read them (set by ``prepare``), so a
    slice of the request counts its own ``extra_windows``."""
    partial: bool = False
    """A slice over some windows of one input (:mod:`adapters.slices`): :meth:`Runtime.run`
    answers its rows' features (:class:`PartFeatures`), which :meth:`Runtime.answer` turns
    into the input's answers once every part has run."""

    def scorers(self) -> list[LoadedAdapter]:
        """The adapters that read this request's rows: its tasks and their shadow candidates."""
        return [*self.adapters, *(s for s in self.shadows if s is not None)]

    @property
    def plain_rows(self) -> bool:
        """Whether the request reads the plain frozen trunk: tasks sharing it (shadow
        candidates included), or embeddings."""
        return self.embed is not None or any(a.impl.shares_trunk_row for a in self.scorers())

    @property
    def plain_groups(self) -> int:
        """Plain trunk rows per input: one per distinct input size among the tasks sharing
        the plain trunk (embeddings run at the backbone's own size)."""
        sizes = {_size_of(a) for a in self.scorers() if a.impl.shares_trunk_row}
        if self.embed is not None:
            sizes.add(None)
        return len(sizes)

    @property
    def rows(self) -> int:
        """Trunk rows this request costs: one per input for the tasks sharing the plain
        trunk (heads) and its embeddings together, plus one per input per task with its
        own trunk rows (LoRA); shadow candidates included (a LoRA candidate costs its rows);
        plus, for texts longer than ``max_length`` tokens, one more per extra window on each
        of the rows per-token tasks read. This is what ``max_batch_rows`` and the queue limit count."""
        own = len(own_row_adapters(self.scorers()))
        return len(self.inputs) * (self.plain_groups + own) + self.extra_windows * self.token_row_groups

    @property
    def token_row_groups(self) -> int:
        """Trunk rows per input that per-token tasks read (each runs every window of a long
        text, :meth:`Runtime._trunk`): the shared plain row if a token head reads it, plus
        each token task's own rows (LoRA)."""
        tok = [a for a in self.scorers() if "tokens" in a.task.needs(a.manifest)]
        return int(any(a.impl.shares_trunk_row for a in tok)) + len(own_row_adapters(tok))


@dataclass
class TaskResult:
    task: str
    version: str
    kind: str
    task_type: str
    rows: list[RowResult] = field(default_factory=list)
    role: str = "active"  # or "canary": the candidate answered
    shadow: "ShadowResult | None" = None


@dataclass
class ShadowResult:
    """A shadow candidate's answers for the same rows, and what scoring them cost."""

    result: TaskResult
    added_seconds: float  # this task's share of the candidate's head time (and own trunk rows)
    extra_trunk_rows: int  # trunk rows run only for the candidate (0 for a head on shared rows)


@dataclass
class PartFeatures:
    """What a partial request's slice keeps until its input's other parts have run: its
    rows' features over its windows (pooled ``[rows, hidden]``, per-token runs, no
    activations), merged by :func:`adapters.part_features.merge_parts`."""

    request: PreparedRequest
    features: BatchFeatures


class Results(list):
    """One request's :class:`TaskResult` list, in the order it named its tasks, plus
    ``embeddings`` (``[inputs, hidden]`` float32 on CPU) when it asked for them, and
    ``tokens``: the real tokens the trunk read over its inputs (text backbones; else None),
    counted from the batch's own tokenisation."""

    def __init__(self, results=(), embeddings: torch.Tensor | None = None, tokens: int | None = None):
        super().__init__(results)
        self.embeddings = embeddings
        self.tokens = tokens


class AdapterLookup(Protocol):
    """What the runtime asks about adapters (an :class:`adapters.registry.Registry` is one):
    the version serving a task, an exact stored version, a rollout candidate, and the
    served backbones. The runtime is handed one; it never imports the registry."""

    backbones: dict[str, Backbone]

    def resolve(self, task: str) -> LoadedAdapter: ...

    def resolve_version(self, task: str, version: str) -> LoadedAdapter: ...

    def candidate(self, task: str, version: str) -> LoadedAdapter: ...


class Runtime:
    """Turns prepared requests into per-task answers.

    >>> Runtime(None).run([])  # no lookup: runs prepared requests only
    []
    """

    def __init__(self, lookup: AdapterLookup | None, max_forward_rows: int = 256,
                 token_budget: int | None = DEFAULT_TOKEN_BUDGET):
        self.lookup = lookup
        self.max_forward_rows = max_forward_rows
        # Padded tokens per trunk forward (rows x longest row); None = one padded pass per
        # max_forward_rows rows in arrival order (the behaviour before length-aware batching).
        self.token_budget = token_budget

    @property
    def registry(self) -> AdapterLookup | None:
        """The lookup this runtime was given (callers that built it from a registry read it back)."""
        return self.lookup

    def prepare(self, tasks: list[str], inputs: list, modality: str, embed: EmbedSpec | None = None,
                versions: dict[str, str] | None = None, rollout=None,
                routing_key: str | None = None, options: dict | None = None) -> PreparedRequest:
        """Resolve and pin ``tasks`` for ``inputs`` of ``modality`` ('text' | 'image' | ...).

        ``versions`` pins a task to one stored version (id or unique prefix) instead of its
        active one; ``embed`` also returns the pooled features. With a
        ``rollout`` (anything with ``policy(task)``, e.g. the registry: a task's
        :class:`~adapters.rollout.RolloutPolicy` from its row), a task in canary may be pinned to
        its candidate (sticky per ``routing_key``), and a task in shadow gets its candidate as
        a shadow scorer; a task pinned by ``versions`` is left alone. ``options`` (None values
        ignored) must each be read by some task, within its manifest's limits.
        """
        if not tasks:
            raise InvalidInput("name at least one task")
        if len(set(tasks)) != len(tasks):
            raise InvalidInput(f"tasks {tasks} name a task twice")
        if not inputs:
            raise InvalidInput("inputs are empty: send at least one text or image")
        versions = versions or {}
        adapters = [self.lookup.resolve_version(t, versions[t]) if t in versions
                    else self.lookup.resolve(t) for t in tasks]
        shadows, roles = [None] * len(tasks), ["active"] * len(tasks)
        for i, t in enumerate(tasks):
            policy = rollout.policy(t) if rollout is not None and t not in versions else None
            if policy is None or policy.candidate == adapters[i].version:
                continue
            try:
                cand = self.lookup.candidate(t, policy.candidate)
            except TaskswapError as exc:  # a broken candidate never fails the active path
                log.warning("rollout candidate %s of %s unavailable: %s", policy.candidate[:12], t, exc)
                continue
            if cand.backbone is not adapters[i].backbone:
                continue  # refused when the policy is set; a store edited by hand lands here
            if policy.mode == "shadow":
                shadows[i] = cand
            elif policy.serves_candidate(routing_key):
                adapters[i], roles[i] = cand, "canary"
        backbones = {a.backbone.name for a in adapters}
        if len(backbones) > 1:
            raise InvalidInput(f"tasks {tasks} run on different backbones {sorted(backbones)}; "
                               "send one request per backbone")
        bb = adapters[0].backbone
        if bb.modality != modality:
            need = _NEED_NAMES.get(bb.modality, bb.modality)
            article = "an" if bb.modality[:1] in "aeiou" else "a"  # an image model, a text model
            raise InvalidInput(f"task {tasks[0]!r} takes {need} (backbone {bb.name!r} is {article} "
                               f"{bb.modality} model), but {modality} inputs were sent")
        _check_features(bb, adapters)
        options = _check_options(tasks, adapters, options)
        req = PreparedRequest(bb, list(inputs), adapters, _embed_on(bb, embed), shadows, roles,
                              options=options)
        if req.token_row_groups:  # long texts cost one trunk row per window: count them up front
            req.windows = bb.token_window_counts(req.inputs)
            req.extra_windows = sum(req.windows) - len(req.inputs)
        return req

    def prepare_embed(self, backbone: str, inputs: list, modality: str, embed: EmbedSpec) -> PreparedRequest:
        """An embeddings-only request: the pooled features of ``inputs`` on ``backbone``."""
        bb = self.lookup.backbones.get(backbone)
        if bb is None:
            raise NotFound(f"backbone {backbone!r} is not served here "
                           f"(backbones: {', '.join(sorted(self.lookup.backbones)) or 'none'})")
        if not inputs:
            raise InvalidInput("inputs are empty: send at least one text or image")
        if bb.modality != modality:
            need = _NEED_NAMES.get(bb.modality, bb.modality)
            raise InvalidInput(f"backbone {backbone!r} takes {need}, but {modality} inputs were sent")
        return PreparedRequest(bb, list(inputs), [], _embed_on(bb, embed))

    def run(self, requests: list[PreparedRequest], pause: Pause | None = None) -> list[Results]:
        """Results per request, per task in the order the request named them.

        ``pause``: offered between trunk blocks (the batch worker's preemption: other work
        owed the worker runs there, and this batch resumes; its answers are unchanged).

        Requests are grouped by (backbone, input size): a request whose tasks run at
        different sizes (a detector at 320 px beside a classifier at the backbone's 96) is
        split into one part per size, and each group runs the trunk once for all its parts.
        """
        if any(r.partial for r in requests):
            return self._run_with_parts(requests, pause)
        parts = [(i, idx, part) for i, r in enumerate(requests) for idx, part in _split_by_size(r)]
        groups: dict[tuple, list[int]] = {}
        for k, (_, _, part) in enumerate(parts):
            groups.setdefault((part.backbone.name, part.input_size), []).append(k)
        done: list[Results | None] = [None] * len(parts)
        for ks in groups.values():
            for k, res in zip(ks, self._run_group([parts[k][2] for k in ks], pause)):
                done[k] = res
        out: list[Results] = []
        for i, r in enumerate(requests):
            mine = [(idx, res) for (j, idx, _), res in zip(parts, done) if j == i]
            if len(mine) == 1:
                out.append(mine[0][1])
                continue
            results: list = [None] * len(r.adapters)
            embeddings, tokens = None, None
            for idx, res in mine:
                for t, tr in zip(idx, res):
                    results[t] = tr
                embeddings = res.embeddings if res.embeddings is not None else embeddings
                tokens = res.tokens if res.tokens is not None else tokens
            out.append(Results(results, embeddings, tokens))
        return out

    def _run_with_parts(self, requests: list[PreparedRequest], pause: Pause | None = None) -> list:
        """:meth:`run` for a batch holding parts of inputs: each part's :class:`PartFeatures`
        (one trunk pass per backbone for them), the other requests' results as usual."""
        partial = [k for k, r in enumerate(requests) if r.partial]
        whole = [k for k, r in enumerate(requests) if not r.partial]
        done = dict(zip(whole, self.run([requests[k] for k in whole], pause) if whole else []))
        for bb in dict.fromkeys(requests[k].backbone.name for k in partial):
            mine = [k for k in partial if requests[k].backbone.name == bb]
            done.update(zip(mine, self._run_group([requests[k] for k in mine], pause, features_only=True)))
        return [done[k] for k in range(len(requests))]

    def answer(self, req: PreparedRequest, features: BatchFeatures) -> Results:
        """``req``'s answers on ``features`` its trunk rows already gave (one input's parts,
        merged): the heads, embeddings and shadows of :meth:`run`, without a trunk pass."""
        return self._run_group([req], features=features)[0]

    def _run_group(self, reqs: list[PreparedRequest], pause: Pause | None = None,
                   features: BatchFeatures | None = None, features_only: bool = False) -> list:
        bb = reqs[0].backbone
        started = time.time_ns()
        inputs, row_input, row_state, row_pass = [], [], [], []  # per trunk row
        plan = []  # per request: list of (adapter, row indices)
        plain = []  # per request: its plain trunk rows (shared by head tasks and embeddings)
        shadow_plan = []  # per request: list of (task index, candidate, row indices, extra rows)
        spans = []  # per request: its inputs' (first, end) in the batch's inputs
        for r in reqs:
            r.timings.setdefault("started", started)  # a sliced request: its first slice's start
            base = len(inputs)
            spans.append((base, base + len(r.inputs)))
            inputs.extend(r.inputs)
            n = len(r.inputs)

            def new_rows(state, trunk_pass) -> list[int]:
                rows = list(range(len(row_input), len(row_input) + n))
                row_input.extend(range(base, base + n))
                row_state.extend([state] * n)
                row_pass.extend([trunk_pass] * n)
                return rows

            own: dict[tuple, list[int]] = {}  # trunk state key -> this request's rows of it

            def own_rows(a) -> tuple[list[int], int]:
                """``a``'s rows and how many were added for it: tasks whose states are
                equal (riding on one shared adaptation) read the same rows."""
                state = a.impl.trunk_state(a.weights)
                key = None if state is None else state.key
                if key is not None and key in own:
                    return own[key], 0
                rows = new_rows(state, a.impl.trunk_pass)
                if key is not None:
                    own[key] = rows
                return rows, n

            shared_rows = new_rows(None, PLAIN_PASS) if r.plain_rows else None
            plan.append([(a, shared_rows if a.impl.shares_trunk_row else own_rows(a)[0])
                         for a in r.adapters])
            plain.append(shared_rows)
            # a head candidate reads the plain rows (0 extra); a LoRA candidate gets its own
            # unless an answering task already runs its trunk state
            shadow_plan.append([(i, c, shared_rows, 0) if c.impl.shares_trunk_row
                                else (i, c, *own_rows(c))
                                for i, c in enumerate(r.shadows) if c is not None])
        pairs = [(a, rows) for tasks in plan for a, rows in tasks]
        shadow_pairs = [(c, rows) for entries in shadow_plan for _, c, rows, _ in entries]
        reads = [(a.task.needs(a.manifest), rows) for a, rows in pairs + shadow_pairs]  # once per adapter
        needs = set().union(*(n for n, _ in reads), {r.embed.pooling for r in reqs if r.embed is not None})
        token_rows = {r for n, rows in reads if "tokens" in n for r in rows}
        t0 = time.perf_counter()
        feats = features or self._trunk(bb, inputs, row_input, row_state, row_pass, needs, token_rows,
                                        reqs[0].input_size, pause)
        trunk_s = time.perf_counter() - t0
        if features_only:
            return [PartFeatures(r, _rows_of(feats, row_input, s, e)) for r, (s, e) in zip(reqs, spans)]
        trunk_done = time.time_ns()
        it = iter(_score(pairs, feats))
        counts = feats.input_tokens
        out = [Results([_result(a, next(it), role, r.options)
                        for (a, _), role in zip(tasks, r.roles or ["active"] * len(tasks))],
                       _embeddings(r.embed, feats, rows), None if counts is None else sum(counts[s:e]))
               for r, tasks, rows, (s, e) in zip(reqs, plan, plain, spans)]
        heads_done = time.time_ns()
        if shadow_pairs:
            self._run_shadows(out, shadow_plan, shadow_pairs, feats, trunk_s / max(len(row_input), 1))
        for r in reqs:
            r.timings["trunk_done"], r.timings["heads_done"] = trunk_done, heads_done
        return out

    def _run_shadows(self, out: list, shadow_plan: list, pairs: list, feats: BatchFeatures,
                     trunk_s_per_row: float) -> None:
        """Score the shadow candidates on their rows, apart from the answering heads, so
        the time they add is measured (heads: on rows the trunk already ran)."""
        t0 = time.perf_counter()
        outs = _score(pairs, feats)
        head_s = time.perf_counter() - t0
        total_rows = sum(len(rows) for _, rows in pairs) or 1
        it = iter(outs)
        for k, entries in enumerate(shadow_plan):
            for i, c, rows, extra in entries:
                added = head_s * len(rows) / total_rows + trunk_s_per_row * extra
                out[k][i].shadow = ShadowResult(_result(c, next(it)), added, extra)

    def _trunk(self, bb: Backbone, inputs: list, row_input: list[int], row_state: list,
               row_pass: list, needs: set[str], token_rows: set[int] = frozenset(),
               size: int | None = None, pause: Pause | None = None) -> BatchFeatures:
        """The features ``needs`` asks for, for every row, on the backbone's device.

        A "unit" is one row of one forward: a trunk row reading one preprocessed sequence.
        Each row is one unit on its input (under per-token needs a long text's first window,
        which is the plain truncated encoding); a row in ``token_rows`` whose text is longer
        than ``max_length`` gets one more unit per further window, with the same trunk
        state and pass, and its token features are stitched back into one sequence.
        ``size``: the square image size of every row (None: the backbone's own).

        Each pass's units run in the sub-batches of :meth:`plan` (text: sorted by length,
        under ``token_budget`` padded tokens, columns that are padding on every row of the
        sub-batch dropped); the features are put back in unit order at the end, so a row's
        trunk state and the head rows that read it stay aligned.
        """
        win = bb.token_windows(inputs) if "tokens" in needs else None
        unit_row = list(range(len(row_input)))
        if win is None:
            enc = bb.preprocess(inputs) if size is None else bb.preprocess(inputs, size)
            unit_enc = list(row_input)  # each input once
        else:
            enc = win.batch
            unit_enc = [win.windows[i][0] for i in row_input]
            for r in sorted(token_rows):
                for w in win.windows[row_input[r]][1:]:
                    unit_row.append(r)
                    unit_enc.append(w)
        strides = map_strides(needs)  # spatial maps: asked of the model only when read
        poolings = sorted(needs - {"tokens"} - {map_feature(s) for s in strides})
        parts: dict[str, list[torch.Tensor]] = {p: [] for p in poolings}
        map_parts: dict[int, list[torch.Tensor]] = {s: [] for s in strides}
        hidden: list[torch.Tensor] = []
        ue = torch.tensor(unit_enc, dtype=torch.long)
        mask = enc.get("attention_mask") if "input_ids" in enc else None  # [sequences, seq]: text
        real = None if mask is None else mask.sum(1)  # [sequences]: real tokens of each
        lengths = None if real is None else real[ue].tolist()  # real tokens per unit
        input_tokens = None  # per input: its truncated encoding (a long text's first window)
        if real is not None:
            input_tokens = (real if win is None else real[[w[0] for w in win.windows]]).tolist()
        order: list[int] = []  # units in the order their features are collected

        def collector(keep: torch.Tensor | None):
            def collect(f):
                for p in poolings:  # computed while the pass's changes are still in place
                    parts[p].append(f.get(p))
                for s in strides:
                    map_parts[s].append(f.map(s))  # [sub-batch units, c, h, w]
                if "tokens" in needs:
                    h = f.tokens()  # [sub-batch units, kept seq, hidden]
                    if keep is not None:  # back to the batch's full width, padding as zeros
                        full = h.new_zeros(h.shape[0], mask.shape[1], h.shape[2])
                        full[:, keep.to(h.device)] = h
                        h = full
                    hidden.append(h)
            return collect

        # Units run in their row's kind's pass (heads and LoRA name the same one).
        for p in dict.fromkeys(row_pass):
            mine = [u for u in range(len(unit_row)) if row_pass[unit_row[u]] is p]
            for j, sub in enumerate(self.plan(None if lengths is None else [lengths[u] for u in mine], len(mine))):
                if j:
                    let_pause(pause)  # between chunks nothing is applied: a pause even where blocks cannot
                chunk = [mine[j] for j in sub]
                batch = {k: v[ue[chunk]] for k, v in enc.items()}
                keep = None
                if mask is not None:
                    keep = batch["attention_mask"].any(0)  # [seq]; right or left padding alike
                    if bool(keep.all()):
                        keep = None
                    else:  # input_ids, attention_mask, token_type_ids: [units, seq]
                        batch = {k: v[:, keep] if v.dim() == 2 and v.shape[1] == mask.shape[1] else v
                                 for k, v in batch.items()}
                p.forward(bb, batch, [row_state[unit_row[u]] for u in chunk], collector(keep), strides,
                          pause=pause)
                order.extend(chunk)
        back = None if order == list(range(len(order))) else torch.argsort(torch.tensor(order))
        n = len(row_input)  # units 0..n-1 are the rows themselves
        pooled = {p: _reorder(torch.cat(v), back)[:n] for p, v in parts.items()}
        maps = {s: _reorder(torch.cat(v), back)[:n] for s, v in map_parts.items()}
        tokens = None
        if win is not None:
            tokens = _stitch(_reorder(torch.cat(hidden), back), win, row_input, unit_row, unit_enc)
        return BatchFeatures(pooled, tokens, [inputs[i] for i in row_input], maps, input_tokens)

    def plan(self, lengths: list[int] | None, rows: int) -> list[list[int]]:
        """Row indices per forward: length-sorted under ``token_budget`` padded tokens when
        ``lengths`` are known and a budget is set, else ``max_forward_rows`` in order."""
        if lengths is None or self.token_budget is None:
            return fixed_sub_batches(rows, self.max_forward_rows)
        return plan_sub_batches(lengths, self.token_budget, self.max_forward_rows)


def _size_of(a: LoadedAdapter) -> int | None:
    """The input size ``a``'s rows run at; None when it is the backbone's own."""
    size = a.task.input_size(a.manifest)
    return None if size == a.backbone.preprocessing_settings().get("image_size") else size


def _split_by_size(r: PreparedRequest) -> list[tuple[list[int], PreparedRequest]]:
    """``r`` as parts of one input size each, with the indices of the tasks each part holds;
    embeddings ride with the backbone's own size (a part of their own if no task runs there)."""
    sizes = [_size_of(a) for a in r.adapters]
    if len(set(sizes)) <= 1 and (r.embed is None or sizes[:1] in ([], [None])):
        return [(list(range(len(sizes))), replace(r, input_size=sizes[0] if sizes else None))]
    order = list(dict.fromkeys(sizes + ([None] if r.embed is not None else [])))
    parts = []
    for size in order:
        idx = [i for i, s in enumerate(sizes) if s == size]
        pick = (lambda xs: [xs[i] for i in idx] if xs else [])  # noqa: E731
        parts.append((idx, replace(r, adapters=pick(r.adapters), shadows=pick(r.shadows),
                                   roles=pick(r.roles), input_size=size,
                                   embed=r.embed if size is None else None)))
    return parts


def _check_options(tasks: list[str], adapters: list[LoadedAdapter], options: dict | None) -> dict:
    """The request's options (None values dropped), each read by some task and within the
    limits of every task that reads it; an ``InvalidInput`` naming the problems otherwise."""
    options = {k: v for k, v in (options or {}).items() if v is not None}
    if not options:
        return {}
    readers = set().union(*(a.task.options for a in adapters))
    unused = sorted(set(options) - readers)
    problems = [f"option {k!r} applies to none of tasks {tasks}" for k in unused]
    problems += [p for a in adapters if a.task.options & set(options)
                 for p in a.task.check_options(a.manifest, options)]
    if problems:
        raise InvalidInput("; ".join(problems))
    return options


def _check_features(bb: Backbone, adapters: list[LoadedAdapter]) -> None:
    """Refuse, before the batch, a task reading a feature ``bb`` does not give (a spatial map
    on a text backbone): every other request of the batch would fail with it."""
    for a in adapters:
        missing = sorted(a.task.needs(a.manifest) - set(bb.features))
        if missing:
            raise InvalidInput(f"task {a.name!r} reads {missing}, which backbone {bb.name!r} does "
                               f"not give (it gives {bb.features})")


def _embed_on(bb: Backbone, embed: EmbedSpec | None) -> EmbedSpec | None:
    """``embed`` with its pooling resolved on ``bb`` (and checked)."""
    if embed is None:
        return None
    if embed.pooling is None:
        return replace(embed, pooling=bb.default_pooling)
    if embed.pooling not in bb.available_poolings:
        raise InvalidInput(f"pooling {embed.pooling!r} is not available on backbone {bb.name!r}; "
                           f"use one of {list(bb.available_poolings)}")
    return embed


def _embeddings(embed: EmbedSpec | None, feats: BatchFeatures, rows: list[int] | None) -> torch.Tensor | None:
    """``[inputs, hidden]`` on CPU: the pooled plain-trunk rows the request's heads read."""
    if embed is None:
        return None
    emb = feats.pooled[embed.pooling][rows]
    if embed.normalize:
        emb = torch.nn.functional.normalize(emb, dim=-1)
    return emb.cpu()


def _stitch(h: torch.Tensor, win, row_input: list[int], unit_row: list[int],
            unit_enc: list[int]) -> TokenFeatures:
    """One token sequence per row from per-unit features ``h [units, seq, hidden]``: a row
    with several window units gets :meth:`TokenWindows.layout`, any other row its one window."""
    unit_of = {(r, e): u for u, (r, e) in enumerate(zip(unit_row, unit_enc))}
    many = {r for r in unit_row[len(row_input):]}
    layouts = []
    for r, i in enumerate(row_input):
        if r in many:
            layouts.append([(unit_of[(r, w)], p) for w, p in win.layout(i)])
        elif win.is_part(i):  # one window of a longer text: the tokens it owns
            layouts.append([(r, p) for _, p in win.layout(i)])
        else:
            e = unit_enc[r]
            layouts.append([(r, p) for p in range(int(win.batch["attention_mask"][e].sum()))])
    t = max(len(lay) for lay in layouts)
    units = torch.zeros(len(layouts), t, dtype=torch.long)  # [rows, t]: unit of each token
    pos = torch.zeros(len(layouts), t, dtype=torch.long)  # [rows, t]: its position there
    mask = torch.zeros(len(layouts), t, dtype=torch.long)  # [rows, t]: 1 = a real token
    for r, lay in enumerate(layouts):
        if lay:
            units[r, :len(lay)] = torch.tensor([u for u, _ in lay])
            pos[r, :len(lay)] = torch.tensor([p for _, p in lay])
            mask[r, :len(lay)] = 1
    enc_rows = torch.tensor(unit_enc, dtype=torch.long)[units]  # [rows, t]
    offsets = win.offsets[enc_rows, pos] * mask.unsqueeze(-1)  # [rows, t, 2]
    word_ids = torch.where(mask.bool(), win.word_ids[enc_rows, pos], -1)  # [rows, t]
    hidden = h[units.to(h.device), pos.to(h.device)]  # [rows, t, hidden]
    return TokenFeatures(hidden, mask.to(h.device), offsets, word_ids)


def _rows_of(feats: BatchFeatures, row_input: list[int], start: int, end: int) -> BatchFeatures:
    """``feats`` of the rows reading inputs ``start..end-1`` (one request's), on the CPU."""
    rows = [r for r, i in enumerate(row_input) if start <= i < end]
    idx = torch.tensor(rows, dtype=torch.long)
    tokens = None
    if feats.tokens is not None:
        t = feats.tokens.rows(rows)
        keep = int(t.mask.sum(1).max()) if len(rows) else 0  # drop the batch's wider padding
        tokens = TokenFeatures(t.hidden[:, :keep].cpu(), t.mask[:, :keep].cpu(),
                               None if t.offsets is None else t.offsets[:, :keep],
                               None if t.word_ids is None else t.word_ids[:, :keep])
    return BatchFeatures({p: v[idx.to(v.device)].cpu() for p, v in feats.pooled.items()}, tokens,
                         [feats.inputs[r] for r in rows],
                         {s: v[idx.to(v.device)].cpu() for s, v in feats.maps.items()},
                         None if feats.input_tokens is None else feats.input_tokens[start:end])


def _reorder(t: torch.Tensor, back: torch.Tensor | None) -> torch.Tensor:
    return t if back is None else t[back.to(t.device)]


def _score(pairs: list, feats: BatchFeatures) -> list[torch.Tensor]:
    """Every ``(adapter, rows)``'s head outputs, in order; each task type scores its own
    tasks, batched."""
    by_type: dict[str, list[int]] = {}
    for i, (a, _) in enumerate(pairs):
        by_type.setdefault(a.manifest.task_type, []).append(i)
    outs: list[torch.Tensor | None] = [None] * len(pairs)
    for idx in by_type.values():
        for i, o in zip(idx, pairs[idx[0]][0].task.score([pairs[i] for i in idx], feats)):
            outs[i] = o
    return outs  # type: ignore[return-value]


def score_alone(adapter: LoadedAdapter, feats: BatchFeatures) -> TaskResult:
    """``adapter``'s answers (a kind that reads the plain trunk: a head) on every row of
    ``feats``, through the same task-type scoring as a batch."""
    return _result(adapter, _score([(adapter, list(range(len(feats.inputs))))], feats)[0])


def _result(a: LoadedAdapter, out: torch.Tensor, role: str = "active", options: dict | None = None) -> TaskResult:
    """One task's answers from its ``[rows, outputs]`` head outputs (CPU), shaped by its task
    type under the request's ``options``."""
    return TaskResult(a.name, a.version, a.kind, a.manifest.task_type,
                      a.task.answers(a, out, options or {}), role=role)
