"""The ``top_layers`` method: fine-tune the backbone's last k blocks and a head together.

Recipe (each piece a :class:`~training.config.TrainConfig` field):

- the frozen blocks below the split run without gradients (the same stem/blocks split the
  server runs, :class:`adapters.kinds.top_layers.Layout`), so a step costs the trunk's
  forward plus forward and backward through k blocks only;
- the head starts random and reads standardised features while it trains
  (:class:`training.finetune.StandardisedHead`, statistics of the frozen features, folded
  into the saved head); ``warm_start`` fits it on frozen features first, so epoch 0 is the
  frozen head (measured on Rotten Tomatoes, that start was a local optimum the blocks never
  left, see docs/top-layers.md);
- AdamW with layer-wise learning rates (top block ``lr``, each block below ``layer_decay``
  times the one above, the head ``head_lr``), weight decay on weights only (not biases or
  norms), linear warm-up over ``warmup_fraction`` of the steps then linear decay to 0;
- dropout: the trained blocks' own (BERT's attention/hidden dropout) is on while
  training; BatchNorm statistics stay frozen (small batches would only add noise);
- early stopping on validation loss, keeping the best state (:func:`training.finetune.run_loop`).

The result is the server's ``top_layers`` adapter: ``top_layers.safetensors`` (the blocks
under the backbone's module names) + ``head.safetensors``, checked there against the
same backbone fingerprint.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from adapters.backbones.base import Backbone
from adapters.errors import InvalidInput
from adapters.heads import Head
from adapters.kinds.top_layers import LAYOUTS, blocks_state_of, layout_of
from training.config import TrainConfig
from training.data import LabelledData
from training.finetune import Loop, StandardisedHead, predict_probs, run_loop
from training.fitted import FitOutput
from training.lora import starting_head, trainable_copy
from training.tasks import training_task

DEFAULT_LAYERS = 2


class SplitModel(nn.Module):
    """``model`` run as frozen stem + blocks below ``split`` (no gradients) and trainable
    blocks from ``split`` on; returns what the model returns (``last_hidden_state``,
    ``pooler_output``), so :class:`~adapters.backbones.base.Features` pools it."""

    def __init__(self, model: nn.Module, model_type: str, split: int):
        super().__init__()
        self.model, self.lay, self.split = model, LAYOUTS[model_type], split
        mods = dict(model.named_modules())
        self.blocks = [[mods[n] for n in names] for names in self.lay.block_modules(model)]

    def forward(self, **batch):
        mask = batch.get("attention_mask")
        with torch.no_grad():
            h = self.lay.stem(self.model, batch)
            for blk in self.blocks[:self.split]:
                h = self.lay.run_block(blk, h, mask, self.model)
        for blk in self.blocks[self.split:]:
            h = self.lay.run_block(blk, h, mask, self.model)
        return self.lay.finish(self.model, h)


def param_groups(model: nn.Module, blocks: list[list[nn.Module]], head: Head, cfg: TrainConfig) -> list[dict]:
    """Layer-wise AdamW groups: block ``i`` of ``k`` (top = last) at ``lr * decay**(k-1-i)``;
    weight decay on matrices/kernels only."""
    groups = []
    k = len(blocks)
    for i, mods in enumerate(blocks):
        lr = cfg.lr * cfg.layer_decay ** (k - 1 - i)
        params = [p for m in mods for p in m.parameters()]
        groups.append({"params": [p for p in params if p.dim() > 1], "lr": lr, "weight_decay": cfg.weight_decay})
        groups.append({"params": [p for p in params if p.dim() <= 1], "lr": lr, "weight_decay": 0.0})
    hp = list(head.parameters())
    groups.append({"params": [p for p in hp if p.dim() > 1], "lr": cfg.head_lr, "weight_decay": cfg.weight_decay})
    groups.append({"params": [p for p in hp if p.dim() <= 1], "lr": cfg.head_lr, "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


def fit_top_layers(backbone: Backbone, train: LabelledData, val: LabelledData, cfg: TrainConfig,
                   cache_dir: Path | None) -> FitOutput:
    """The last ``cfg.layers`` blocks + head on ``train``, early-stopped on ``val``."""
    layout_of(backbone)  # an unsupported model type is refused before any work
    model = trainable_copy(backbone).float()
    n = len(LAYOUTS[backbone.model_type].block_modules(model))
    k = cfg.layers or min(DEFAULT_LAYERS, n)
    if k > n:
        raise InvalidInput(f"--layers {k}: backbone {backbone.name!r} has {n} blocks; use 1..{n}")
    split = n - k
    task = training_task(cfg.task_type)
    notes: dict = {"top_layers_blocks": k, "top_layers_of": n}
    head, pooling, scaling = starting_head(cfg, backbone, train, val, cache_dir, notes)
    head.requires_grad_(True)
    model.requires_grad_(False)
    net = SplitModel(model, backbone.model_type, split)
    trained = net.blocks[split:]
    for mods in trained:
        for m in mods:
            m.requires_grad_(True)
    names = [name for names in LAYOUTS[backbone.model_type].block_modules(model)[split:] for name in names]

    def set_train(flag: bool) -> None:
        model.eval()
        head.train(flag)
        for mods in trained:  # dropout on in the trained blocks; BatchNorm statistics frozen
            for m in mods:
                for sub in m.modules():
                    if isinstance(sub, nn.Dropout):
                        sub.train(flag)

    def state() -> dict:
        return {"blocks": {k_: v.detach().clone() for k_, v in blocks_state_of(model, backbone.model_type,
                                                                                 list(range(split, n))).items()},
                "head": copy.deepcopy(head.state_dict())}

    def load(s: dict) -> None:
        model.load_state_dict(s["blocks"], strict=False)
        head.load_state_dict(s["head"])

    params = [p for mods in trained for m in mods for p in m.parameters()] + list(head.parameters())
    loop = Loop(net, head, params, set_train, state, load, groups=param_groups(model, trained, head, cfg),
                warmup_fraction=cfg.warmup_fraction)
    hist = run_loop(loop, backbone, train, val, cfg, pooling, f"top_layers k={k}", scaling)
    # The trained head on raw features (a fresh head trained on standardised ones, folded).
    head = head.folded() if isinstance(head, StandardisedHead) else head.requires_grad_(False)
    model.requires_grad_(False)

    def predict(inputs: list) -> torch.Tensor:
        return predict_probs(net, head, backbone, inputs, pooling, cfg.feature_batch_size, task, scaling)

    notes["top_layers_parameters"] = sum(p.numel() for p in params) - sum(p.numel() for p in head.parameters())
    notes["top_layers_modules"] = names
    blocks = list(range(split, n))
    return FitOutput(head, hist, predict, pooling, scaling=scaling, notes=notes,
                     top_layers={"blocks": blocks, "state": blocks_state_of(model, backbone.model_type, blocks)})
