"""PNG plots that travel with an adapter: loss curves here; each task type's evaluation plot
(confusion matrix, predicted vs true) in :mod:`adapters.tasks.plots`, re-exported.

matplotlib's Agg backend (no display needed); PNG metadata carries no timestamp, so the
same curves give the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: servers and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from adapters.tasks.plots import plot_confusion, plot_predicted_vs_true  # noqa: E402,F401
from training.progress import kept_line  # noqa: E402

_PNG_META = {"Software": None}  # keep bytes stable across matplotlib versions


def plot_loss_curves(history: dict, path: Path, title: str) -> Path:
    """Train/validation loss (left axis) and the validation headline (right axis) per epoch;
    the kept epoch marked with the rule that chose it (``history["kept_by"]``)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = np.arange(1, len(history["train_loss"]) + 1)
    ax.plot(epochs, history["train_loss"], label="train loss")
    ax.plot(epochs, history["val_loss"], label="validation loss")
    if history.get("best_epoch"):
        ax.axvline(history["best_epoch"], color="grey", linestyle=":",
                   label=kept_line(history["best_epoch"], len(history["train_loss"]), history["kept_by"]))
    ax.set_xlabel("epoch")
    ax.set_ylabel(history.get("loss_name", "cross-entropy"))
    ax2 = ax.twinx()
    headline = history.get("headline_name", "accuracy")
    ax2.plot(epochs, history["val_accuracy"], color="tab:green", alpha=0.6, label=f"validation {headline}")
    ax2.set_ylabel(headline)
    ax2.set_ylim(min(0.0, min(history["val_accuracy"], default=0.0)), 1)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="center right", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata=_PNG_META)
    plt.close(fig)
    return path
