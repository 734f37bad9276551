"""Feature statistics of a domain: the mean and covariance of what a head's first layer reads.

A ``head`` adapter records them for its training data in ``source_stats.safetensors`` (keys
``mean [dim]``, ``cov [dim, dim]``, ``rows [1]``), so a later domain adaptation needs only
unlabelled target inputs. "What the first layer reads" is the pooled feature, L2-normalised
first when the head's spec says ``normalize`` (the head normalises before its first layer),
so an affine map on these features folds exactly into that layer.

The file is optional: adapters trained before it existed (or by other tools) have none, and
adapting them needs the source inputs again (``taskswap adapt --source-data``).
Size: ``4 * dim * (dim + 1)`` bytes: 0.6 MB for MiniLM (384), 6.6 MB for MobileNetV2 (1280).

Example::

    >>> import torch
    >>> s = FeatureStats.of(torch.randn(100, 3))
    >>> s.mean.shape, s.cov.shape, s.rows
    (torch.Size([3]), torch.Size([3, 3]), 100)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from adapters.errors import InvalidAdapter, InvalidInput
from adapters.file_modes import make_readable

STATS_FILE = "source_stats.safetensors"


@dataclass(frozen=True)
class FeatureStats:
    mean: torch.Tensor  # [dim] float64
    cov: torch.Tensor  # [dim, dim] float64, population covariance
    rows: int

    @classmethod
    def of(cls, features: torch.Tensor) -> "FeatureStats":
        """Statistics of ``features [rows, dim]`` (at least two rows)."""
        if features.ndim != 2 or len(features) < 2:
            raise InvalidInput(f"feature statistics need at least 2 rows, got {tuple(features.shape)}")
        x = features.double()
        mean = x.mean(0)
        centred = x - mean
        return cls(mean, centred.T @ centred / len(x), len(x))

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def save(self, folder: Path) -> Path:
        path = Path(folder) / STATS_FILE
        save_file({"mean": self.mean.float().contiguous(), "cov": self.cov.float().contiguous(),
                   "rows": torch.tensor([self.rows], dtype=torch.int64)}, str(path))
        make_readable(Path(folder))
        return path

    @classmethod
    def load(cls, folder: Path) -> "FeatureStats | None":
        """The folder's recorded statistics, or None when it has none."""
        path = Path(folder) / STATS_FILE
        if not path.is_file():
            return None
        try:
            t = load_file(str(path))
            stats = cls(t["mean"].double(), t["cov"].double(), int(t["rows"][0]))
        except Exception as exc:
            raise InvalidAdapter(f"{path} is not a readable statistics file (mean, cov, rows): {exc}") from exc
        if stats.cov.shape != (stats.dim, stats.dim) or not torch.isfinite(stats.cov).all():
            raise InvalidAdapter(f"{path}: cov is {tuple(stats.cov.shape)} or not finite; expected "
                                 f"[{stats.dim}, {stats.dim}] finite numbers")
        return stats


def first_layer_inputs(features: torch.Tensor, normalize: bool) -> torch.Tensor:
    """What a head's first linear layer reads for pooled ``features [rows, dim]``."""
    return nn.functional.normalize(features, dim=-1) if normalize else features
