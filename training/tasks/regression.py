"""``regression`` training: MSE on standardised targets; MAE, RMSE, R² (the headline) and
Spearman per output, in the targets' units; a predicted-vs-true plot."""

from __future__ import annotations

import torch

from adapters.tasks.metrics import regression_metrics
from adapters.tasks.plots import plot_predicted_vs_true
from adapters.tasks.regression import scaling_tensors
from training.tasks.base import TrainingTask


class RegressionTraining(TrainingTask):
    name = "regression"
    outputs_word = "outputs"
    loss_words = "mean squared error on standardised targets"
    loss_name = "MSE (standardised)"
    headline_name = "R²"
    headline_metric = "r2"
    real_valued = True

    def target_scaling(self, data) -> dict:
        t = torch.tensor(data.values, dtype=torch.float64)  # [n, outputs]
        std = t.std(0, unbiased=False)
        std = torch.where(std > 1e-12, std, torch.ones_like(std))
        return {k: {"mean": float(m), "std": float(s)} for k, m, s in zip(data.label_names, t.mean(0), std)}

    def targets(self, data, scaling=None) -> torch.Tensor:
        t = torch.tensor(data.values, dtype=torch.float64)  # [n, outputs]
        if scaling:
            mean, std = scaling_tensors(scaling, data.label_names)
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
        mean, std = scaling_tensors(scaling, list(scaling))
        return (logits.double() * std + mean).float()

    def eval_loss(self, outputs, data) -> float:
        """Mean squared error in the targets' units."""
        return float(torch.nn.functional.mse_loss(outputs.double(), torch.tensor(data.values, dtype=torch.float64)))

    def metrics(self, data, outputs, loss=None):
        """MAE / RMSE / R² / Spearman of ``outputs [n, outputs]`` (target units) on ``data``."""
        return regression_metrics(data.values, outputs.tolist(), data.label_names, loss)

    def manifest_fields(self, names, scaling) -> dict:
        return {"outputs": list(names), "target_scaling": scaling}

    def plot(self, data, outputs, metrics, path, title):
        plot_predicted_vs_true(data.values, outputs.tolist(), list(data.label_names), metrics,
                               path / "predicted_vs_true.png", f"{title}: predicted vs true")
        return "predicted_vs_true.png"
