"""The domain-adaptation interface: how a source head becomes a head for a target domain.

A method gets the source head, the source domain's feature statistics and the target
domain's first-layer inputs (unlabelled), and returns the adapted head. Adding a method is
one new file with a subclass and one entry in :data:`training.domain.ADAPTATIONS`; the
adapt run (:mod:`training.adapt`), its CLI and its HTTP job name no method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from adapters.errors import InvalidInput
from adapters.heads import Head
from training.domain.stats import FeatureStats


@dataclass(frozen=True)
class AdaptConfig:
    """Settings of one adaptation run."""

    method: str = "coral"
    shrinkage: float = 0.1  # CORAL: covariance shrinkage towards the mean variance (0 = none)
    seed: int = 0
    feature_batch_size: int = 64
    progress: bool = True

    def __post_init__(self):
        if not 0.0 <= self.shrinkage <= 10.0:
            raise InvalidInput(f"shrinkage must be between 0 and 10, got {self.shrinkage}; 0.1 is the default")


class AdaptationMethod:
    """One way to adapt a head to a target domain from unlabelled inputs."""

    name: ClassVar[str]
    trunk_changed: ClassVar[bool] = False
    """Whether the adapted version changes the trunk (LoRA, top layers) or only the head."""
    recipe: ClassVar[str] = ""
    """The model card's paragraph (``str.format`` fields: ``source_rows``, ``target_rows``, ``shrinkage``)."""

    def adapt(self, head: Head, source: FeatureStats, target_features: torch.Tensor,
              cfg: AdaptConfig) -> Head:
        """The adapted head; ``target_features [rows, dim]`` are first-layer inputs."""
        raise NotImplementedError
