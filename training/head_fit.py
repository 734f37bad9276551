"""Fit a linear or MLP head on frozen features, with early stopping on validation loss.

Features are standardised (per-dimension mean/std of the training rows) while fitting,
which makes one learning rate work across backbones whose feature scales differ by
orders of magnitude; the standardisation is then folded into the first layer
(``W' = W / std``, ``b' = b - W' @ mean``), so the saved head takes raw features exactly
as the server computes them and needs no extra parameters on disk.

Example::

    >>> import torch
    >>> from adapters.format import HeadSpec
    >>> x = torch.randn(40, 4); y = (x[:, 0] > 0).long()
    >>> fit = fit_head(HeadSpec(pooling="mean", input_dim=4), 2, x, y, x, y,
    ...                HeadFitConfig(epochs=100, lr=0.05), progress=False)
    >>> float((fit.head(x).argmax(1) == y).float().mean()) > 0.9
    True
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from adapters.format import HeadSpec
from adapters.heads import Head
from training.init_from import WarmStart, unfold_into
from training.progress import LOWEST_LOSS, Progress
from training.tasks import TrainingTask, training_task


@dataclass
class HeadFitConfig:
    epochs: int = 200
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    patience: int = 10  # epochs without a better validation loss before stopping
    seed: int = 0


@dataclass
class History:
    """Per-epoch curves; ``best_epoch`` is 1-based (the weights that were kept)."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    best_epoch: int = 0
    kept_by: str = LOWEST_LOSS  # the selection rule that chose best_epoch, in words (training.progress)
    stopped_early: bool = False
    rows_seen: int = 0  # training rows passed through the model (epochs x rows, cut epochs counted)
    time_capped: bool = False  # stopped by max_train_minutes rather than by patience or epochs

    def to_dict(self) -> dict:
        return {"train_loss": self.train_loss, "val_loss": self.val_loss,
                "val_accuracy": self.val_accuracy, "best_epoch": self.best_epoch, "kept_by": self.kept_by,
                "stopped_early": self.stopped_early, "rows_seen": self.rows_seen,
                "time_capped": self.time_capped}


@dataclass
class HeadFit:
    head: Head  # eval mode, takes raw (unstandardised) features
    history: History


class EarlyStopping:
    """Keeps the state of the lowest validation loss; ``step`` returns True when it is time to stop."""

    rule = LOWEST_LOSS  # what chose the kept epoch, in words

    def __init__(self, patience: int):
        self.patience = patience
        self.best = float("inf")
        self.best_epoch = 0
        self.state = None
        self._bad = 0

    def step(self, epoch: int, val_loss: float, state: dict, headline: float = 0.0) -> bool:
        """``headline`` is ignored (the interface of the fine-tuning loop's other stoppers)."""
        if val_loss < self.best - 1e-6:
            self.best, self.best_epoch, self._bad = val_loss, epoch, 0
            self.state = copy.deepcopy(state)
            return False
        self._bad += 1
        return self._bad >= self.patience



def train_epochs(cfg, n_train: int, opt: torch.optim.Optimizer,
                 batch_loss: Callable[[list[int]], tuple[torch.Tensor, int]],
                 validate: Callable[[], tuple[float, float]], snapshot: Callable[[], dict],
                 set_train: Callable[[bool], None], desc: str = "tagger") -> tuple[History, EarlyStopping]:
    """The epoch loop that keeps the state of the lowest validation loss (the token taggers').

    Each epoch shuffles ``range(n_train)`` (``cfg.seed``) into batches of ``cfg.batch_size``
    indices; ``batch_loss(indices)`` returns the batch loss and the rows (or words) it
    averages; ``validate()`` returns ``(val loss, headline)`` after the epoch, in eval mode
    (``set_train``); ``snapshot()`` is the state kept while it is the best. Stops after
    ``cfg.patience`` epochs without a lower loss, or mid-epoch at ``cfg.max_train_minutes``.
    Progress (``cfg.progress``): :class:`training.progress.Progress` named ``desc``.
    The caller loads ``stop.state``.
    """
    stop, hist = EarlyStopping(cfg.patience), History()
    progress = Progress(desc, cfg.epochs, training_task(cfg.task_type).headline_name, cfg.progress)
    gen = torch.Generator().manual_seed(cfg.seed)
    deadline = None if cfg.max_train_minutes is None else time.monotonic() + 60 * cfg.max_train_minutes
    steps = (n_train + cfg.batch_size - 1) // cfg.batch_size
    for epoch in range(1, cfg.epochs + 1):
        set_train(True)
        order = torch.randperm(n_train, generator=gen).tolist()
        total, seen = 0.0, 0
        with progress.epoch(epoch, steps) as bar:
            for start in range(0, len(order), cfg.batch_size):
                loss, n = batch_loss(order[start:start + cfg.batch_size])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * n
                seen += n
                bar.step(float(loss.detach()))
                if deadline is not None and time.monotonic() > deadline:
                    hist.time_capped = True
                    break
        hist.rows_seen += seen
        set_train(False)
        val_loss, headline = validate()
        hist.train_loss.append(total / max(seen, 1))
        hist.val_loss.append(val_loss)
        hist.val_accuracy.append(headline)
        progress.epoch_done(epoch, hist.train_loss[-1], val_loss, headline,
                            "stopped by max_train_minutes" if hist.time_capped else "")
        if stop.step(epoch, val_loss, snapshot()) or hist.time_capped:
            hist.stopped_early = not hist.time_capped
            break
    hist.best_epoch, hist.kept_by = stop.best_epoch, stop.rule
    progress.kept(hist.best_epoch, len(hist.train_loss), hist.kept_by)
    return hist, stop

