"""The domain-adaptation interface: how a source head becomes a version for a target domain.

A method gets an :class:`AdaptContext` (the source head and manifest, the source domain's
feature statistics, the target domain's unlabelled inputs and their first-layer features,
the backbone) and returns an :class:`Adapted`: a head, and for a method that changes the
trunk, the trained PEFT model and how it scores inputs. Adding a method is one new file
with a subclass and one entry in :data:`training.domain.ADAPTATIONS`; the adapt run
(:mod:`training.adapt`), its CLI and its HTTP job name no method.

A method that can also *refine* another's result (``refines``: it changes only the head of
an :class:`Adapted`, e.g. a prior-shift bias) composes after one: :mod:`training.domain.composed`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar

import torch

from adapters.backbones.base import Backbone
from adapters.errors import InvalidInput
from adapters.format import Manifest
from adapters.heads import Head
from training.calibration import Calibration
from training.export import write_head_dir
from training.feature_stats import FeatureStats


@dataclass(frozen=True)
class AdaptConfig:
    """Settings of one adaptation run (each method reads its own; the manifest records all)."""

    method: str = "coral"
    shrinkage: float = 0.1  # CORAL: covariance shrinkage towards the mean variance (0 = none)
    seed: int = 0
    feature_batch_size: int = 64
    progress: bool = True
    # trunk-adapting methods (pseudo_label): LoRA on the trunk trained on the target inputs
    epochs: int = 2  # passes over the target inputs
    lr: float = 5e-4  # LoRA factors, AdamW, linear decay
    batch_size: int = 16
    lora_r: int = 8
    lora_alpha: int = 16
    keep_fraction: float = 0.5  # per predicted class, the most confident share kept as pseudo-labels
    entropy_weight: float = 1.0  # weight of the mean prediction entropy over every target row
    # label_shift: EM over the calibrated source posteriors of the target inputs
    em_iterations: int = 100  # at most; it stops when no class's prior moves by 1e-6

    def __post_init__(self):
        problems = []
        if not 0.0 <= self.shrinkage <= 10.0:
            problems.append(f"shrinkage must be between 0 and 10, got {self.shrinkage}; 0.1 is the default")
        if not 1 <= self.epochs <= 50:
            problems.append(f"epochs must be between 1 and 50, got {self.epochs}")
        if not 0.0 < self.lr <= 0.1:
            problems.append(f"lr must be in (0, 0.1], got {self.lr}")
        if not 1 <= self.batch_size <= 512:
            problems.append(f"batch_size must be between 1 and 512, got {self.batch_size}")
        if not 1 <= self.lora_r <= 256 or not 1 <= self.lora_alpha <= 1024:
            problems.append(f"lora_r must be 1-256 and lora_alpha 1-1024, got {self.lora_r} and {self.lora_alpha}")
        if not 0.0 < self.keep_fraction <= 1.0:
            problems.append(f"keep_fraction must be in (0, 1], got {self.keep_fraction}; 0.5 is the default")
        if not 0.0 <= self.entropy_weight <= 100.0:
            problems.append(f"entropy_weight must be between 0 and 100, got {self.entropy_weight}")
        if not 1 <= self.em_iterations <= 10000:
            problems.append(f"em_iterations must be between 1 and 10000, got {self.em_iterations}")
        InvalidInput.collect(problems, "adaptation settings")


@dataclass
class AdaptContext:
    """What a method adapts from."""

    head: Head  # the source head, eval mode, frozen
    manifest: Manifest  # the source version's
    source: FeatureStats | None  # the source domain's first-layer feature statistics (None: not needed)
    target_inputs: list  # unlabelled target texts / file paths
    target_features: torch.Tensor  # [rows, dim] what the head's first layer reads, frozen trunk
    backbone: Backbone
    calibration: Calibration | None = None  # the source head's, on its validation split (None: not needed)


@dataclass
class Adapted:
    """A method's result: the new head, and for a trunk-adapting method its PEFT model."""

    head: Head
    peft_model: object | None = None  # PEFT model over a copy of the trunk (kind lora), else None
    predict: Callable[[list], torch.Tensor] | None = None  # served outputs of inputs, when not head-on-frozen
    notes: dict = field(default_factory=dict)  # what the manifest's adaptation record adds


class AdaptationMethod:
    """One way to adapt a head to a target domain from unlabelled inputs."""

    name: ClassVar[str]
    kind: ClassVar[str] = "head"
    """The adapter kind the adapted version is (``head``: the trunk is unchanged)."""
    trunk_changed: ClassVar[bool] = False
    """Whether the adapted version changes the trunk (LoRA, top layers) or only the head."""
    needs_source_stats: ClassVar[bool] = True
    """Whether it reads the source domain's feature statistics (``ctx.source``; None otherwise)."""
    needs_calibration: ClassVar[bool] = False
    """Whether it reads the source head's calibration (``ctx.calibration``; None otherwise)."""
    refines: ClassVar[bool] = False
    """Whether :meth:`refine` can take another method's result (it may come second in a composition)."""
    task_types: ClassVar[tuple[str, ...] | None] = None
    """Task types it can adapt (None: any pooled one)."""
    recipe: ClassVar[str] = ""
    """The model card's paragraph (``str.format`` fields: the :class:`AdaptConfig` fields,
    ``source_rows``, ``target_rows``)."""

    def run(self, ctx: AdaptContext, cfg: AdaptConfig) -> Adapted:
        """The adapted version's parts; by default :meth:`adapt` on the head alone."""
        return Adapted(self.adapt(ctx.head, ctx.source, ctx.target_features, cfg))

    def refine(self, ctx: AdaptContext, adapted: Adapted, cfg: AdaptConfig) -> Adapted:
        """``adapted`` with this method applied on top (methods with ``refines`` only)."""
        raise NotImplementedError

    def adapt(self, head: Head, source: FeatureStats, target_features: torch.Tensor,
              cfg: AdaptConfig) -> Head:
        """The adapted head; ``target_features [rows, dim]`` are first-layer inputs."""
        raise NotImplementedError

    def card_lines(self, notes: dict) -> list[str]:
        """Model-card lines on what this run found (``notes``: the :class:`Adapted`'s)."""
        return []

    def write(self, out: Path, manifest: Manifest, card: str, adapted: Adapted) -> None:
        """Write the adapted version's folder (a head adapter by default)."""
        write_head_dir(out, manifest, adapted.head, card)
