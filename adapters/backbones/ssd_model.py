"""SSD-MobileNetV2's feature extractor (TensorFlow's COCO model zoo) as a torch backbone.

The MobileNetV2 trunk (TF-slim layout: a 3x3 stem, 17 inverted-residual blocks, a 1x1 to
1280) and the SSD "extra" layers (four 1x1-reduce, depthwise 3x3 stride 2, 1x1 blocks),
every convolution followed by batch norm (eps 0.001) and ReLU6 except the blocks' linear
projections. Convolutions with stride 2 pad like TensorFlow's ``"SAME"``: the extra row and
column go at the bottom/right when the total is odd, computed from each input's size, so a
300 px input gives 150, 75, 38, 19, 10, 5, 3, 2, 1 cells exactly like the original graph.

Inputs and outputs follow Hugging Face vision models: ``pixel_values [rows, 3, h, w]``
(scaled to [-1, 1]), ``last_hidden_state`` = the 1280-channel map at stride 32,
``pooler_output`` its spatial mean, and with ``output_hidden_states`` every stage's map,
the SSD's six prediction maps last at their strides: stride 16 (block 13's 576-channel
expansion), 32 (1280), 64, 128, 256 and 512 (the extras). The COCO box/class predictors
are not part of the backbone; they are the ``coco-objects`` task's head
(:mod:`adapters.ssd_head`).

    >>> m = SSDMobileNetV2Model(SSDMobileNetV2Config()).eval()
    >>> out = m(torch.zeros(1, 3, 300, 300), output_hidden_states=True)
    >>> [tuple(h.shape[-2:]) for h in out.hidden_states[-6:]]
    [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndNoAttention

# MobileNetV2's inverted-residual stages: (expansion t, output channels c, blocks n, first stride s).
STAGES: tuple = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                 (6, 160, 3, 2), (6, 320, 1, 1))
# The SSD extras: (1x1 reduce channels, output channels), each ending at stride 2 below the last.
EXTRAS: tuple = ((256, 512), (128, 256), (128, 256), (64, 128))
# The block whose expansion output is the SSD's stride-16 prediction map (TF "layer_15").
SSD_EXPANSION_BLOCK = 13


class SSDMobileNetV2Config(PretrainedConfig):
    """Sizes of the trunk and the extras (defaults: the TF model zoo's ssd_mobilenet_v2_coco)."""

    model_type = "ssd_mobilenet_v2"

    def __init__(self, batch_norm_eps: float = 0.001, last_channels: int = 1280,
                 image_size: int = 300, **kwargs):
        super().__init__(**kwargs)
        self.batch_norm_eps = batch_norm_eps
        self.last_channels = last_channels
        self.image_size = image_size
        self.num_channels = 3


def same_padding(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Pad ``x [n, c, h, w]`` as TensorFlow's ``"SAME"`` does for ``kernel`` and ``stride``.

    >>> same_padding(torch.zeros(1, 1, 300, 300), 3, 2).shape[-2:]
    torch.Size([301, 301])
    """
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad takes the last dimension first
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


class ConvBN(nn.Module):
    """Conv (no bias) + batch norm (+ ReLU6), TF "SAME" padding."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, depthwise: bool = False,
                 act: bool = True, eps: float = 0.001):
        super().__init__()
        self.kernel, self.stride, self.act = kernel, stride, act
        # Stride 1: SAME is symmetric, so the conv pads itself (a plain nn.Conv2d, PEFT-friendly).
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2 if stride == 1 else 0,
                              groups=cin if depthwise else 1, bias=False)
        self.norm = nn.BatchNorm2d(cout, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = same_padding(x, self.kernel, self.stride)
        x = self.norm(self.conv(x))
        return F.relu6(x) if self.act else x


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, expansion: int, stride: int, eps: float):
        super().__init__()
        hidden = cin * expansion
        self.expand = ConvBN(cin, hidden, 1, eps=eps) if expansion != 1 else None
        self.depthwise = ConvBN(hidden, hidden, 3, stride, depthwise=True, eps=eps)
        self.project = ConvBN(hidden, cout, 1, act=False, eps=eps)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(output, expansion output)``."""
        e = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(e))
        return (x + y if self.residual else y), e


class Extra(nn.Module):
    """SSD extra layer: 1x1 reduce, depthwise 3x3 stride 2, 1x1 out (each BN + ReLU6)."""

    def __init__(self, cin: int, reduce: int, cout: int, eps: float):
        super().__init__()
        self.reduce = ConvBN(cin, reduce, 1, eps=eps)
        self.depthwise = ConvBN(reduce, reduce, 3, 2, depthwise=True, eps=eps)
        self.pointwise = ConvBN(reduce, cout, 1, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(self.reduce(x)))


class SSDMobileNetV2Model(PreTrainedModel):
    """``pixel_values`` in [-1, 1] -> the 1280-d stride-32 map (see the module docstring)."""

    config_class = SSDMobileNetV2Config
    base_model_prefix = "ssd_mobilenet_v2"
    main_input_name = "pixel_values"

    def __init__(self, config: SSDMobileNetV2Config):
        super().__init__(config)
        eps = config.batch_norm_eps
        self.stem = ConvBN(3, 32, 3, 2, eps=eps)
        blocks, cin = [], 32
        for t, c, n, s in STAGES:
            for i in range(n):
                blocks.append(InvertedResidual(cin, c, t, s if i == 0 else 1, eps))
                cin = c
        self.blocks = nn.ModuleList(blocks)
        self.conv_1 = ConvBN(cin, config.last_channels, 1, eps=eps)
        extras, cin = [], config.last_channels
        for reduce, cout in EXTRAS:
            extras.append(Extra(cin, reduce, cout, eps))
            cin = cout
        self.extras = nn.ModuleList(extras)
        self.post_init()

    def _init_weights(self, module):
        """Random init for a model built from its config (pretrained weights overwrite it)."""
        if isinstance(module, nn.Conv2d) and not module.weight.is_meta:
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
        elif isinstance(module, nn.BatchNorm2d) and not module.weight.is_meta:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool | None = None,
                return_dict: bool | None = None, **kwargs) -> BaseModelOutputWithPoolingAndNoAttention:
        x = self.stem(pixel_values)
        states = [x]
        for i, block in enumerate(self.blocks):
            x, expansion = block(x)
            if i == SSD_EXPANSION_BLOCK:  # stride 16, after every other stride-16 map
                states.append(expansion)
            states.append(x)
        last = self.conv_1(x)
        states.append(last)
        x = last
        for extra in self.extras:
            x = extra(x)
            states.append(x)
        return BaseModelOutputWithPoolingAndNoAttention(
            last_hidden_state=last, pooler_output=last.mean(dim=(2, 3)),
            hidden_states=tuple(states) if output_hidden_states else None)


def register_auto_classes() -> None:
    """Let ``AutoConfig`` / ``AutoModel`` load a saved ssd_mobilenet_v2 folder (idempotent)."""
    try:
        AutoConfig.register(SSDMobileNetV2Config.model_type, SSDMobileNetV2Config)
        AutoModel.register(SSDMobileNetV2Config, SSDMobileNetV2Model)
    except ValueError:  # already registered in this process
        pass


register_auto_classes()
