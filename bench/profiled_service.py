"""Taskswap's service with :mod:`bench.stack_sampler` running in its worker, for
``python -m bench profile``: ``bentoml serve bench.profiled_service:Taskswap`` with
``TASKSWAP_BENCH_PROFILE=/path/prefix`` writes ``/path/prefix.<pid>`` per process.

The service object is the project's own, unchanged; only the sampler thread is added.
"""

from __future__ import annotations

from bench.stack_sampler import start_from_env
from service.service import Taskswap

__all__ = ["Taskswap"]

start_from_env()
