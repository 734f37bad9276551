"""The service's side of a generation: resolve the task, queue the sequence, read its events
on the event loop, and cancel it when the client goes away.

The decode engine (:mod:`adapters.generation.engine`) runs on its own thread; its events are
handed to the request's event loop with ``call_soon_threadsafe``. A request waits for its
sequence to be *admitted* (KV cache reserved) before any response starts, so a full budget
is a plain 429 with ``Retry-After`` even for a stream. A client that disconnects (a stream
closed, or a connection that dropped, checked at most every half second while tokens flow
and while they do not) cancels its sequence: the engine drops it and frees its cache at its next step.
"""

from __future__ import annotations

import asyncio
import time

import anyio
from pydantic import BaseModel, field_validator

from adapters.generation.events import Admitted, Completion, Delta, Failed, Finished, GenerationHandle
from adapters.generation.requests import Overrides
from service.errors import PredictTimeout

POLL_S = 0.5  # how often a waiting non-streamed request checks its connection



class SamplingBounds(BaseModel):
    """The bounds the request models' sampling fields share, checked in code rather than in
    the schema: ``top_p`` above 0 (an exclusive minimum is draft-2020 syntax inside an
    OpenAPI 3.0 document, which its own draft, and a fuzzer reading it, rejects) and
    ``seed`` below 2**63 (as a JSON Schema number 2**63 is a float, which fuzzers trip on).
    A value outside is a 422 naming the field."""

    @field_validator("top_p", check_fields=False)
    @classmethod
    def _positive_top_p(cls, v):
        if v is not None and v <= 0:
            raise ValueError("top_p must be above 0")
        return v

    @field_validator("seed", check_fields=False)
    @classmethod
    def _int64_seed(cls, v):
        if v is not None and v >= 2 ** 63:
            raise ValueError("seed must be below 2**63")
        return v


class Generation:
    """One running generation as the route sees it: ``task`` / ``version`` that answer, and
    its events on the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, metrics=None):
        self._loop = loop
        self._queue: asyncio.Queue = asyncio.Queue()
        self.handle: GenerationHandle | None = None
        self.adapter = None
        self.metrics = metrics
        self._queued_at = time.perf_counter()
        self._first: float | None = None  # seconds to the first token
        self._last: float | None = None
        self._gaps: list[float] = []  # between tokens
        self._checked = time.monotonic()  # when the connection was last checked

    def resolved(self, adapter) -> None:
        """The task version that answers, known before its first event."""
        self.adapter = adapter

    def sink(self, event) -> None:  # called on the engine's thread
        if isinstance(event, Delta):
            now = time.perf_counter()
            if self._first is None:
                self._first = now - self._queued_at
            else:
                self._gaps.append(now - self._last)
            self._last = now
        elif isinstance(event, Finished) and self.metrics is not None and self.adapter is not None:
            # here, not in events(): a cancelled sequence's end arrives after its reader left
            self.metrics.observe_finish(self.adapter.name, event.reason)
        self._loop.call_soon_threadsafe(self._queue.put_nowait, event)

    @property
    def prompt_tokens(self) -> int:
        return len(self.handle.request.prompt_ids)

    async def _next(self, request=None, deadline: float | None = None):
        while True:
            now = time.monotonic()
            if request is not None and now - self._checked > POLL_S:  # also while tokens flow
                self._checked = now
                if await request.is_disconnected():
                    self.cancel()
                    raise asyncio.CancelledError("the client disconnected")
            if deadline is not None and now > deadline:
                self.cancel()
                raise PredictTimeout("the generation did not finish within predict_timeout_s "
                                     "(TASKSWAP_PREDICT_TIMEOUT_S); ask for fewer tokens")
            try:
                return await asyncio.wait_for(self._queue.get(), POLL_S)
            except asyncio.TimeoutError:
                continue

    async def admitted(self, request=None) -> None:
        """Wait until the sequence has its KV cache; raise its ``CapacityError`` (429) otherwise."""
        ev = await self._next(request)
        if isinstance(ev, Failed):
            raise ev.error
        assert isinstance(ev, Admitted), ev

    async def events(self, request=None, deadline: float | None = None):
        """:class:`Delta` events, then the :class:`Finished` one; a failure is raised."""
        while True:
            ev = await self._next(request, deadline)
            if isinstance(ev, Failed):
                raise ev.error
            if isinstance(ev, Finished) and self.metrics is not None:
                self.metrics.observe_generation(self.adapter.name, self._first, self._gaps,
                                                ev.prompt_tokens, ev.completion_tokens)
            yield ev
            if isinstance(ev, Finished):
                return

    async def complete(self, request=None, deadline: float | None = None) -> Completion:
        text, ids, lps = [], [], []
        async for ev in self.events(request, deadline):
            if isinstance(ev, Delta):
                text.append(ev.text)
                ids += ev.token_ids
                lps += ev.logprobs
            else:
                return Completion("".join(text), ids, lps, ev.reason, ev.prompt_tokens, ev.completion_tokens)
        raise RuntimeError("unreachable")

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()


async def start_generation(engine, model: str, prompt: str | None = None, messages: list[dict] | None = None,
                           overrides: Overrides = Overrides(), request=None) -> Generation:
    """Resolve ``model`` (``task`` or ``task@version``), queue its sequence and wait for its
    admission; the caller reads :meth:`Generation.events` and cancels on the way out."""
    gen = Generation(asyncio.get_running_loop(), engine.metrics)
    # resolving may load an evicted LoRA from the store, tokenising takes a moment: off the loop
    key = request.headers.get(engine.settings.routing_header) if request is not None else None
    gen.adapter, gen.handle = await anyio.to_thread.run_sync(
        lambda: engine.start_generation(model, prompt, messages, overrides, gen.sink, gen.resolved, key))
    try:
        await gen.admitted(request)
    except BaseException:
        gen.cancel()
        raise
    return gen


async def generate_all(engine, tasks: list[str], prompts: list[str], request=None, timeout_s: float = 120.0):
    """``/predict`` on generation tasks: every prompt through every task, decoded together;
    returns ``[(adapter, [Completion per prompt])]`` in task order. One failure cancels the rest."""
    deadline = time.monotonic() + timeout_s
    started: list[Generation] = []

    async def one(task: str, prompt: str) -> Completion:
        gen = await start_generation(engine, task, prompt=prompt, request=request)
        started.append(gen)
        return await gen.complete(request, deadline)

    try:
        per_task = []
        for task in tasks:
            per_task.append(asyncio.gather(*(one(task, p) for p in prompts)))
        done = await asyncio.gather(*per_task)
    finally:
        for gen in started:
            gen.cancel()
    adapters = {g.adapter.name: g.adapter for g in started}
    return [(adapters[t], completions) for t, completions in zip(tasks, done)]
