"""PNG plots that travel with an adapter: loss curves and the confusion matrix.

matplotlib's Agg backend (no display needed); PNG metadata carries no timestamp, so the
same curves give the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: servers and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

_PNG_META = {"Software": None}  # keep bytes stable across matplotlib versions


def plot_loss_curves(history: dict, path: Path, title: str) -> Path:
    """Train/validation loss (left axis) and validation accuracy (right axis) per epoch."""
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = np.arange(1, len(history["train_loss"]) + 1)
    ax.plot(epochs, history["train_loss"], label="train loss")
    ax.plot(epochs, history["val_loss"], label="validation loss")
    if history.get("best_epoch"):
        ax.axvline(history["best_epoch"], color="grey", linestyle=":", label="kept (best val loss)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy")
    ax2 = ax.twinx()
    ax2.plot(epochs, history["val_accuracy"], color="tab:green", alpha=0.6, label="validation accuracy")
    ax2.set_ylabel("accuracy")
    ax2.set_ylim(0, 1)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="center right", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata=_PNG_META)
    plt.close(fig)
    return path


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
