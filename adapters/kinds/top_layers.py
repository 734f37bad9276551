"""``top_layers``: the task's own trained copy of the last *k* blocks of the trunk, plus a head.

Files: ``top_layers.safetensors`` (the blocks' parameters and buffers under the backbone's
own module names, e.g. ``encoder.layer.5.attention.self.query.weight``) and
``head.safetensors``; the manifest names the blocks in ``top_layers.blocks`` (the last k
block indices, ascending). k = every block is full fine-tuning of the blocks (BERT
embeddings and pooler, MobileNet's stem, stay frozen).

Blocks (:class:`adapters.kinds.layouts.Layout`): a BERT-like encoder's ``encoder.layer.{i}``;
a MobileNetV2's inverted-residual ``layer.{i}``, the last one together with the final ``conv_1x1``.
The blocks end at the deepest block the task reads (:meth:`Layout.last_block_read`): the last
block for a pooled or per-token head; for a dense head, the block that makes the deepest map
it reads (a detector on MobileNetV2's stride 8/16 maps: ``layer.11``), so its rows leave the
trunk there for good and no block above runs for them.

Serving shares the trunk below the split. These rows run in the composed trunk pass with
heads and LoRA (:mod:`adapters.kinds.trunk`): this kind's share of a chunk
(:class:`TopLayersRows`) says where its rows leave the frozen trunk, and the pass runs the
chunk piecewise (:mod:`adapters.kinds.piecewise`): the frozen stem and blocks once below
the lowest split, and at a task's split its rows run through that task's blocks, one call
per task. The adapter's tensors are swapped into
the backbone's own block modules for that call (``torch.func.functional_call``, under the
backbone's lock), so a resident copy costs exactly its tensors. Loaded versions are
evictable: they live in the eviction cache (adapters.residency) with LoRA.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from adapters.errors import IncompatibleAdapter, InvalidAdapter
from adapters.format.adapter_dir import write_head_adapter
from adapters.format.safetensors_io import load_tensors
from adapters.kinds.base import AdapterKind, KindBatch, RowState
from adapters.kinds.layouts import LAYOUTS, BertLayout, Layout, MobileNetV2Layout, layout_of
from adapters.kinds.trunk import COMPOSED_TRUNK
from adapters.tasks import task_type

WEIGHTS_FILE = "top_layers.safetensors"


def block_state_names(backbone, block: int) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """``{full tensor name: (shape, dtype)}`` of one block's parameters and buffers."""
    modules = dict(backbone.model.named_modules())
    out = {}
    for name in layout_of(backbone).block_modules(backbone.model)[block]:
        for k, v in modules[name].state_dict().items():
            out[f"{name}.{k}"] = (tuple(v.shape), v.dtype)
    return out


# ---- per-adapter data ---------------------------------------------------------------------
class TopLayersWeights:
    """One adapter's blocks: ``params[b][j]`` is the tensor dict of module ``j`` of block
    ``split + b``, keyed relative to that module (what ``functional_call`` swaps in)."""

    def __init__(self, split: int, params: list[list[dict[str, torch.Tensor]]]):
        self.split = split
        self.params = params

    @property
    def end(self) -> int:
        """The block after this adapter's last one."""
        return self.split + len(self.params)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for blk in self.params for d in blk for t in d.values())

    def to(self, device, dtype) -> "TopLayersWeights":
        def cast(t):
            return t.to(device, dtype) if t.is_floating_point() else t.to(device)
        return TopLayersWeights(self.split, [[{k: cast(t) for k, t in d.items()} for d in blk]
                                             for blk in self.params])

    def run(self, lay: Layout, block_mods: list, model: nn.Module, h: torch.Tensor,
            mask: torch.Tensor | None, tap=None) -> torch.Tensor:
        """``h`` (the frozen trunk's hidden state at the split) through these blocks;
        ``tap(block, t)`` receives each block's hidden state (the model's ``hidden_states``)."""
        for b, (blk, params) in enumerate(zip(block_mods, self.params), start=self.split):
            h = lay.run_block(blk, h, mask, model, params,
                              None if tap is None else (lambda t, b=b: tap(b, t)))
        return h


@dataclass
class _Plan:
    split: int
    blocks: list[int]


def manifest_blocks(m) -> list[int]:
    """The block indices a manifest's ``top_layers.blocks`` names."""
    spec = (m.model_extra or {}).get("top_layers")
    blocks = spec.get("blocks") if isinstance(spec, dict) else None
    if not isinstance(blocks, list) or not blocks or not all(
            isinstance(b, int) and not isinstance(b, bool) for b in blocks):
        raise InvalidAdapter("a top_layers adapter needs top_layers.blocks in adapter.json: "
                             "a non-empty list of block indices, e.g. [4, 5]")
    return blocks


