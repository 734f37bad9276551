"""A CPU-time-weighted stack sampler for one server process, for ``python -m bench profile``.

Every ``interval_s`` a daemon thread reads each Python thread's own CPU clock
(``time.pthread_getcpuclockid``) and its current stack (``sys._current_frames``): each
thread's CPU time is summed exactly per role, and split over the *stages* its stacks were
caught working in (:func:`stage_of`, :class:`StackSampler`). So a stage's total is CPU time,
not wall time: a thread that waits, or that other processes keep off the cores, adds
nothing, which keeps the split meaningful on a loaded machine. The process's whole CPU time is recorded too; what no Python thread used
(torch's extra intra-op threads, the tokenizer's own threads) is the difference.

Totals are cumulative and written as JSON to ``<out>.<pid>`` every ``dump_s``, so a bench
reads them before and after a load phase and divides the difference by the requests.
The sampler's own thread is left out (its cost: a stack walk per thread per sample, with the
GIL held, and a shorter switch interval: a few % of one core).

>>> stage_of([("/x/fastapi/routing.py", "serialize_response"), ("/x/json/encoder.py", "encode")], "MainThread")
'response validation + serialisation'
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

# (path fragment, function name or None, stage): the innermost frame that matches decides.
_RULES: list[tuple[str, str | None, str]] = [
    # batch worker
    ("adapters/backbones/", "preprocess", "tokenisation"),
    ("adapters/backbones/", "token_windows", "tokenisation"),
    ("transformers/tokenization", None, "tokenisation"),
    ("adapters/kinds/", None, "trunk forward"),
    ("torch/nn/", None, "trunk forward"),
    ("transformers/models/", None, "trunk forward"),
    ("adapters/runtime.py", "_trunk", "trunk: gather, plan, reorder"),
    ("adapters/runtime.py", "_score", "heads"),
    ("adapters/heads", None, "heads"),
    ("adapters/tasks/", "score", "heads"),
    ("adapters/runtime.py", "_result", "answers (per-row results)"),
    ("adapters/tasks/", None, "answers (per-row results)"),
    ("adapters/runtime.py", "prepare", "prepare (resolve, pin)"),
    ("adapters/runtime.py", "prepare_embed", "prepare (resolve, pin)"),
    ("adapters/runtime.py", None, "runtime: rows and grouping"),
    ("adapters/batching.py", "_take", "batcher: queue"),
    ("adapters/batching.py", "submit", "batcher: queue"),
    ("adapters/batching.py", None, "batcher: completing futures"),
    # request side
    ("service/inputs.py", None, "input checks"),
    ("service/metrics.py", None, "metrics"),
    ("prometheus_client/", None, "metrics"),
    ("bentoml/metrics", None, "metrics"),
    ("service/tracing.py", None, "tracing spans"),
    ("opentelemetry/", None, "BentoML middleware (tracing, metrics, ASGI)"),
    ("service/rollouts.py", None, "rollout observe"),
    ("fastapi/routing.py", "serialize_response", "response validation + serialisation"),
    ("fastapi/encoders.py", None, "response validation + serialisation"),
    ("starlette/responses.py", None, "response validation + serialisation"),
    ("fastapi/dependencies/", None, "request parsing + validation"),
    ("fastapi/_compat", None, "request parsing + validation"),
    ("json/decoder.py", None, "request parsing + validation"),
    ("json/encoder.py", None, "response validation + serialisation"),
    ("service/service.py", None, "route code (service.py)"),
    ("service/engine.py", None, "route code (engine.py)"),
    ("service/routes_", None, "route code (routes_*.py)"),
    ("service/middleware.py", None, "middleware (ours)"),
    ("service/auth.py", None, "middleware (ours)"),
    ("service/v2_binary.py", None, "middleware (ours)"),
    ("service/protocol_errors.py", None, "middleware (ours)"),
    ("service/query_params.py", None, "middleware (ours)"),
    ("bentoml/", None, "BentoML middleware (tracing, metrics, ASGI)"),
    ("starlette/", None, "Starlette/FastAPI routing"),
    ("fastapi/", None, "Starlette/FastAPI routing"),
    ("uvicorn/", None, "HTTP parsing + writing (uvicorn)"),
    ("h11/", None, "HTTP parsing + writing (uvicorn)"),
    ("httptools/", None, "HTTP parsing + writing (uvicorn)"),
    ("anyio/", None, "thread hand-offs (anyio, futures)"),
    ("concurrent/futures/", None, "thread hand-offs (anyio, futures)"),
    ("asyncio/", None, "event loop"),
    ("threading.py", None, "threads idle / other"),
    ("queue.py", None, "threads idle / other"),
]


def stage_of(stack: list[tuple[str, str]], thread_name: str) -> str:
    """The stage of a stack given outermost first as ``(filename, function)``."""
    return where(stack, thread_name)[0]


def where(stack: list[tuple[str, str]], thread_name: str) -> tuple[str, str]:
    """``(stage, "path/tail.py:function")`` of the innermost frame a rule matches."""
    for filename, func in reversed(stack):
        path = filename.replace("\\", "/")
        for frag, fn, stage in _RULES:
            if frag in path and (fn is None or fn == func):
                return stage, f"{'/'.join(path.split('/')[-2:])}:{func}"
    top = stack[-1] if stack else ("?", "?")
    return f"other ({thread_name})", f"{'/'.join(top[0].split('/')[-2:])}:{top[1]}"


def _stack(frame) -> list[tuple[str, str]]:
    out = []
    while frame is not None:
        out.append((frame.f_code.co_filename, frame.f_code.co_name))
        frame = frame.f_back
    out.reverse()
    return out


IDLE = {"event loop", "threads idle / other", "thread hand-offs (anyio, futures)", "batcher: queue"}
"""Stages a thread sits in while it waits: a sample there is not counted as work."""


def role_of(thread_name: str) -> str:
    if thread_name == "MainThread":
        return "event loop thread"
    if thread_name == "taskswap-batcher":
        return "batch worker thread"
    if thread_name.startswith("AnyIO worker"):
        return "anyio worker threads"
    return "other threads"


class StackSampler:
    """``StackSampler(out).start()``; totals in ``<out>.<pid>`` (JSON) every ``dump_s``.

    Per thread *role* (event loop, batch worker, anyio workers, others) the exact CPU time
    (the sum of each thread's CPU clock increments); per role and stage the number of
    samples that caught a thread of that role *working* there (its CPU clock moved since the
    last sample and its stack is not in a waiting stage, :data:`IDLE`). A role's CPU is split
    over its stages in proportion to those samples (:func:`split`): the classic sampling
    estimate, CPU-based because only running threads are counted and the total is the
    threads' own clocks. The sampler shortens the interpreter's switch interval so it gets
    the GIL every ``switch_s`` and catches threads inside their work, not only where they
    release the GIL.
    """

    def __init__(self, out: str | Path, interval_s: float = 0.001, dump_s: float = 0.5, switch_s: float = 0.0005):
        self.out = Path(f"{out}.{os.getpid()}")
        self.interval_s, self.dump_s, self.switch_s = interval_s, dump_s, switch_s
        self.cpu_ns: dict[str, int] = {}
        self.hits: dict[str, dict[str, int]] = {}
        self.detail: dict[str, int] = {}  # working samples per innermost matched frame
        self.samples = 0

    def start(self) -> "StackSampler":
        sys.setswitchinterval(self.switch_s)
        threading.Thread(target=self._loop, name="stack-sampler", daemon=True).start()
        return self

    def _loop(self) -> None:
        me = threading.get_ident()
        last: dict[int, int] = {}
        next_dump = time.monotonic() + self.dump_s
        while True:
            time.sleep(self.interval_s)
            names = {t.ident: t.name for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                try:
                    now = time.clock_gettime_ns(time.pthread_getcpuclockid(ident))
                except (OSError, OverflowError):  # the thread just ended
                    continue
                prev, last[ident] = last.get(ident), now
                if prev is None or now <= prev:
                    continue
                name = names.get(ident, "?")
                role = role_of(name)
                self.cpu_ns[role] = self.cpu_ns.get(role, 0) + now - prev
                stage, at = where(_stack(frame), name)
                if stage not in IDLE:
                    hits = self.hits.setdefault(role, {})
                    hits[stage] = hits.get(stage, 0) + 1
                    self.detail[at] = self.detail.get(at, 0) + 1
            self.samples += 1
            if time.monotonic() >= next_dump:
                self._dump()
                next_dump = time.monotonic() + self.dump_s

    def _dump(self) -> None:
        data = {"process_cpu_ns": time.process_time_ns(), "sampler_cpu_ns": time.thread_time_ns(),
                "samples": self.samples,
                "roles_cpu_ns": self.cpu_ns, "hits": self.hits,
                "detail": self.detail}
        tmp = self.out.with_suffix(self.out.suffix + ".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.out)


def split(before: dict, after: dict) -> dict[str, dict[str, float]]:
    """CPU ns per role and stage between two dumps: each role's CPU over its stages in
    proportion to the working samples there (a role with no working sample: ``(unplaced)``).

    >>> a = {"roles_cpu_ns": {"r": 100}, "hits": {"r": {"x": 1}}}
    >>> split(a, {"roles_cpu_ns": {"r": 500}, "hits": {"r": {"x": 4, "y": 1}}})
    {'r': {'x': 300.0, 'y': 100.0}}
    """
    out: dict[str, dict[str, float]] = {}
    for role, cpu in after["roles_cpu_ns"].items():
        spent = cpu - before["roles_cpu_ns"].get(role, 0)
        old = before.get("hits", {}).get(role, {})
        hits = {k: v - old.get(k, 0) for k, v in after.get("hits", {}).get(role, {}).items()}
        hits = {k: v for k, v in hits.items() if v > 0}
        n = sum(hits.values())
        out[role] = {k: spent * v / n for k, v in hits.items()} if n else {"(unplaced)": float(spent)}
    return out


def start_from_env(var: str = "TASKSWAP_BENCH_PROFILE") -> StackSampler | None:
    """Start a sampler writing to ``$var`` when it is set (the profiled service calls this)."""
    out = os.environ.get(var)
    return StackSampler(out).start() if out else None
