"""Validation loss and chrF per epoch of a generation run (a PNG beside the adapter)."""

from __future__ import annotations

from pathlib import Path

from training.plots import plot_loss_curves

PLOT_FILE = "loss_curves.png"


def plot_generation_curves(history: dict, out: Path, title: str) -> str | None:
    """Train/validation loss and validation chrF (drawn on 0–1: chrF / 100) per epoch."""
    if not history.get("train_loss"):
        return None
    curves = {"train_loss": history["train_loss"], "val_loss": history["val_loss"],
              "val_accuracy": [c / 100 for c in history["val_chrf"]], "best_epoch": history["best_epoch"],
              "kept_by": history["kept_by"],
              "loss_name": "cross-entropy per completion token", "headline_name": "chrF / 100"}
    plot_loss_curves(curves, Path(out) / PLOT_FILE, title)
    return PLOT_FILE
