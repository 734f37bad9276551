"""Each task type's evaluation plot, as a PNG beside the adapter (training only).

matplotlib (Agg backend) is imported by these functions' module only, which only training
code reaches, so serving never loads it. PNG metadata carries no timestamp.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: servers and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

_PNG_META = {"Software": None}  # keep bytes stable across matplotlib versions


def plot_confusion(confusion: list[list[int]], labels: list[str], path: Path, title: str) -> Path:
    """Row-normalised confusion matrix with the raw counts written in each cell."""
    cm = np.asarray(confusion, dtype=np.float64)
    rates = cm / np.clip(cm.sum(1, keepdims=True), 1, None)
    k = len(labels)
    size = max(4.0, 0.5 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata=_PNG_META)
    plt.close(fig)
    return path


def plot_predicted_vs_true(y_true, y_pred, names: list[str], metrics, path: Path, title: str) -> Path:
    """One scatter per output: predicted against true values, the diagonal, and R² / MAE."""
    t, p = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    k = len(names)
    fig, axes = plt.subplots(1, k, figsize=(4 * k, 4), squeeze=False)
    for j, (ax, name) in enumerate(zip(axes[0], names)):
        ax.scatter(t[:, j], p[:, j], s=6, alpha=0.4)
        lo, hi = float(min(t[:, j].min(), p[:, j].min())), float(max(t[:, j].max(), p[:, j].max()))
        ax.plot([lo, hi], [lo, hi], color="grey", linestyle=":")
        per = metrics.per_output.get(name, {})
        ax.set_title(f"{name}: R\u00b2 {per.get('r2', float('nan')):.3f}, MAE {per.get('mae', float('nan')):.3f}",
                     fontsize=9)
        ax.set_xlabel("true")
        ax.set_ylabel("predicted")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata=_PNG_META)
    plt.close(fig)
    return path