class TopLayersKind(AdapterKind):
    name = "top_layers"
    weight_files = (WEIGHTS_FILE, "head.safetensors")
    evictable = True
    shares_trunk_row = False
    trunk_pass = COMPOSED_TRUNK

    def plan(self, adir, backbone):
        m = adir.manifest
        if m is None:
            raise InvalidAdapter("a top_layers adapter needs an adapter.json")
        lay = layout_of(backbone)
        n = len(lay.block_modules(backbone.model))
        blocks = manifest_blocks(m)
        # the manifest was checked against its task type when read: needs() is defined
        end = lay.last_block_read(backbone.model, backbone, task_type(m.task_type).needs(m)) + 1
        want = list(range(end - len(blocks), end))
        if blocks != want:
            what = (f"the last {len(blocks)} of backbone {backbone.name!r}'s {n} blocks" if end == n else
                    f"the {len(blocks)} blocks up to block {end - 1}, which makes the deepest map this "
                    f"{m.task_type} task reads")
            raise IncompatibleAdapter(f"top_layers.blocks {blocks} must be {what}: {want}")
        header = adir.headers[WEIGHTS_FILE]
        expected = {}
        for b in blocks:
            expected.update(block_state_names(backbone, b))
        problems = []
        for k, (shape, dtype) in expected.items():
            if not dtype.is_floating_point:  # a BatchNorm counter, unused in eval: never stored
                if k in header:
                    problems.append(f"{k} is an integer counter; leave it out (only float tensors load)")
                continue
            if k not in header:
                problems.append(f"{WEIGHTS_FILE} lacks {k}")
                continue
            got_dtype, got = header[k]
            if tuple(got) != shape:
                problems.append(f"{k} has shape {tuple(got)}, backbone has {shape}")
        extra = sorted(set(header) - set(expected))
        if extra:
            problems.append(f"{WEIGHTS_FILE} holds {len(extra)} tensors outside blocks {blocks}, "
                            f"e.g. {extra[:3]}")
        IncompatibleAdapter.collect(problems, "top_layers adapter")
        return _Plan(blocks[0], blocks)

    def check(self, adir, m, backbone, plan) -> None:
        if not m.backbone.fingerprint:
            raise InvalidAdapter("a top_layers adapter must name its backbone's fingerprint: its "
                                 "blocks only make sense on the exact frozen blocks below them")
        # the task type's head: pooled or per-token (m.head), or dense (m.dense)
        task_type(m.task_type).check_head(m, adir.headers["head.safetensors"], backbone)

    def load(self, adir, m, backbone, plan):
        tensors = load_tensors(adir.path / WEIGHTS_FILE)
        mods = layout_of(backbone).block_modules(backbone.model)
        params = []
        for b in plan.blocks:
            blk = []
            for name in mods[b]:
                own = dict(backbone.model.get_submodule(name).state_dict())
                d = {}
                for k, ref in own.items():
                    t = tensors.get(f"{name}.{k}")
                    d[k] = ref.detach().clone().cpu() if t is None else t  # a BatchNorm counter
                blk.append(d)
            params.append(blk)
        return load_tensors(adir.path / "head.safetensors"), TopLayersWeights(plan.split, params)

    def to_device(self, weights, backbone):
        return weights.to(backbone.device, backbone.dtype)

    def nbytes(self, weights) -> int:
        return weights.nbytes

    def trunk_state(self, weights):
        return RowState(self, weights)

    def batch(self, backbone, weights):
        return TopLayersRows(weights)


# ---- its rows in a chunk --------------------------------------------------------------------
class TopLayersRows(KindBatch):
    """The top-layers rows of one chunk: each task's rows leave the frozen trunk at its split
    and run its own blocks (one call per task); below the split they change nothing."""

    def __init__(self, weights: list):
        self.weights = weights  # per chunk row: TopLayersWeights, or None (another kind / plain)

    def exits(self):
        tasks: dict[int, tuple[TopLayersWeights, list[int]]] = {}
        for i, w in enumerate(self.weights):
            if w is not None:
                tasks.setdefault(id(w), (w, []))[1].append(i)
        return [(w.split, rows, w.run, w.end) for w, rows in tasks.values()]


# ---- writing ------------------------------------------------------------------------------
def write_top_layers_adapter(path, manifest, blocks_state: dict[str, torch.Tensor],
                             head_state: dict[str, torch.Tensor], card: str | None = None):
    """Write a top-layers adapter directory: manifest (with ``top_layers.blocks``),
    ``top_layers.safetensors`` (full backbone tensor names), ``head.safetensors``, card."""
    manifest_blocks(manifest)  # refuse to write a directory the server would refuse
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().float().contiguous().cpu() for k, v in blocks_state.items()
               if v.is_floating_point()}, str(path / WEIGHTS_FILE))  # BatchNorm counters stay out
    return write_head_adapter(path, manifest, head_state, card)


def blocks_state_of(model: nn.Module, model_type: str, blocks: list[int]) -> dict[str, torch.Tensor]:
    """The tensors of ``blocks`` of ``model`` (a backbone-shaped model) under full names."""
    lay = LAYOUTS[model_type]
    out = {}
    for b in blocks:
        for name in lay.block_modules(model)[b]:
            for k, v in model.get_submodule(name).state_dict().items():
                out[f"{name}.{k}"] = v
    return out


def num_blocks(model: nn.Module, model_type: str) -> int:
    """How many blocks ``model`` splits into (k = this is every block)."""
    return len(LAYOUTS[model_type].block_modules(model))


__all__ = ["BertLayout", "LAYOUTS", "Layout", "MobileNetV2Layout", "TopLayersKind", "TopLayersRows",
           "TopLayersWeights", "WEIGHTS_FILE", "blocks_state_of", "layout_of", "manifest_blocks",
           "num_blocks", "write_top_layers_adapter"]
