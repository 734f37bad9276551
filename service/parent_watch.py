"""A BentoML worker ends itself when the ``bentoml serve`` process that started it dies.

Killed with SIGKILL, the serving process cannot stop its workers: they are reparented and
keep the listening socket, so the port stays taken and a restart cannot bind it. A worker
therefore watches its parent: once ``os.getppid()`` is no longer the process that started
it, the worker kills itself (its fit children follow: they hold a parent-death signal). A watchdog thread, not ``PR_SET_PDEATHSIG``, because that signal
follows the *thread* that forked the worker, which the server's arbiter does not promise
to keep alive.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

log = logging.getLogger("taskswap.parent_watch")
POLL_S = 0.5


def watch_parent(poll_s: float = POLL_S) -> threading.Thread:
    """Start the watchdog (a daemon thread); returns it."""
    parent = os.getppid()

    def run() -> None:
        stop = threading.Event()
        while not stop.wait(poll_s):
            if os.getppid() != parent:
                log.error("the serving process %d is gone; this worker exits so its port is freed",
                          parent)
                os.kill(os.getpid(), signal.SIGKILL)  # no clean-up can run without a parent anyway
    thread = threading.Thread(target=run, name="taskswap-parent-watch", daemon=True)
    thread.start()
    return thread
