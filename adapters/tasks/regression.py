"""``regression``: one or more named real-valued outputs per input.

The manifest names the outputs (``"outputs": ["valence", "arousal"]``) instead of labels and
may carry ``target_scaling`` — ``{"valence": {"mean": 5.1, "std": 1.2}, ...}`` — when the
head was trained on standardised targets: the served value is ``raw * std + mean``, in the
units of the training data. Answers ``{"values": {"valence": 7.3, ...}}``. Training (MSE on
standardised targets; MAE, RMSE, R², Spearman) is :mod:`training.tasks.regression`.
"""

from __future__ import annotations

import math

import torch

from adapters.tasks.base import RowResult, TaskType


class Regression(TaskType):
    name = "regression"
    activation = "identity"
    peft_problem_types = ("regression",)

    def output_names(self, m) -> list[str]:
        return list(m.outputs)

    def check_manifest(self, m) -> list[str]:
        problems = []
        if not m.outputs:
            problems.append("a regression task needs 'outputs': the names of its values, e.g. [\"rating\"]")
        if len(set(m.outputs)) != len(m.outputs):
            problems.append(f"outputs must be unique, got {m.outputs}")
        if m.labels:
            problems.append("a regression task has 'outputs', not 'labels'")
        if m.head is None:
            problems.append("a regression task needs 'head' (its pooling and shape)")
        scaling = m.target_scaling
        if scaling is not None:
            if not isinstance(scaling, dict) or set(scaling) != set(m.outputs):
                problems.append(f"target_scaling must map every output {m.outputs} to {{mean, std}}")
            else:
                for k, v in scaling.items():
                    ok = (isinstance(v, dict) and set(v) == {"mean", "std"}
                          and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                  and math.isfinite(x) for x in v.values()) and v["std"] > 0)
                    if not ok:
                        problems.append(f"target_scaling[{k!r}] must be {{\"mean\": <number>, "
                                        f"\"std\": <positive number>}}, got {v!r}")
        return problems

    def from_peft(self, n_outputs: int, names: list[str] | None) -> dict:
        return {"outputs": list(names) if names else
                (["value"] if n_outputs == 1 else [f"value_{i}" for i in range(n_outputs)])}

    def rename(self, names: list[str]) -> dict:
        return {"outputs": names}

    def describe(self, m) -> dict:
        return {"labels": [], "outputs": list(m.outputs), "target_scaling": m.target_scaling}

    def rows(self, adapter, out: torch.Tensor) -> list[RowResult]:
        names = adapter.manifest.outputs
        mean, std = _scaling(adapter.manifest)
        vals = (out.double() * std + mean).tolist()  # [rows, outputs] in the targets' units
        return [RowResult(values=dict(zip(names, v))) for v in vals]


def scaling_tensors(scaling: dict, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, std)`` ``[outputs]`` (float64) of a ``target_scaling`` map, in the order of ``names``."""
    mean = torch.tensor([float(scaling[k]["mean"]) for k in names], dtype=torch.float64)
    std = torch.tensor([float(scaling[k]["std"]) for k in names], dtype=torch.float64)
    return mean, std


def _scaling(m) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, std)`` per output ``[outputs]`` (float64); identity without ``target_scaling``."""
    if not m.target_scaling:
        return torch.zeros(len(m.outputs), dtype=torch.float64), torch.ones(len(m.outputs), dtype=torch.float64)
    return scaling_tensors(m.target_scaling, m.outputs)
