"""A BentoML worker ends itself when the ``bentoml serve`` process that started it dies.

Killed with SIGKILL, the serving process cannot stop its workers: they are reparented and
keep the listening socket, so the port stays taken and a restart cannot bind it. A worker
therefore watches its parent: once ``os.getppid()`` is no longer the process that started
it, the worker stops itself — SIGTERM first, so the requests in flight are answered (the
server stops as on any SIGTERM), then SIGKILL after ``GRACE_S`` if it is still there — and
its fit children follow (they hold a parent-death signal). A watchdog thread, not
``PR_SET_PDEATHSIG``, because that signal follows the *thread* that forked the worker, which
the server's arbiter does not promise to keep alive.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

log = logging.getLogger("taskswap.parent_watch")
POLL_S = 0.5
GRACE_S = 10.0


def watch_parent(poll_s: float = POLL_S, grace_s: float = GRACE_S) -> threading.Thread:
    """Start the watchdog (a daemon thread); returns it."""
    parent = os.getppid()

    def run() -> None:
        stop = threading.Event()
        while not stop.wait(poll_s):
            if os.getppid() != parent:
                log.error("the serving process %d is gone; this worker stops so its port is freed "
                          "(requests in flight first, at most %.0f s)", parent, grace_s)
                os.kill(os.getpid(), signal.SIGTERM)  # a graceful stop: answers in flight go out
                time.sleep(grace_s)  # still running: the graceful stop hung
                os.kill(os.getpid(), signal.SIGKILL)
    thread = threading.Thread(target=run, name="taskswap-parent-watch", daemon=True)
    thread.start()
    return thread
