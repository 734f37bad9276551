"""A worker whose serving process is SIGKILLed exits (service/parent_watch.py), with real
processes: a parent that starts a 'worker', the parent killed, the worker gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORKER = ("from service.parent_watch import watch_parent; import time; watch_parent(0.1); "
          "print('watching', flush=True); time.sleep(600)")
PARENT = textwrap.dedent(f"""
    import subprocess, sys, time
    w = subprocess.Popen([sys.executable, "-c", {WORKER!r}])
    print(w.pid, flush=True)
    time.sleep(600)
""")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie holds no socket and runs no code


def test_a_worker_exits_when_its_parent_is_sigkilled():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], cwd=REPO, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    worker = int(parent.stdout.readline())
    try:
        assert parent.stdout.readline().strip() == "watching"  # the worker shares the pipe
        assert _alive(worker)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 60
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(worker), "the worker outlived its SIGKILLed parent"
    finally:
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)
