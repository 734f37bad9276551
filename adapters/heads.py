"""Classification heads on pooled backbone features: linear or a small MLP.

Weights live in ``head.safetensors`` as ``layers.{i}.weight`` / ``layers.{i}.bias``
for each linear layer ``i`` (activations between them carry no weights).
"""

from __future__ import annotations

import torch
from torch import nn

from adapters.errors import IncompatibleAdapter, InvalidAdapter
from adapters.format.manifest import HeadSpec
from adapters.head_arena import PackedLinearHead

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class Head(nn.Module):
    """``features [rows, input_dim] -> logits [rows, n_labels]``.

    >>> h = Head(HeadSpec(pooling="mean", input_dim=4, hidden=[3]), n_labels=2)
    >>> h(torch.zeros(5, 4)).shape
    torch.Size([5, 2])
    """

    def __init__(self, spec: HeadSpec, n_labels: int):
        super().__init__()
        self.spec = spec
        widths = [spec.input_dim, *spec.hidden, n_labels]
        layers: list[nn.Module] = []
        for i in range(len(widths) - 1):
            if i:
                layers.append(_ACTIVATIONS[spec.activation]())
            layers.append(nn.Linear(widths[i], widths[i + 1]))
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.spec.normalize:
            features = nn.functional.normalize(features, dim=-1)
        return self.net(features)

    def linear_layers(self) -> list[nn.Linear]:
        return [m for m in self.net if isinstance(m, nn.Linear)]

    def state_for_file(self) -> dict[str, torch.Tensor]:
        """Weights under the file's key names (``layers.{i}.weight``)."""
        out = {}
        for i, lin in enumerate(self.linear_layers()):
            out[f"layers.{i}.weight"] = lin.weight.detach()
            out[f"layers.{i}.bias"] = lin.bias.detach()
        return out


def expected_head_shapes(spec: HeadSpec, n_labels: int) -> dict[str, tuple[int, ...]]:
    widths = [spec.input_dim, *spec.hidden, n_labels]
    shapes = {}
    for i in range(len(widths) - 1):
        shapes[f"layers.{i}.weight"] = (widths[i + 1], widths[i])
        shapes[f"layers.{i}.bias"] = (widths[i + 1],)
    return shapes


def check_head_header(spec: HeadSpec, n_labels: int, header: dict, hidden_size: int,
                      poolings: list[str]) -> None:
    """Compare a head file's tensor shapes with the manifest and the backbone, before loading."""
    problems = []
    if spec.input_dim != hidden_size:
        problems.append(f"head.input_dim is {spec.input_dim} but the backbone's features are {hidden_size}-d")
    if spec.pooling not in poolings:
        problems.append(f"pooling {spec.pooling!r} is not available on this backbone (have {poolings})")
    IncompatibleAdapter.collect(problems, "head")
    expected = expected_head_shapes(spec, n_labels)
    got = {k: tuple(v[1]) for k, v in header.items()}
    for k, shape in expected.items():
        if k not in got:
            problems.append(f"head.safetensors lacks tensor {k!r} {shape}")
        elif got[k] != shape:
            problems.append(f"tensor {k!r} has shape {got[k]}, expected {shape} "
                            f"(input_dim {spec.input_dim}, hidden {spec.hidden}, {n_labels} labels)")
    problems += [f"unexpected tensor {k!r} in head.safetensors" for k in sorted(set(got) - set(expected))]
    InvalidAdapter.collect(problems, "head")


def build_head(spec: HeadSpec, n_labels: int, tensors: dict[str, torch.Tensor]) -> "Head | PackedLinearHead":
    """A head in eval mode holding ``tensors`` (already shape-checked); a linear head
    (no hidden layer) is packed into its shape's shared arena (:mod:`adapters.head_arena`)."""
    if not spec.hidden:
        return PackedLinearHead(spec, tensors["layers.0.weight"], tensors["layers.0.bias"])
    head = Head(spec, n_labels)
    for i, lin in enumerate(head.linear_layers()):
        lin.weight.data.copy_(tensors[f"layers.{i}.weight"])
        lin.bias.data.copy_(tensors[f"layers.{i}.bias"])
    return head.eval().requires_grad_(False)
