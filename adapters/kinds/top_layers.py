"""``top_layers``: the task's own trained copy of the last *k* blocks of the trunk, plus a head.

Files: ``top_layers.safetensors`` (the blocks' parameters and buffers under the backbone's
own module names, e.g. ``encoder.layer.5.attention.self.query.weight``) and
``head.safetensors``; the manifest names the blocks in ``top_layers.blocks`` (the last k
block indices, ascending). k = every block is full fine-tuning of the blocks (BERT
embeddings and pooler, MobileNet's stem, stay frozen).

Blocks (:class:`Layout`): a BERT-like encoder's ``encoder.layer.{i}``; a MobileNetV2's
inverted-residual ``layer.{i}``, the last one together with the final ``conv_1x1``.

Serving shares the trunk below the split. These rows run in the hooked trunk pass with
heads and LoRA (:mod:`adapters.kinds.trunk` hands any chunk holding a top-layers row to
:func:`split_forward`, through :meth:`TopLayersWeights.split_forward`): the chunk's rows
are reduced to distinct (input, LoRA) rows, the frozen stem and blocks run once on those up to the lowest split any row needs; from each
block on, the rows still on the frozen trunk (plain, LoRA with their per-row deltas, and
top-layers rows whose split is higher) continue, and at a task's split its rows leave and
run through that task's blocks, one call per task. The adapter's tensors are swapped into
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
from torch.func import functional_call
from transformers.masking_utils import create_bidirectional_mask

from adapters.backbones.base import Features
from adapters.errors import IncompatibleAdapter, InvalidAdapter
from adapters.format.adapter_dir import write_head_adapter
from adapters.format.safetensors_io import load_tensors
from adapters.heads import check_head_header
from adapters.kinds.base import AdapterKind
from adapters.kinds.trunk import HOOKED_TRUNK
from adapters.lora.batch import LoraBatch, use_lora_batch

WEIGHTS_FILE = "top_layers.safetensors"


# ---- how a model type splits into stem, blocks and finish ---------------------------------
class Layout:
    """Stem -> blocks -> finish of one model type, run piecewise on ``[rows, ...]`` tensors."""

    def block_modules(self, model: nn.Module) -> list[list[str]]:
        """Per block, the module names (relative to the backbone model) it is made of."""
        raise NotImplementedError

    def stem(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def run_block(self, mods: list[nn.Module], h: torch.Tensor, mask: torch.Tensor | None,
                  model: nn.Module, params: list[dict] | None = None) -> torch.Tensor:
        """Run one block on ``h`` (the backbone's own modules, or ``params`` swapped into them)."""
        raise NotImplementedError

    def finish(self, model: nn.Module, h: torch.Tensor):
        """``last_hidden_state`` / ``pooler_output`` like the model's own output."""
        raise NotImplementedError


def _call(mod: nn.Module, params: dict | None, *args):
    return mod(*args) if params is None else functional_call(mod, params, args, strict=True)


class BertLayout(Layout):
    def block_modules(self, model):
        return [[f"encoder.layer.{i}"] for i in range(len(model.encoder.layer))]

    def stem(self, model, batch):
        return model.embeddings(input_ids=batch["input_ids"], token_type_ids=batch.get("token_type_ids"))

    def _mask(self, model, h, mask):
        # The mask BertModel.forward builds for its encoder (bidirectional, in the form the
        # configured attention implementation takes), through transformers' public masking
        # API; tests/test_top_layers.py pins the piecewise forward to the model's own.
        if mask is None:
            return None
        return create_bidirectional_mask(config=model.config, inputs_embeds=h, attention_mask=mask)

    def run_block(self, mods, h, mask, model, params=None):
        return _call(mods[0], None if params is None else params[0], h, self._mask(model, h, mask))

    def finish(self, model, h):
        pooled = model.pooler(h) if getattr(model, "pooler", None) is not None else None
        return _Out(h, pooled)


class MobileNetV2Layout(Layout):
    def block_modules(self, model):
        n = len(model.layer)
        return [[f"layer.{i}"] for i in range(n - 1)] + [[f"layer.{n - 1}", "conv_1x1"]]

    def stem(self, model, batch):
        return model.conv_stem(batch["pixel_values"])

    def run_block(self, mods, h, mask, model, params=None):
        for j, mod in enumerate(mods):
            h = _call(mod, None if params is None else params[j], h)
        return h

    def finish(self, model, h):
        pooled = torch.flatten(model.pooler(h), 1) if model.pooler is not None else None
        return _Out(h, pooled)


@dataclass
class _Out:
    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor | None


LAYOUTS: dict[str, Layout] = {"bert": BertLayout(), "roberta": BertLayout(), "mobilenet_v2": MobileNetV2Layout()}


def layout_of(backbone) -> Layout:
    lay = LAYOUTS.get(backbone.model_type)
    if lay is None:
        raise IncompatibleAdapter(f"top_layers adapters are not supported on model type "
                                  f"{backbone.model_type!r} (supported: {sorted(LAYOUTS)})")
    return lay


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
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for blk in self.params for d in blk for t in d.values())

    def to(self, device, dtype) -> "TopLayersWeights":
        def cast(t):
            return t.to(device, dtype) if t.is_floating_point() else t.to(device)
        return TopLayersWeights(self.split, [[{k: cast(t) for k, t in d.items()} for d in blk]
                                             for blk in self.params])

    @staticmethod
    def split_forward(backbone, batch: dict[str, torch.Tensor], states: list, collect) -> None:
        """The hooked pass hands a chunk holding top-layers rows here: :func:`split_forward`."""
        split_forward(backbone, batch, states, collect)


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
    trunk_pass = HOOKED_TRUNK

    def plan(self, adir, backbone):
        m = adir.manifest
        if m is None:
            raise InvalidAdapter("a top_layers adapter needs an adapter.json")
        lay = layout_of(backbone)
        n = len(lay.block_modules(backbone.model))
        blocks = manifest_blocks(m)
        want = list(range(n - len(blocks), n))
        if blocks != want:
            raise IncompatibleAdapter(f"top_layers.blocks {blocks} must be the last {len(blocks)} of "
                                      f"backbone {backbone.name!r}'s {n} blocks: {want}")
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
        check_head_header(m.head, len(m.output_names), adir.headers["head.safetensors"],
                          backbone.hidden_size, backbone.head_inputs)

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
        return weights


