"""CORAL: align the target domain's feature statistics to the source's, folded into the head.

Sun, Feng & Saenko, "Return of Frustratingly Easy Domain Adaptation" (AAAI 2016) whiten one
domain's features and re-colour them with the other's covariance. Here the map goes from
target to source, ``z = A (x - mu_t) + mu_s`` with ``A = C_s^{1/2} C_t^{-1/2}``, so the
source head reads target features as if they were source features. The map is affine and
the head's first layer is linear, so it folds exactly (``W' = W A``, ``b' = b + W (mu_s -
A mu_t)``): the adapted version is an ordinary head and serves at zero extra cost.

Both covariances are shrunk towards ``shrinkage * mean variance * I`` first (the target set
may have fewer rows than dimensions, and the inverse square root needs a floor).

Example::

    >>> import torch
    >>> from training.feature_stats import FeatureStats
    >>> s, t = FeatureStats.of(torch.randn(500, 3)), FeatureStats.of(3 * torch.randn(500, 3) + 1)
    >>> a, c = coral_map(s, t, shrinkage=0.0)
    >>> z = (3 * torch.randn(20000, 3) + 1).double() @ a.T + c
    >>> bool((z.std(0) - 1).abs().max() < 0.1)
    True
"""

from __future__ import annotations

import torch

from adapters.heads import Head
from training.feature_stats import FeatureStats


def _shrunk(cov: torch.Tensor, shrinkage: float) -> torch.Tensor:
    d = cov.shape[0]
    floor = shrinkage * float(cov.diagonal().mean()) + 1e-8
    return cov + floor * torch.eye(d, dtype=cov.dtype)


def _sym_power(cov: torch.Tensor, power: float) -> torch.Tensor:
    """``cov ** power`` of a symmetric positive definite matrix (eigendecomposition)."""
    vals, vecs = torch.linalg.eigh(cov)
    vals = vals.clamp_min(float(vals.max()) * 1e-12)
    return (vecs * vals.pow(power)) @ vecs.T


def coral_map(source: FeatureStats, target: FeatureStats, shrinkage: float = 0.1
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A [dim, dim], c [dim])`` float64 with ``z = x @ A.T + c`` mapping target features to
    the source's mean and covariance."""
    a = _sym_power(_shrunk(source.cov, shrinkage), 0.5) @ _sym_power(_shrunk(target.cov, shrinkage), -0.5)
    return a, source.mean - a @ target.mean


def fold_affine(head: Head, a: torch.Tensor, c: torch.Tensor) -> Head:
    """A copy of ``head`` whose output on ``x`` equals ``head``'s on ``x @ a.T + c`` (the map
    applied to what the first layer reads, i.e. after the head's own normalisation)."""
    folded = Head(head.spec, head.linear_layers()[-1].out_features)
    folded.load_state_dict(head.state_dict())
    first = folded.linear_layers()[0]
    with torch.no_grad():
        w = first.weight.double()  # [out, dim]
        first.bias.copy_((first.bias.double() + w @ c).float())
        first.weight.copy_((w @ a).float())
    return folded.eval().requires_grad_(False)
