"""A background thread that keeps this process in step with the shared store.

Every ``interval_s`` it calls ``sync`` (the registry follows the store's generation:
registrations, rollbacks and deletions made by other replicas or workers). A failing
sync is logged and retried on the next tick; the thread never dies of it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

log = logging.getLogger("taskswap.watcher")


class StoreWatcher:
    """``StoreWatcher(registry.sync, 0.5).start()``; ``stop()`` joins it."""

    def __init__(self, sync: Callable[[], object], interval_s: float):
        self.sync = sync
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="taskswap-store-watcher", daemon=True)
        self._last_error_log = 0.0

    def start(self) -> "StoreWatcher":
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout=timeout_s)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sync()
            except Exception:  # e.g. the store briefly unreachable: try again next tick
                now = time.monotonic()
                if now - self._last_error_log > 30:  # at most one traceback per 30 s
                    self._last_error_log = now
                    log.exception("store sync failed; retrying every %.2fs", self.interval_s)
