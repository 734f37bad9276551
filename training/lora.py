"""The ``lora`` method: PEFT LoRA on a copy of the backbone, trained jointly with a head.

1. LoRA (``B = 0`` at the start, so epoch 0 is the frozen trunk) on every ``Linear`` inside
   the encoder blocks by default (:func:`block_linear_targets`: attention query/key/value/
   output and both feed-forward layers), and a fresh head (``head_init``: for single-label
   tasks by default BERT's classifier init, std 0.02 on raw features with dropout 0.1 while
   training; for the others by default one on
   standardised features, :class:`training.finetune.StandardisedHead`, folded into a plain
   head at the end). ``warm_start`` fits the head on frozen features first instead; measured
   on Rotten Tomatoes, that start was a local optimum LoRA hardly left (docs/top-layers.md).
2. LoRA factors (``lr``) and head (``head_lr``) train together: AdamW, linear warm-up over
   ``warmup_fraction`` of the steps then linear decay to 0, the backbone's own dropout on
   while training (BatchNorm statistics frozen), gradient clipping, early stopping on
   validation loss keeping the best state.
3. The result is saved with PEFT's own ``save_pretrained``: keys are
   ``base_model.model.<backbone module>.lora_{A,B}.weight`` on the bare ``AutoModel``,
   which is what the server's loader maps onto its frozen backbone.

Only layers the server's per-row LoRA runtime can apply are accepted as targets: ``Linear``
and groups-1 ``Conv2d`` with numeric zero padding (see ``adapters/lora/weights.py``). A
network without ``Linear`` layers in its blocks gets its 1x1 convolutions by default; one
without any (the speech encoder) all its servable convolutions.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from torch import nn

from adapters.backbones.base import Backbone
from adapters.errors import InvalidInput
from training.config import TrainConfig
from training.data import LabelledData
from training.finetune import Loop, StandardisedHead, fresh_head, predict_probs, run_loop
from training.fitted import FitOutput
from training.probe import fit_probe, head_spec
from training.tasks import training_task
from training.trunk_copy import trainable_copy  # noqa: F401  (re-exported: token_fit, top_layers, multitask)

# Attention projections to adapt, per naming convention (BERT/ViT/DeiT, LLaMA/CLIP, DistilBERT).
_ATTENTION_PAIRS = (("query", "value"), ("q_proj", "v_proj"), ("q_lin", "v_lin"))


def servable_conv(m: nn.Module) -> bool:
    return (isinstance(m, nn.Conv2d) and m.groups == 1 and m.padding_mode == "zeros"
            and not isinstance(m.padding, str))


def _pointwise(m: nn.Module) -> bool:
    return servable_conv(m) and m.kernel_size == (1, 1) and m.stride == (1, 1)


def default_targets(model: nn.Module) -> list[str]:
    """PEFT ``target_modules`` for ``model``: attention query/value, else every 1x1 conv, else
    every servable conv.

    >>> from adapters.backbones.tiny import tiny_text_model
    >>> default_targets(tiny_text_model())
    ['query', 'value']
    """
    linear_names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    for pair in _ATTENTION_PAIRS:
        if set(pair) <= linear_names:
            return list(pair)
    convs = ([n for n, m in model.named_modules() if _pointwise(m)]
             or [n for n, m in model.named_modules() if servable_conv(m)])
    if convs:
        return convs  # full names: PEFT matches a target by suffix, so these select exactly these
    raise InvalidInput(f"no default LoRA targets for model type "
                       f"{getattr(getattr(model, 'config', None), 'model_type', '?')!r}; "
                       "name the Linear / Conv2d modules to adapt with lora_targets (--lora-targets)")


def block_linear_targets(model: nn.Module) -> list[str]:
    """Every ``Linear`` inside the repeated blocks (a numbered module such as
    ``encoder.layer.3``), named by its path below the block: for BERT the attention's
    query/key/value/output and both feed-forward layers, not the pooler (mean pooling never
    reads it). [] when the blocks hold no ``Linear`` (a conv net).

    >>> from adapters.backbones.tiny import tiny_text_model
    >>> block_linear_targets(tiny_text_model())
    ['attention.output.dense', 'attention.self.key', 'attention.self.query', 'attention.self.value', 'intermediate.dense', 'output.dense']
    """
    names = set()
    for name, m in model.named_modules():
        parts = name.split(".")
        idx = [i for i, p in enumerate(parts) if p.isdigit()]
        if isinstance(m, nn.Linear) and idx and idx[-1] < len(parts) - 1:
            names.add(".".join(parts[idx[-1] + 1:]))
    return sorted(names)


def resolve_targets(model: nn.Module, targets: list[str]) -> list[str]:
    """Module names ``targets`` select (PEFT's rule: the full name or a ``.``-suffix of it),
    checked to be layers the server can apply; raises listing what is wrong."""
    chosen, bad = [], []
    for name, m in model.named_modules():
        if any(name == t or name.endswith("." + t) for t in targets):
            if isinstance(m, nn.Linear) or servable_conv(m):
                chosen.append(name)
            else:
                bad.append(f"{name} ({type(m).__name__}"
                           f"{' ' + str(m.kernel_size) if hasattr(m, 'kernel_size') else ''}"
                           f"{', groups ' + str(m.groups) if getattr(m, 'groups', 1) != 1 else ''})")
    if bad:
        raise InvalidInput(f"LoRA targets the server cannot apply per row: {bad[:8]}; target Linear "
                           "layers or groups-1 convolutions only")
    if not chosen:
        raise InvalidInput(f"LoRA targets {targets[:8]} match no module of this backbone; name "
                           "Linear or Conv2d modules (e.g. 'query', 'value')")
    return chosen


def _check_servable(peft_model) -> list[str]:
    """Names of adapted modules; raises listing the ones the server could not apply."""
    adapted, bad = [], []
    for name, m in peft_model.named_modules():
        if isinstance(m, LoraLayer):
            base = m.get_base_layer()
            adapted.append(name)
            if not (isinstance(base, nn.Linear) or servable_conv(base)):
                bad.append(f"{name} ({type(base).__name__}"
                           f"{getattr(base, 'kernel_size', '')})")
    if bad:
        raise InvalidInput(f"LoRA targets the server cannot apply per row: {bad[:8]}; target Linear "
                           "layers or groups-1 convolutions only")
    return adapted


def starting_head(cfg: TrainConfig, backbone: Backbone, train: LabelledData, val: LabelledData,
                  cache_dir, notes: dict):
    """The head fine-tuning starts from, as ``(head, pooling, target scaling)``: the probe
    fitted on frozen features with ``cfg.warm_start`` (its validation accuracy goes in
    ``notes``), else a fresh head (``cfg.head_init``, seeded by ``cfg.seed``)."""
    if cfg.warm_start:
        warm = fit_probe(backbone, train, val, warm_start_config(cfg), cache_dir)
        best = warm.history.best_epoch
        notes["warm_start_val_accuracy"] = round(warm.history.val_accuracy[best - 1], 6) if best else None
        return copy.deepcopy(warm.head), warm.pooling, warm.scaling
    torch.manual_seed(cfg.seed)
    spec = head_spec(cfg, backbone)
    head = fresh_head(backbone, spec, len(train.label_names), train, cfg.feature_batch_size,
                      cache_dir, cfg.progress, cfg.head_dropout, cfg.head_init)
    return head, spec.pooling, training_task(cfg.task_type).target_scaling(train)


def warm_start_config(cfg: TrainConfig) -> TrainConfig:
    """The head method's own defaults (epochs, lr, ...) with this run's head shape and seed."""
    keep = cfg.model_dump(exclude={"method", "epochs", "lr", "batch_size", "patience", "weight_decay"})
    return type(cfg)(**keep, method="head")


def fit_lora(backbone: Backbone, train: LabelledData, val: LabelledData, cfg: TrainConfig,
             cache_dir: Path | None) -> FitOutput:
    """LoRA + head on ``train``, early-stopped on ``val``."""

    task = training_task(cfg.task_type)
    notes: dict = {}
    head, pooling, scaling = starting_head(cfg, backbone, train, val, cache_dir, notes)
    torch.manual_seed(cfg.seed)  # LoRA's A initialisation
    model = trainable_copy(backbone)
    targets = list(cfg.lora_targets or block_linear_targets(model) or default_targets(model))
    resolve_targets(model, targets)  # before PEFT: its own errors do not say what to do
    lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, bias="none")
    try:
        peft_model = get_peft_model(model, lcfg)
    except ValueError as exc:  # PEFT: "Target modules {...} not found in the base model"
        raise InvalidInput(f"LoRA targets {targets[:8]} match no module of this backbone ({exc})") from exc
    adapted = _check_servable(peft_model)
    head.requires_grad_(True)
    params = [p for p in peft_model.parameters() if p.requires_grad] + list(head.parameters())

    def set_train(flag: bool) -> None:
        # BatchNorm statistics stay frozen (the base model stays in eval mode); every dropout
        # (the backbone's own, LoRA's) follows the flag.
        peft_model.eval()
        head.train(flag)
        for m in peft_model.modules():
            if isinstance(m, nn.Dropout):
                m.train(flag)

    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}

    def state() -> dict:
        return {"lora": {n: p.detach().clone() for n, p in peft_model.named_parameters() if n in trainable},
                "head": copy.deepcopy(head.state_dict())}

    def load(s: dict) -> None:
        peft_model.load_state_dict(s["lora"], strict=False)
        head.load_state_dict(s["head"])

    lora_params = [p for p in peft_model.parameters() if p.requires_grad]
    groups = [{"params": lora_params, "lr": cfg.lr},
              {"params": list(head.parameters()), "lr": cfg.head_lr or cfg.lr}]
    loop = Loop(peft_model, head, params, set_train, state, load, groups=groups,
                warmup_fraction=cfg.warmup_fraction)
    hist = run_loop(loop, backbone, train, val, cfg, pooling, "lora", scaling)
    # The trained head on raw features (a fresh head trained on standardised ones, folded).
    head = head.folded() if isinstance(head, StandardisedHead) else head.requires_grad_(False)

    def predict(inputs: list) -> torch.Tensor:
        return predict_probs(peft_model, head, backbone, inputs, pooling, cfg.feature_batch_size,
                             task, scaling)

    n_params = sum(p.numel() for n, p in peft_model.named_parameters() if n in trainable)
    return FitOutput(head, hist, predict, pooling, peft_model=peft_model, lora_targets=targets,
                     scaling=scaling, notes={"lora_modules": len(adapted), "lora_parameters": n_params, **notes})
