"""Kinds' changes held on the shared model over a run of trunk blocks, let go at a pause.

A chunk that runs block by block (:mod:`adapters.kinds.stepwise`, :mod:`adapters.kinds.piecewise`)
keeps its kinds' changes (LoRA deltas in forward hooks, one adapter's merged weights) applied
for as many blocks as it can, and gives them up only when a pause is due: the shared model is
then exactly as found while other work runs, and the changes are applied again before the
next block. The chunk's own state between blocks is its hidden states ``[rows, seq, hidden]``
(or ``[rows, c, h, w]``) and its mask, held by the caller; nothing else needs saving.

>>> held = Held([], None)
>>> with held:
...     held.between_blocks(None)  # no pause offered: nothing happens
"""

from __future__ import annotations

import contextlib

from adapters.kinds.base import KindBatch, Pause


class Held:
    """``kinds``' changes for a forward over chunk ``rows`` (None: the whole chunk)."""

    def __init__(self, kinds: list[KindBatch], rows: list[int] | None):
        self.kinds = kinds
        self.rows = rows
        self._stack: contextlib.ExitStack | None = None

    def __enter__(self) -> "Held":
        self._apply()
        return self

    def __exit__(self, *exc) -> None:
        self._release()

    def _apply(self) -> None:
        stack = contextlib.ExitStack()
        try:
            for k in self.kinds:
                stack.enter_context(k.applied(self.rows))
        except BaseException:
            stack.close()
            raise
        self._stack = stack

    def _release(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def between_blocks(self, pause: Pause | None) -> bool:
        """If ``pause`` is due: release the changes, let it run, apply them again. Returns
        whether it ran. The cost when nothing is due is ``pause.due()``."""
        if pause is None or not pause.due():
            return False
        self._release()
        try:
            pause.run()
        finally:
            self._apply()
        return True


def let_pause(pause: Pause | None) -> bool:
    """A pause between blocks where nothing is applied to the shared model."""
    if pause is None or not pause.due():
        return False
    pause.run()
    return True
