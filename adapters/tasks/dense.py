"""The common half of dense task types (detection, segmentation): a head on the spatial maps.

A dense task's manifest holds ``dense`` (:class:`adapters.format.manifest.DenseSpec`: the
strides read, their channels, the head's width, the task's input size) and ``labels``;
``head`` stays unset. Its head (:class:`adapters.dense_heads.DenseHead`) runs per task on
the task's rows of the batch's maps; the answers are mapped back to each caller's image
(the trunk saw it squashed to a square of ``input_size`` pixels).
"""

from __future__ import annotations

from dataclasses import dataclass
import torch

from adapters.backbones.feature_names import map_feature
from adapters.dense_heads import DenseHead, build_dense_head, check_dense_header
from adapters.errors import InvalidAdapter
from adapters.source_size import source_size
from adapters.tasks.base import BatchFeatures, TaskType


@dataclass
class DenseOutputs:
    """One task's head outputs: ``raw[r] [n_out, h, w]`` (CPU float32) per row at ``stride``
    of a square ``input_size`` input, each row's image ``(width, height)`` as decoded and as
    the caller sent it (larger when decoding reduced it: adapters/source_size.py)."""

    raw: list[torch.Tensor]
    stride: int
    input_size: int
    image_sizes: list[tuple[int, int]]
    source_sizes: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.raw)


class DenseTaskType(TaskType):
    """A task whose head reads spatial maps; subclasses set :meth:`n_out` and :meth:`rows`."""

    features = "maps"
    kinds: tuple[str, ...] = ("head", "lora", "top_layers")
    """Adapter kinds a dense task may be: its dense head on the frozen maps (``head``), on
    maps through its own LoRA deltas on the trunk's convolutions (``lora``), or on maps whose
    deepest blocks are its own copy (``top_layers``: the blocks up to its deepest map)."""
    heads: frozenset[str] = frozenset({"fpn"})
    """The ``dense.head`` architectures whose outputs this type can read."""

    def n_out(self, m) -> int:
        """Output channels of the head for ``m``."""
        raise NotImplementedError

    def output_names(self, m) -> list[str]:
        return list(m.labels)

    def check_manifest(self, m) -> list[str]:
        problems = []
        if not m.labels:
            problems.append(f"a {self.name} task needs 'labels' (its classes)")
        if len(set(m.labels)) != len(m.labels):
            problems.append(f"labels must be unique, got {m.labels}")
        if m.dense is None:
            problems.append(f"a {self.name} task needs 'dense' (strides, in_channels, width)")
        if m.head is not None:
            problems.append(f"a {self.name} task has no pooled 'head'; its head is 'dense'")
        if m.dense is not None and m.dense.head not in self.heads:
            problems.append(f"dense.head {m.dense.head!r} is not a {self.name} head; use one of {sorted(self.heads)}")
        if m.kind not in self.kinds:
            problems.append(f"kind {m.kind!r} is not supported for {self.name} tasks yet; use one of "
                            f"{list(self.kinds)}")
        return problems

    def from_peft(self, n_outputs: int, names: list[str] | None) -> dict:
        raise InvalidAdapter(f"a plain PEFT folder cannot be a {self.name} task")

    def describe(self, m) -> dict:
        return {"labels": list(m.labels), "dense": m.dense.model_dump()}

    def check_head(self, m, header: dict, backbone) -> None:
        check_dense_header(m.dense, self.n_out(m), header, backbone.map_channels)

    def build_head(self, m, tensors):
        return build_dense_head(m.dense, self.n_out(m), tensors)

    def input_size(self, m) -> int | None:
        return m.dense.input_size

    def needs(self, m) -> set[str]:
        return {map_feature(s) for s in m.dense.strides}

    def score(self, calls: list[tuple], features: BatchFeatures) -> list[DenseOutputs]:
        out = []
        for a, rows in calls:
            head: DenseHead = a.head
            maps = [features.maps[s][rows] for s in a.manifest.dense.strides]  # [rows, c, h, w] each
            raw = head(maps).float().cpu()  # [rows, n_out, h, w]
            size = maps[0].shape[-1] * a.manifest.dense.strides[0]
            images = [features.inputs[r] for r in rows]
            out.append(DenseOutputs(list(raw), head.stride, size, [_image_size(x, size) for x in images],
                                    [_image_size(x, size, sent=True) for x in images]))
        return out


def _image_size(image, size: int, sent: bool = False) -> tuple[int, int]:
    """``(width, height)`` of the caller's image as decoded, or as sent (``sent``); the input
    size when it is not a PIL image."""
    if not (hasattr(image, "size") and isinstance(image.size, tuple)):
        return (size, size)
    return source_size(image) if sent else tuple(image.size)

