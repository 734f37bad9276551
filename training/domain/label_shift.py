"""Prior (label) shift: re-estimate the target class prior by EM, fold the ratio into the bias.

Under label shift ``p_t(x | y) = p_s(x | y)`` and only the class prior moves, so a calibrated
source posterior becomes the target's by reweighting (Saerens, Latinne & Decaestecker,
"Adjusting the Outputs of a Classifier to New a Priori Probabilities", Neural Computation
2002)::

    p_t(y | x)  ∝  p_s(y | x) · p_t(y) / p_s(y)

``p_t(y)`` is unknown; EM finds it from unlabelled target inputs alone: the E-step reweights
every row's posterior with the current estimate, the M-step sets the estimate to the mean of
those posteriors, until it stops moving. The posteriors must be calibrated first
(:mod:`training.calibration`: temperature + per-class bias on the source validation split;
``p_s`` is the prior that calibrated head implies there).

Calibration and reweighting are ``softmax(z / T + b + log(p_t / p_s))`` of the head's logits
``z``: the last linear layer's weights divided by ``T`` and its bias moved, exactly. The
adapted version is an ordinary head and serves at zero extra cost.

Example (a calibrated source with prior 1/2 : 1/2 meets targets that are 80% class 0)::

    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> y = (torch.rand(4000, generator=g) < 0.2).long()               # target labels, prior 0.8 / 0.2
    >>> x = torch.randn(4000, generator=g) + 2.0 * y                    # class means 0 and 2, unit variance
    >>> logit = 2.0 * x - 2.0                                           # exact posterior logit at prior 1/2
    >>> log_post = torch.stack([torch.zeros_like(logit), logit], 1).log_softmax(1)
    >>> prior, _ = em_prior(log_post, torch.tensor([0.5, 0.5]))
    >>> [round(p, 1) for p in prior.tolist()]
    [0.8, 0.2]
"""

from __future__ import annotations

import torch

from adapters.heads import Head

PRIOR_FLOOR = 1e-4  # no class's estimated prior goes below this (its log ratio stays finite)


def em_prior(log_posteriors: torch.Tensor, source_prior: torch.Tensor, max_iterations: int = 100,
             tolerance: float = 1e-6) -> tuple[torch.Tensor, int]:
    """``(target prior [classes] float64, iterations run)`` from calibrated source
    ``log_posteriors [rows, classes]`` of unlabelled target rows (Saerens et al. 2002)."""
    lp = log_posteriors.double()
    ps = source_prior.double().clamp_min(PRIOR_FLOOR)
    pt = ps.clone()
    it = 0
    for it in range(1, max_iterations + 1):
        post = (lp + (pt / ps).log()).softmax(-1)  # E-step: [rows, classes]
        new = post.mean(0).clamp_min(PRIOR_FLOOR)  # M-step
        new = new / new.sum()
        done = float((new - pt).abs().max()) < tolerance
        pt = new
        if done:
            break
    return pt, it


def fold_prior_shift(head: Head, temperature: float, bias: torch.Tensor) -> Head:
    """A copy of ``head`` whose logits are ``head``'s divided by ``temperature`` plus ``bias
    [classes]`` (the calibration's bias + ``log(p_t / p_s)``): only the last layer changes."""
    folded = Head(head.spec, head.linear_layers()[-1].out_features)
    folded.load_state_dict(head.state_dict())
    last = folded.linear_layers()[-1]
    with torch.no_grad():
        last.weight.copy_((last.weight.double() / temperature).float())
        last.bias.copy_((last.bias.double() / temperature + bias.double()).float())
    return folded.eval().requires_grad_(False)
