"""A shadow candidate for a generation task: it decodes the same prompt off the response path
and only the comparison is kept.

The caller's sequence is queued as usual; its events pass through :meth:`ShadowPair.primary`
on their way to the caller. Once it is admitted, the candidate's sequence is queued as a
*background* sequence of the decode engine (:meth:`DecodeEngine.submit_background`): it uses
only room no caller's sequence wants, at most ``max_background`` at once, and is stopped
whenever a caller's sequence waits. When both have finished, the pair folds into the
task's :class:`adapters.shadow.ShadowStats` (same tokens or not, the share of positions
that agree, the candidate's token count); a pair whose candidate could not run (engine full,
preempted, failed) or whose caller went away counts as *skipped*. The caller's answer never
waits for the candidate, and a candidate's failure never reaches the caller.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from adapters.generation.events import Admitted, Delta, Failed, Finished

log = logging.getLogger("taskswap.generation")


@dataclass
class _Side:
    tokens: list[int] = field(default_factory=list)
    reason: str | None = None  # the Finished reason; "failed" for a Failed event


class ShadowPair:
    """One caller's sequence and its candidate's.

    ``start_candidate()`` queues the candidate (returns its handle or None when the engine
    has no spare room); ``stats`` is the task's :class:`ShadowStats`; ``sink`` the caller's.
    """

    def __init__(self, stats, sink, start_candidate):
        self.stats, self.sink, self._start = stats, sink, start_candidate
        self._lock = threading.Lock()
        self._active, self._candidate = _Side(), _Side()
        self._handle = None
        self._done = False

    def primary(self, event) -> None:
        """The caller's events: forwarded at once, and watched."""
        self.sink(event)
        if isinstance(event, Admitted):
            self._launch()
        self._record(self._active, event)

    def candidate(self, event) -> None:
        self._record(self._candidate, event)

    def _launch(self) -> None:
        try:
            self._handle = self._start(self.candidate)
        except Exception as exc:  # noqa: BLE001  (a candidate never fails the caller)
            log.warning("shadow candidate of %s not started: %s", self.stats.task, exc)
            self._handle = None
        if self._handle is None:
            self._close(skipped=True)

    def _record(self, side: _Side, event) -> None:
        if isinstance(event, Delta):
            side.tokens += event.token_ids
            return
        if isinstance(event, Finished):
            side.reason = event.reason
        elif isinstance(event, Failed):
            side.reason = "failed"
        else:
            return
        if side is self._active and side.reason in ("cancelled", "failed"):
            if self._handle is None:  # never admitted: no candidate was started
                self._close(skipped=True)
                return
            self._handle.cancel()  # the caller went away: its candidate stops too
        if self._active.reason is not None and self._candidate.reason is not None:
            self._close(skipped=any(s.reason in ("cancelled", "failed", "preempted")
                                    for s in (self._active, self._candidate)))

    def _close(self, skipped: bool) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        if skipped:
            self.stats.skip()
        else:
            self.stats.observe_generation(self._active.tokens, self._candidate.tokens)