STD_FLOOR = 0.1  # a dimension's std is taken as at least this share of the median std


def standardiser(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension ``(mean, std)`` of ``x [rows, dim]``; constant dimensions get std 1.

    Nearly constant dimensions get ``STD_FLOOR`` times the median std instead of their own:
    folded into the head, ``1 / std`` becomes a raw weight, and a weight hundreds of times
    the others turns a tiny feature change into a huge logit. LoRA moves exactly those
    features, and one optimiser step on a warm-started head blew the loss from 0.007 to 130
    on the tiny MobileNetV2 before this floor (0.007 -> 1.6 after).
    """
    mean = x.mean(0)
    std = x.std(0, unbiased=False)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return mean, std.clamp_min(STD_FLOOR * float(std.median()))


def fold_standardisation(head: Head, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Make ``head(x)`` equal the trained ``head((x - mean) / std)`` (in place, first layer)."""
    first = head.linear_layers()[0]
    with torch.no_grad():
        w = first.weight / std  # [out, in] / [in]
        first.bias.copy_(first.bias - w @ mean)
        first.weight.copy_(w)


def _features_for_head(spec: HeadSpec, x: torch.Tensor) -> torch.Tensor:
    # Head.forward normalises before its first layer; standardise what that layer sees.
    return nn.functional.normalize(x, dim=-1) if spec.normalize else x


def evaluate_head(head: Head, x: torch.Tensor, y: torch.Tensor, task: TrainingTask | None = None
                  ) -> tuple[float, float]:
    """(mean loss, headline) of ``head`` on ``x [rows, dim]``, targets ``y``: cross-entropy and
    accuracy for classification (the default), the task type's own otherwise."""
    task = task or training_task("single_label")
    with torch.no_grad():
        logits = head(x)
        return float(task.loss(logits, y)), task.headline(logits, y)


def fit_head(spec: HeadSpec, n_labels: int, train_x: torch.Tensor, train_y: torch.Tensor,
             val_x: torch.Tensor, val_y: torch.Tensor, cfg: HeadFitConfig,
             progress: bool = True, task: TrainingTask | None = None, init: WarmStart | None = None) -> HeadFit:
    """Train ``Head(spec, n_labels)`` with AdamW and the task type's loss (cross-entropy by
    default); keep the epoch with the lowest val loss. ``init``: start from another task's
    head (shared labels' rows; :mod:`training.init_from`) instead of a fresh one."""
    task = task or training_task("single_label")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    mean, std = standardiser(_features_for_head(spec, train_x))
    # The head sees standardised features during fitting: normalise -> standardise -> net.
    std_spec = spec.model_copy(update={"normalize": False})
    head = Head(std_spec, n_labels)
    if init is not None:
        unfold_into(head, init, mean, std)
    prep = lambda x: (_features_for_head(spec, x) - mean) / std  # noqa: E731
    tx, vx = prep(train_x), prep(val_x)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    stop, hist = EarlyStopping(cfg.patience), History()
    # epochs of a head on cached features take milliseconds: no summary line per epoch on a TTY
    bars = Progress("head", cfg.epochs, task.headline_name, progress, epoch_lines=False)
    steps = (len(tx) + cfg.batch_size - 1) // cfg.batch_size
    for epoch in range(1, cfg.epochs + 1):
        head.train()
        order = torch.randperm(len(tx), generator=gen)
        total = 0.0
        with bars.epoch(epoch, steps) as bar:
            for start in range(0, len(tx), cfg.batch_size):
                idx = order[start:start + cfg.batch_size]
                loss = task.loss(head(tx[idx]), train_y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
                bar.step(float(loss.detach()))
        hist.rows_seen += len(tx)
        head.eval()
        val_loss, val_acc = evaluate_head(head, vx, val_y, task)
        hist.train_loss.append(total / len(tx))
        hist.val_loss.append(val_loss)
        hist.val_accuracy.append(val_acc)
        bars.epoch_done(epoch, hist.train_loss[-1], val_loss, val_acc)
        if stop.step(epoch, val_loss, head.state_dict()):
            hist.stopped_early = True
            break
    head.load_state_dict(stop.state)
    hist.best_epoch, hist.kept_by = stop.best_epoch, stop.rule
    bars.kept(hist.best_epoch, len(hist.train_loss), hist.kept_by)
    final = Head(spec, n_labels)  # the real spec (normalize as asked) with folded weights
    final.load_state_dict(head.state_dict())
    fold_standardisation(final, mean, std)
    return HeadFit(final.eval().requires_grad_(False), hist)
