"""Training progress on stderr, the same for every trainer.

On a terminal (stderr is a TTY) each epoch shows a step bar (tqdm) with the batch loss and
the last validation headline (accuracy, R², token accuracy, chrF...); a trainer whose epochs
take a while (``epoch_lines=True``: LoRA, top layers, taggers, generation) also leaves one
summary line per epoch above the bar. Anywhere else (a log file, ``make serve``, a job's
``stderr.log``, CI) there are no bars and no carriage returns: exactly one line per epoch,
flushed, so a log reads like a table and grows while the run does.

What the trainer kept is said once at the end, in the words of the selection rule that chose
it (:func:`kept_line`): "kept epoch 3 of 6 (by highest validation accuracy)", never "lowest
validation loss" when a headline chose it.

    p = Progress("lora", epochs=10, headline_name="accuracy")
    for epoch in range(1, 11):
        with p.epoch(epoch, steps=len(batches)) as bar:
            for batch in batches:
                ...
                bar.step(loss)
        p.epoch_done(epoch, train_loss, val_loss, val_headline)
    p.kept(best_epoch, epochs_run, "highest validation accuracy")
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
import time
from typing import Iterator, TextIO

from tqdm.auto import tqdm

LOWEST_LOSS = "lowest validation loss"
LAST_EPOCH = "last epoch"


def highest(headline_name: str) -> str:
    """The rule that keeps the best validation headline, in words.

    >>> highest("R²")
    'highest validation R²'
    """
    return f"highest validation {headline_name}"


def kept_line(best_epoch: int, epochs_run: int, kept_by: str) -> str:
    """What a trainer kept, in the words of the rule that chose it.

    >>> kept_line(3, 6, "highest validation accuracy")
    'kept epoch 3 of 6 (by highest validation accuracy)'
    """
    return f"kept epoch {best_epoch} of {epochs_run} (by {kept_by})"


def is_tty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


class _Counter:
    """Work done so far (:func:`work`): a tqdm bar on a TTY, a count elsewhere."""

    def __init__(self, bar):
        self._bar, self.done = bar, 0

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)


@contextmanager
def work(total: int, desc: str, enabled: bool = True, unit: str = "ex",
         stream: TextIO | None = None) -> Iterator[_Counter]:
    """Progress of work that is not epochs (features, evaluation batches): a bar on a TTY;
    elsewhere one line when it ends ("features: 3000 ex in 24.1 s"), no carriage returns."""
    stream = stream if stream is not None else sys.stderr
    if enabled and is_tty(stream):
        with tqdm(total=total, desc=desc, unit=unit, leave=False, file=stream) as bar:
            yield _Counter(bar)
        return
    start, counter = time.perf_counter(), _Counter(None)
    yield counter
    if enabled:
        stream.write(f"{desc}: {counter.done} {unit} in {time.perf_counter() - start:.1f} s\n")
        stream.flush()


class _Bar:
    """The steps of one epoch: a tqdm bar on a TTY, nothing elsewhere."""

    def __init__(self, bar, headline: str | None):
        self._bar, self._headline = bar, headline

    def step(self, loss: float) -> None:
        if self._bar is None:
            return
        post = {"loss": f"{float(loss):.4f}"}
        if self._headline is not None:
            post["val"] = self._headline
        self._bar.set_postfix(post, refresh=False)
        self._bar.update(1)


class Progress:
    """One training run's progress (see the module docstring). ``enabled=False``: silent
    (``--quiet``, server jobs). ``stream``: default ``sys.stderr``, read when created."""

    mininterval = 0.1  # seconds between bar redraws on a TTY (tqdm's default)

    def __init__(self, desc: str, epochs: int, headline_name: str | None = None, enabled: bool = True,
                 epoch_lines: bool = True, stream: TextIO | None = None):
        self.desc, self.epochs, self.headline_name = desc, epochs, headline_name
        self.enabled, self.stream = enabled, stream if stream is not None else sys.stderr
        self.tty = is_tty(self.stream)
        self.epoch_lines = epoch_lines or not self.tty  # off a TTY the epoch line is the only output
        self._last: str | None = None  # the last validation headline, shown on the next bar

    @contextmanager
    def epoch(self, epoch: int, steps: int) -> Iterator[_Bar]:
        """The bar of one epoch's ``steps`` batches (call ``.step(loss)`` after each)."""
        if not (self.enabled and self.tty):
            yield _Bar(None, None)
            return
        with tqdm(total=steps, desc=f"{self.desc} epoch {epoch}/{self.epochs}", unit="step",
                  leave=False, file=self.stream, dynamic_ncols=True, mininterval=self.mininterval) as bar:
            yield _Bar(bar, self._last)

    def epoch_done(self, epoch: int, train_loss: float, val_loss: float | None = None,
                   headline: float | None = None, note: str = "") -> None:
        """One line for the epoch: train loss, validation loss and headline when there are."""
        if headline is not None and self.headline_name is not None:
            self._last = f"{self.headline_name} {headline:.4f}"
        parts = [f"train loss {train_loss:.4f}"]
        if val_loss is not None:
            parts.append(f"val loss {val_loss:.4f}")
        if self._last is not None and headline is not None:
            parts.append(f"val {self._last}")
        if note:
            parts.append(note)
        if self.epoch_lines:
            self.write(f"{self.desc} epoch {epoch}/{self.epochs}: " + ", ".join(parts))

    def kept(self, best_epoch: int, epochs_run: int, kept_by: str) -> None:
        self.write(f"{self.desc}: {kept_line(best_epoch, epochs_run, kept_by)}")

    def write(self, line: str) -> None:
        if not self.enabled:
            return
        if self.tty:
            tqdm.write(line, file=self.stream)
        else:
            self.stream.write(line + "\n")
            self.stream.flush()