# ---- the split pass -----------------------------------------------------------------------
def _lora_ctx(states: list):
    """Per-row LoRA deltas for rows with LoRA ``states`` (None / top-layers rows: none)."""
    loras = [None if isinstance(w, TopLayersWeights) else w for w in states]
    distinct = sorted({id(w): w for w in loras if w is not None}.items())
    if not distinct:
        return use_lora_batch(None)
    slot_of = {k: i for i, (k, _) in enumerate(distinct, start=1)}
    slots = torch.tensor([0 if w is None else slot_of[id(w)] for w in loras], dtype=torch.long)
    return use_lora_batch(LoraBatch([w for _, w in distinct], slots))


def _row_keys(batch: dict[str, torch.Tensor], states: list) -> list[int]:
    """For each row, the index of the first row with the same input and the same LoRA state
    (top-layers and plain rows share the frozen trunk below the split)."""
    first: dict[tuple, int] = {}
    out = []
    for i, w in enumerate(states):
        lora = None if w is None or isinstance(w, TopLayersWeights) else id(w)
        key = (lora,) + tuple(v[i].cpu().numpy().tobytes() for _, v in sorted(batch.items()))
        out.append(first.setdefault(key, i))
    return out


def split_forward(backbone, batch: dict[str, torch.Tensor], states: list, collect) -> None:
    """The hooked pass for a chunk holding top-layers rows (see the module docstring)."""
    model, lay = backbone.model, layout_of(backbone)
    rep = _row_keys(batch, states)  # on the CPU tensors, before they move
    batch = {k: v.to(backbone.device) for k, v in batch.items()}
    if "pixel_values" in batch:
        batch["pixel_values"] = batch["pixel_values"].to(backbone.dtype)
    mask = batch.get("attention_mask")  # [rows, seq] or None
    modules = dict(model.named_modules())
    block_mods = [[modules[n] for n in names] for names in lay.block_modules(model)]
    n_blocks = len(block_mods)

    def split_of(w):
        return w.split if isinstance(w, TopLayersWeights) else n_blocks

    uniq = sorted(set(rep))  # the rows the frozen trunk runs on
    pos = {u: j for j, u in enumerate(uniq)}
    # A frozen row is needed up to the highest split of the rows it stands for.
    need = [0] * len(uniq)
    for i, w in enumerate(states):
        need[pos[rep[i]]] = max(need[pos[rep[i]]], split_of(w))
    low = min(split_of(w) for w in states)
    final = [None] * len(states)  # per row: its last hidden state
    with backbone.lock, torch.inference_mode():
        idx = torch.tensor(uniq, dtype=torch.long, device=backbone.device)
        sub_states = [states[u] for u in uniq]
        sub_mask = None if mask is None else mask[idx]
        with _lora_ctx(sub_states):
            h = lay.stem(model, {k: v[idx] for k, v in batch.items()})  # [uniq, ...]
            for b in range(low):
                h = lay.run_block(block_mods[b], h, sub_mask, model)
        active = list(range(len(uniq)))  # positions in uniq still on the frozen trunk
        for b in range(low, n_blocks + 1):
            # Rows whose split is here leave the frozen trunk: one call per task.
            tasks: dict[int, tuple[TopLayersWeights, list[int]]] = {}
            for i, w in enumerate(states):
                if isinstance(w, TopLayersWeights) and w.split == b:
                    tasks.setdefault(id(w), (w, []))[1].append(i)
            where = {p: j for j, p in enumerate(active)}
            for w, rows in tasks.values():
                sel = torch.tensor([where[pos[rep[i]]] for i in rows], dtype=torch.long, device=h.device)
                ht = h[sel]
                m_t = None if mask is None else mask[torch.tensor(rows, dtype=torch.long, device=mask.device)]
                with use_lora_batch(None):
                    for blk, params in zip(block_mods[b:], w.params):
                        ht = lay.run_block(blk, ht, m_t, model, params)
                for j, i in enumerate(rows):
                    final[i] = ht[j]
            if b == n_blocks:
                break
            keep = [j for j, p in enumerate(active) if need[p] > b]
            if len(keep) < len(active):
                h = h[torch.tensor(keep, dtype=torch.long, device=h.device)]
                active = [active[j] for j in keep]
            if not active:
                break
            a_rows = [uniq[p] for p in active]
            a_mask = None if mask is None else mask[torch.tensor(a_rows, dtype=torch.long, device=mask.device)]
            with _lora_ctx([states[u] for u in a_rows]):
                h = lay.run_block(block_mods[b], h, a_mask, model)
        if active and low <= n_blocks:
            where = {p: j for j, p in enumerate(active)}
            for i, w in enumerate(states):
                if not isinstance(w, TopLayersWeights):
                    final[i] = h[where[pos[rep[i]]]]
        hidden = torch.stack(final)  # [rows, ...]
        with _lora_ctx(states):
            out = lay.finish(model, hidden)
        collect(Features(out, mask))


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
