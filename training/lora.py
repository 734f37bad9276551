"""The ``lora`` method: PEFT LoRA on a copy of the backbone, trained jointly with a head.

1. A head is fitted on frozen features first (the ``head`` method, cached features), so
   LoRA starts from a good classifier instead of a random one; PEFT initialises ``B = 0``,
   so the starting point is exactly that head.
2. LoRA factors and head train together (AdamW, early stopping on validation loss).
3. The result is saved with PEFT's own ``save_pretrained``: keys are
   ``base_model.model.<backbone module>.lora_{A,B}.weight`` on the bare ``AutoModel``,
   which is what the server's loader maps onto its frozen backbone.

Only layers the server's per-row LoRA runtime can apply are accepted as targets: ``Linear``
and groups-1 ``Conv2d`` with numeric zero padding (see ``adapters/lora/weights.py``). By
default 1x1 convolutions are adapted; a network without any (the speech encoder) gets all
its servable convolutions.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from adapters.backbones.base import Backbone
from adapters.backbones.fingerprint import model_fingerprint
from adapters.errors import IncompatibleAdapter, InvalidInput
from adapters.tasks import task_type
from training.config import TrainConfig
from training.data import LabelledData
from training.finetune import Loop, predict_probs, run_loop
from training.fitted import FitOutput
from training.probe import fit_probe

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
    from peft.tuners.lora import LoraLayer
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


def trainable_copy(backbone: Backbone) -> nn.Module:
    """A fresh float32 copy of the backbone's weights, checked to be the same weights."""
    from transformers import AutoModel
    model = AutoModel.from_pretrained(backbone.source_path)
    if model_fingerprint(model) != backbone.fingerprint:
        raise IncompatibleAdapter(f"the weights at {backbone.source_path} changed since backbone "
                                  f"{backbone.name!r} was loaded; reload it and train again")
    return model.to(backbone.device).eval()


def warm_start_config(cfg: TrainConfig) -> TrainConfig:
    """The head method's own defaults (epochs, lr, ...) with this run's head shape and seed."""
    keep = cfg.model_dump(exclude={"method", "epochs", "lr", "batch_size", "patience", "weight_decay"})
    return TrainConfig(**keep, method="head")


def fit_lora(backbone: Backbone, train: LabelledData, val: LabelledData, cfg: TrainConfig,
             cache_dir: Path | None) -> FitOutput:
    """LoRA + head on ``train``, early-stopped on ``val``."""
    from peft import LoraConfig, get_peft_model

    warm = fit_probe(backbone, train, val, warm_start_config(cfg), cache_dir)
    pooling = warm.pooling
    torch.manual_seed(cfg.seed)  # LoRA's A initialisation
    model = trainable_copy(backbone)
    targets = list(cfg.lora_targets or default_targets(model))
    resolve_targets(model, targets)  # before PEFT: its own errors do not say what to do
    lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, bias="none")
    try:
        peft_model = get_peft_model(model, lcfg)
    except ValueError as exc:  # PEFT: "Target modules {...} not found in the base model"
        raise InvalidInput(f"LoRA targets {targets[:8]} match no module of this backbone ({exc})") from exc
    adapted = _check_servable(peft_model)
    head = copy.deepcopy(warm.head).requires_grad_(True)
    params = [p for p in peft_model.parameters() if p.requires_grad] + list(head.parameters())

    def set_train(flag: bool) -> None:
        # The base model stays in eval mode (frozen BatchNorm statistics, no dropout);
        # only LoRA's own dropout follows the flag.
        peft_model.eval()
        head.train(flag)
        for name, m in peft_model.named_modules():
            if "lora_dropout" in name:
                m.train(flag)

    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}

    def state() -> dict:
        return {"lora": {n: p.detach().clone() for n, p in peft_model.named_parameters() if n in trainable},
                "head": copy.deepcopy(head.state_dict())}

    def load(s: dict) -> None:
        peft_model.load_state_dict(s["lora"], strict=False)
        head.load_state_dict(s["head"])

    loop = Loop(peft_model, head, params, set_train, state, load)
    task = task_type(cfg.task_type)
    hist = run_loop(loop, backbone, train, val, cfg, pooling, "lora", warm.scaling)
    head.requires_grad_(False)

    def predict(inputs: list) -> torch.Tensor:
        return predict_probs(peft_model, head, backbone, inputs, pooling, cfg.feature_batch_size,
                             task, warm.scaling)

    n_params = sum(p.numel() for n, p in peft_model.named_parameters() if n in trainable)
    return FitOutput(head, hist, predict, pooling, peft_model=peft_model, lora_targets=targets,
                     scaling=warm.scaling,
                     notes={"lora_modules": len(adapted), "lora_parameters": n_params,
                            "warm_start_val_accuracy": round(warm.history.val_accuracy[
                                warm.history.best_epoch - 1], 6) if warm.history.best_epoch else None})
