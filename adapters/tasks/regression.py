"""``regression``: one or more named real-valued outputs per input.

The manifest names the outputs (``"outputs": ["valence", "arousal"]``) instead of labels and
may carry ``target_scaling`` — ``{"valence": {"mean": 5.1, "std": 1.2}, ...}`` — when the
head was trained on standardised targets: the served value is ``raw * std + mean``, in the
units of the training data. Answers ``{"values": {"valence": 7.3, ...}}``; trained with MSE
on standardised targets; metrics MAE, RMSE, R² and Spearman per output.
"""

from __future__ import annotations

import math

import torch

from adapters.tasks.base import RowResult, TaskType


class Regression(TaskType):
    name = "regression"
    activation = "identity"
    outputs_word = "outputs"
    loss_words = "mean squared error on standardised targets"
    loss_name = "MSE (standardised)"
    headline_name = "R²"
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

    # ---- training: MSE on standardised targets; metrics in the targets' units --------
    def target_scaling(self, data) -> dict:
        t = torch.tensor(data.values, dtype=torch.float64)  # [n, outputs]
        std = t.std(0, unbiased=False)
        std = torch.where(std > 1e-12, std, torch.ones_like(std))
        return {k: {"mean": float(m), "std": float(s)} for k, m, s in zip(data.label_names, t.mean(0), std)}

    def targets(self, data, scaling=None) -> torch.Tensor:
        t = torch.tensor(data.values, dtype=torch.float64)  # [n, outputs]
        if scaling:
            mean, std = _scaling_of(scaling, data.label_names)
            t = (t - mean) / std
        return t.float()

    def loss(self, logits, targets):
        return torch.nn.functional.mse_loss(logits, targets)

    def headline(self, logits, targets) -> float:
        """R² (mean over outputs) on the standardised targets."""
        sse = ((logits - targets) ** 2).sum(0)
        sst = ((targets - targets.mean(0)) ** 2).sum(0).clamp_min(1e-12)
        return float((1 - sse / sst).mean())

    def outputs(self, logits, scaling=None):
        if not scaling:
            return logits.float()
        mean, std = _scaling_of(scaling, list(scaling))
        return (logits.double() * std + mean).float()

    def eval_loss(self, outputs, data) -> float:
        """Mean squared error in the targets' units."""
        return float(torch.nn.functional.mse_loss(outputs.double(), torch.tensor(data.values, dtype=torch.float64)))

    def metrics(self, data, outputs, loss=None):
        """MAE / RMSE / R² / Spearman of ``outputs [n, outputs]`` (target units) on ``data``."""
        from adapters.tasks.metrics import regression_metrics  # training only: no sklearn in the server
        return regression_metrics(data.values, outputs.tolist(), data.label_names, loss)

    def manifest_fields(self, names, scaling) -> dict:
        return {"outputs": list(names), "target_scaling": scaling}

    def plot(self, data, outputs, metrics, path, title):
        from adapters.tasks.plots import plot_predicted_vs_true  # training only: no matplotlib in the server
        plot_predicted_vs_true(data.values, outputs.tolist(), list(data.label_names), metrics,
                               path / "predicted_vs_true.png", f"{title}: predicted vs true")
        return "predicted_vs_true.png"


def _scaling_of(scaling: dict, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor([float(scaling[k]["mean"]) for k in names], dtype=torch.float64)
    std = torch.tensor([float(scaling[k]["std"]) for k in names], dtype=torch.float64)
    return mean, std


def _scaling(m) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, std)`` per output ``[outputs]`` (float64); identity without ``target_scaling``."""
    if not m.target_scaling:
        return torch.zeros(len(m.outputs), dtype=torch.float64), torch.ones(len(m.outputs), dtype=torch.float64)
    return _scaling_of(m.target_scaling, m.outputs)
