"""PNG plots of a dense run that travel with the adapter (matplotlib, Agg backend): the training
loss per epoch, the detector's precision-recall curve at IoU 0.5 (pycocotools' accumulated
precision, the numbers behind its mAP@.5), the segmenter's per-class IoU bars, and the served
answers drawn on the first held-out images (predicted boxes beside the true ones; predicted
masks beside the true ones)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: servers and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

_PNG_META = {"Software": None}  # keep bytes stable across matplotlib versions
DRAWN = 4
"""How many held-out images the prediction plots draw."""


def _save(fig, path: Path) -> Path:
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=100, metadata=_PNG_META)
    plt.close(fig)
    return path


def plot_dense_loss(history: list[float], path: Path, title: str, loss_name: str) -> Path:
    """The mean training loss per epoch (no validation split: the last epoch is kept)."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(np.arange(1, len(history) + 1), history, marker="o", markersize=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel(loss_name)
    ax.set_title(title)
    return _save(fig, path)


def plot_pr(recall: np.ndarray, precision: dict[str, np.ndarray], path: Path, title: str) -> Path:
    """Precision against recall per label (``precision[label]``: one value per recall point;
    NaN where COCOeval has none: the label has no true box)."""
    fig, ax = plt.subplots(figsize=(5, 4))
    for label, p in precision.items():
        if not np.isnan(p).all():
            ax.plot(recall, p, label=label)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return _save(fig, path)


def plot_iou_bars(iou: dict[str, float | None], path: Path, title: str) -> Path:
    """Each label's IoU as a bar (a label absent from truth and prediction: no bar, marked n/a)."""
    names = list(iou)
    vals = [v if v is not None else 0.0 for v in iou.values()]
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(names) + 2), 3.5))
    bars = ax.bar(range(len(names)), vals, color="tab:blue")
    for b, v in zip(bars, iou.values()):
        ax.text(b.get_x() + b.get_width() / 2, b.get_height() + 0.01, "n/a" if v is None else f"{v:.2f}",
                ha="center", fontsize=7)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("IoU")
    ax.set_title(title)
    return _save(fig, path)


def draw_boxes(images: list, answers: list[list[dict]], truths: list[tuple], path: Path, title: str,
               min_score: float) -> Path:
    """The first images with the answered boxes at or above ``min_score`` (red, with label and score)
    and the true boxes (green): ``truths[i] = (boxes [n, 4], label names [n])``."""
    n = min(DRAWN, len(images))
    fig, axes = plt.subplots(1, n, figsize=(3 * n, 3.2), squeeze=False)
    for ax, img, ans, (tb, tl) in zip(axes[0], images, answers, truths):
        ax.imshow(img)
        for (x0, y0, x1, y1), label in zip(tb, tl):
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="lime", linewidth=1))
        for d in ans:
            if d["score"] < min_score:
                continue
            x0, y0, x1, y1 = d["box"]
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="red", linewidth=1))
            ax.text(x0, y0, f"{d['label']} {d['score']:.2f}", color="red", fontsize=6, va="bottom")
        ax.axis("off")
    fig.suptitle(f"{title}: answered (red, score >= {min_score:g}) and true (green)", fontsize=8)
    return _save(fig, path)


def draw_masks(images: list, predicted: list[np.ndarray], true: list[np.ndarray], label_names: list[str],
               path: Path, title: str) -> Path:
    """The first images (top), their answered masks (middle) and true masks (bottom), one colour
    per label (the legend names them)."""
    n, n_labels = min(DRAWN, len(images)), len(label_names)
    fig, axes = plt.subplots(3, n, figsize=(2.6 * n, 7.5), squeeze=False)
    cmap = plt.get_cmap("tab20", max(n_labels, 2))
    for j in range(n):
        axes[0][j].imshow(images[j])
        axes[1][j].imshow(predicted[j], cmap=cmap, vmin=0, vmax=max(n_labels - 1, 1), interpolation="nearest")
        axes[2][j].imshow(true[j], cmap=cmap, vmin=0, vmax=max(n_labels - 1, 1), interpolation="nearest")
        for r in range(3):
            axes[r][j].axis("off")
    axes[1][0].set_title("answered", fontsize=8, loc="left")
    axes[2][0].set_title("true", fontsize=8, loc="left")
    fig.legend(handles=[Patch(color=cmap(k), label=name) for k, name in enumerate(label_names)],
               loc="lower center", ncol=min(n_labels, 6), fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)
