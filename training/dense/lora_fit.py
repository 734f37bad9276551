"""``lora`` for dense task types: PEFT LoRA on the trunk's pointwise convolutions, trained
jointly with a dense head on the maps the adapted trunk gives.

Targets: every 1x1, stride-1, groups-1 convolution (MobileNetV2's ``expand_1x1`` /
``reduce_1x1``) that runs before the deepest map the head reads is made (a later layer cannot
change a map read, so it gets no factors the server would run for nothing). Depthwise 3x3 convolutions (groups > 1) and strided ones are left alone: the
server's per-row LoRA applies groups-1 convolutions only (``adapters/lora/weights.py``).

Images are preprocessed once at the task's input size (with their mirror and jittered copies,
:mod:`training.dense.augment`); every step runs the trunk with the LoRA deltas (BatchNorm
statistics frozen: the base model stays in eval mode) and the head on its maps, and the
task's loss trains LoRA factors (``trunk_lr``) and head (``lr``) together, the head warm-started
on the frozen maps (:mod:`training.dense.warm`; ``warm_start=False``: a fresh head). The result is saved
with PEFT's ``save_pretrained`` beside ``head.safetensors`` (:func:`training.export.write_lora_dir`).
"""

from __future__ import annotations

import time

import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from adapters.backbones.base import Backbone
from adapters.errors import InvalidInput
from training.dense.augment import augmented
from training.dense.data import DenseData
from training.dense.fit import DenseFit, DenseFitConfig, fit_epochs
from training.dense.warm import start_head
from training.trunk_copy import trainable_copy


def _pointwise(m: nn.Module) -> bool:
    return (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.stride == (1, 1)
            and m.groups == 1 and m.padding_mode == "zeros" and not isinstance(m.padding, str))


def dense_lora_targets(model: nn.Module, pixels: torch.Tensor, map_index: int) -> list[str]:
    """Full names of the pointwise convolutions of ``model`` that run before its hidden state
    ``map_index`` (the deepest map the head reads) is made: a layer after it cannot change any
    map read. Found by running ``pixels`` (``[1, 3, S, S]``) with forward hooks.

    >>> from adapters.backbones.tiny import tiny_vision_model
    >>> names = dense_lora_targets(tiny_vision_model(), torch.zeros(1, 3, 32, 32), 3)
    >>> names[0], all("1x1" in n for n in names)
    ('conv_stem.reduce_1x1.convolution', True)
    """
    ran: list[tuple[str, nn.Module, object]] = []  # every module, in the order it finished
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: ran.append((name, mod, out)))
             for name, m in model.named_modules() if name]
    try:
        with torch.no_grad():
            last = model(pixel_values=pixels, output_hidden_states=True).hidden_states[map_index]
    finally:  # the hooks never outlive the probe
        for h in hooks:
            h.remove()
    made = [i for i, (_, _, out) in enumerate(ran) if out is last]
    if not made:
        raise InvalidInput("no layer of this backbone gives its map as a module output; name the "
                           "LoRA targets by hand")
    return [name for name, mod, _ in ran[:made[0]] if _pointwise(mod)]


def fit_dense_lora(backbone: Backbone, data: DenseData, cfg: DenseFitConfig, task) -> DenseFit:
    """LoRA factors on ``backbone``'s pointwise convolutions plus a dense head, on ``data``."""
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    train = augmented(data, cfg.flip, cfg.scale_jitter, cfg.seed)
    pixels = backbone.preprocess(train.images, cfg.input_size)["pixel_values"].to(backbone.device)
    model = trainable_copy(backbone)
    targets = dense_lora_targets(model, pixels[:1], backbone.feature_maps[max(cfg.strides)])
    peft_model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                                  target_modules=targets, bias="none"))
    peft_model.eval()  # BatchNorm statistics stay the pretrained ones (the server's)
    index = [backbone.feature_maps[s] for s in cfg.strides]

    def maps(px: torch.Tensor) -> list[torch.Tensor]:
        hidden = peft_model(pixel_values=px, output_hidden_states=True).hidden_states
        return [hidden[i] for i in index]  # [b, c_s, S/s, S/s] per stride

    with torch.no_grad():
        channels = [int(m.shape[1]) for m in maps(pixels[:1])]
    head, spec, warm = start_head(backbone, data, cfg, task, channels)
    lora_params = [p for p in peft_model.parameters() if p.requires_grad]
    groups = [{"params": lora_params, "lr": cfg.trunk_lr}, {"params": list(head.parameters()), "lr": cfg.lr}]
    history = fit_epochs(head, train, cfg, task, lambda idx: head(maps(pixels[idx])), groups, t0)
    head.eval().requires_grad_(False)
    peft_model.requires_grad_(False)

    def maps_of(images: list) -> list[torch.Tensor]:
        parts = []
        with torch.no_grad():
            for i in range(0, len(images), cfg.trunk_batch):
                px = backbone.preprocess(images[i:i + cfg.trunk_batch], cfg.input_size)["pixel_values"]
                parts.append([m.cpu() for m in maps(px.to(backbone.device))])
        return [torch.cat(p) for p in zip(*parts)]

    return DenseFit(head, spec, history, {"trunk": 0.0, "fit": time.perf_counter() - t0}, maps_of,
                    peft_model=peft_model,
                    notes={**warm, "lora_r": cfg.lora_r, "lora_alpha": cfg.lora_alpha, "lora_modules": len(targets),
                           "lora_parameters": sum(p.numel() for p in lora_params), "trunk_lr": cfg.trunk_lr})
