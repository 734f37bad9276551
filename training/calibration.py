"""Bias-corrected temperature scaling of a softmax head, fitted on its validation split.

A label-shift correction (:mod:`training.domain.label_shift`) reweights a classifier's
posteriors by ``p_t(y) / p_s(y)``; that is only right when the posteriors are calibrated.
Trained heads are not (early stopping on a small split leaves them over- or
under-confident), so ``taskswap train --method head`` fits, on the validation split it
already holds out, a temperature ``T`` and a per-class bias ``b`` minimising the negative
log-likelihood of ``log_softmax(logits / T + b)`` ("BCTS": Alexandari, Kundaje & Shrikumar,
"Maximum Likelihood with Bias-Corrected Calibration is Hard-To-Beat at Label Shift
Adaptation", ICML 2020), and records them in ``source_calibration.json`` with ``prior``:
the mean calibrated posterior on that split, i.e. the class prior the calibrated head
implies (at the optimum it equals the split's class frequencies up to the small bias
penalty).

Example::

    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> y = torch.randint(0, 3, (3000,), generator=g)
    >>> x = torch.randn(3000, 3, generator=g) + 2.0 * torch.nn.functional.one_hot(y, 3)
    >>> # 2 x is the exact log-posterior (up to a per-row constant): 6 x is three times too confident
    >>> cal = fit_calibration(6.0 * x, y)
    >>> 2.8 < cal.temperature < 3.2, cal.nll_after < cal.nll_before
    (True, True)
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from adapters.errors import InvalidAdapter
from adapters.file_modes import make_readable

CALIBRATION_FILE = "source_calibration.json"
T_RANGE = (0.05, 20.0)  # a tiny split can be separated perfectly; T -> 0 is no calibration
BIAS_PENALTY = 1e-3  # per row: keeps the bias finite when the split separates a class


@dataclass(frozen=True)
class Calibration:
    temperature: float
    bias: list[float]  # [classes]
    prior: list[float]  # [classes] mean calibrated posterior on the split it was fitted on
    rows: int
    nll_before: float  # mean negative log-likelihood on that split, uncalibrated
    nll_after: float

    def log_probs(self, log_probs: torch.Tensor) -> torch.Tensor:
        """Calibrated log-posteriors of uncalibrated ``log_probs [rows, classes]`` (or logits:
        a per-row constant does not change the result)."""
        return (log_probs.double() / self.temperature + torch.tensor(self.bias, dtype=torch.float64)
                ).log_softmax(-1)

    def save(self, folder: Path) -> Path:
        path = Path(folder) / CALIBRATION_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        make_readable(Path(folder))
        return path

    @classmethod
    def load(cls, folder: Path) -> "Calibration | None":
        """The folder's recorded calibration, or None when it has none."""
        path = Path(folder) / CALIBRATION_FILE
        if not path.is_file():
            return None
        try:
            cal = cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise InvalidAdapter(f"{path} is not a calibration record ({', '.join(cls.__dataclass_fields__)}): "
                                 f"{exc}") from exc
        nums = [cal.temperature, *cal.bias, *cal.prior]
        if len(cal.bias) != len(cal.prior) or not all(math.isfinite(x) for x in nums) or cal.temperature <= 0:
            raise InvalidAdapter(f"{path}: temperature must be > 0 and bias / prior finite lists of one length")
        return cal


def fit_calibration(logits: torch.Tensor, labels: torch.Tensor, steps: int = 200) -> Calibration:
    """Temperature + per-class bias minimising the NLL of ``labels [rows]`` under
    ``logits [rows, classes]`` (L-BFGS, float64)."""
    z, y = logits.detach().double(), labels.long()
    n, k = z.shape
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    lo, hi = math.log(T_RANGE[0]), math.log(T_RANGE[1])
    opt = torch.optim.LBFGS([log_t, bias], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def nll():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.clamp(lo, hi).exp() + bias, y) \
            + BIAS_PENALTY * (bias - bias.mean()).pow(2).sum()
        loss.backward()
        return loss
    opt.step(nll)
    t = float(log_t.detach().clamp(lo, hi).exp())
    b = (bias.detach() - bias.detach().mean())
    post = (z / t + b).softmax(-1)  # [rows, classes]
    before = float(torch.nn.functional.cross_entropy(z, y))
    after = float(torch.nn.functional.cross_entropy(z / t + b, y))
    return Calibration(t, b.tolist(), post.mean(0).tolist(), n, round(before, 6), round(after, 6))
