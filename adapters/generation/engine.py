"""The decode engine: iteration-level scheduling of many sequences on one frozen causal LM.

One thread per language-model backbone runs steps. Each step:

1. **retire and admit** — cancelled sequences (a client that went away) leave and free their
   KV reservation; waiting sequences are admitted in order while their reservation fits the
   budget (:class:`adapters.generation.kv.KvBudget`) and fewer than ``max_running`` run; a
   sequence that waited longer than ``queue_timeout_s`` fails with :class:`CapacityError`
   (429 + ``Retry-After`` over HTTP);
2. **one prefill chunk** — the oldest sequence whose prompt is not fully read runs at most
   ``prefill_chunk`` prompt tokens (so a long prompt costs running decodes one chunk's
   delay per step, never its whole length); its last chunk yields its first token;
3. **one decode step** — every prefilled, unfinished sequence runs its last token in one
   batched forward (left-padded caches, :func:`adapters.generation.kv.batched_cache`), each
   row with its own task's LoRA (per-row deltas through the hooks of
   :mod:`adapters.lora.batch`, the ones the encoders use), then each row picks its next
   token with its own sampling parameters and random stream.

A sequence leaves the batch as soon as it stops (end-of-sequence token, a stop sequence,
``max_new_tokens``) or is cancelled; the next waiting one joins at the next step.

*Background* sequences (:meth:`DecodeEngine.submit_background`: a shadow candidate's
generation, which answers nobody) use only room the callers leave: they wait in a queue of
their own, bounded by ``max_background``; they are admitted only when no caller's sequence
waits, and while one does (the budget or ``max_running`` is full) every running background
sequence is stopped (``Finished("preempted")``) to free its room. So a background sequence
never turns a caller's request into a 429 or keeps it waiting longer than one step.

The engine holds the backbone's lock only for each forward. It never touches the encoder
backbones or their batch worker: classification batches run on their own thread beside it
and share the CPU cores with it through the OS scheduler (both use torch's intra-op
threads); the fair scheduler across both is not built yet (docs/generation.md).
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import torch

from adapters.errors import CapacityError, InvalidInput
from adapters.generation.events import (Admitted, Delta, Failed, Finished, GenerationHandle,
                                        GenerationRequest)
from adapters.generation.kv import KvBudget, SequenceCache, batched_cache
from adapters.generation.sampling import choose, generator_for
from adapters.generation.text import TextStream
from adapters.kinds.lora_rows import lora_batch
from adapters.lora.batch import use_lora_batch

log = logging.getLogger("taskswap.generation")


@dataclass(eq=False)
class _Seq:
    handle: GenerationHandle
    text: TextStream
    reserved: int
    deadline: float
    gen: torch.Generator | None
    cache: SequenceCache = field(default_factory=SequenceCache)
    prefilled: int = 0
    generated: list[int] = field(default_factory=list)
    background: bool = False  # answers nobody: yields its room to any caller's sequence

    @property
    def req(self) -> GenerationRequest:
        return self.handle.request


@dataclass(frozen=True)
class EngineLimits:
    """The engine's settings (the service fills them from ``TASKSWAP_GENERATION_*``)."""

    kv_budget_bytes: int = 256 << 20
    max_running: int = 32
    max_waiting: int = 64
    queue_timeout_s: float = 10.0
    prefill_chunk: int = 128
    max_background: int = 4  # background sequences (shadow candidates) queued or running at once


class DecodeEngine:
    """Continuous batching on one :class:`adapters.backbones.causal_lm.LMBackbone`.

    >>> from adapters.backbones.tiny import tiny_lm_spec
    >>> from adapters.backbones.causal_lm import load_lm_backbone
    >>> from adapters.generation.sampling import SamplingParams
    >>> bb = load_lm_backbone(tiny_lm_spec("/tmp/tiny-lm-doc"))
    >>> with DecodeEngine(bb) as eng:
    ...     c = eng.submit(GenerationRequest([5, 6, 7], SamplingParams(max_new_tokens=3))).result()
    >>> c.completion_tokens <= 3
    True
    """

    def __init__(self, backbone, limits: EngineLimits | None = None, on_step=None):
        self.backbone = backbone
        self.limits = limits or EngineLimits()
        self.budget = KvBudget(self.limits.kv_budget_bytes)
        self.per_token = backbone.kv_bytes_per_token()
        self.on_step = on_step  # on_step(rows decoded, prefill tokens, seconds): metrics
        self._waiting: deque[_Seq] = deque()
        self._background: deque[_Seq] = deque()  # background sequences not admitted yet
        self._running: list[_Seq] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        # transformers 5.25 renamed the forward's cache argument ("cache"; the old name warns).
        params = inspect.signature(backbone.model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self) -> "DecodeEngine":
        self._thread = threading.Thread(target=self._loop, name=f"taskswap-decode-{self.backbone.name}",
                                        daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def __enter__(self) -> "DecodeEngine":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    # ---- admission ---------------------------------------------------------------------
    def check(self, request: GenerationRequest) -> int:
        """The request's KV reservation in bytes; ``InvalidInput`` when it can never run."""
        n_prompt, n_new = len(request.prompt_ids), request.params.max_new_tokens
        if n_prompt == 0:
            raise InvalidInput("the prompt is empty: send some text")
        limit = self.backbone.max_context
        if n_prompt + n_new > limit:
            raise InvalidInput(f"prompt ({n_prompt} tokens) + max_tokens ({n_new}) = {n_prompt + n_new} "
                               f"tokens, over the model's context of {limit}; shorten the prompt "
                               "or ask fewer tokens")
        need = (n_prompt + n_new) * self.per_token
        if need > self.budget.total:
            raise InvalidInput(f"prompt + max_tokens ({n_prompt + n_new} tokens) need {need} bytes of "
                               f"KV cache, over the whole budget of {self.budget.total} "
                               "(TASKSWAP_GENERATION_KV_BUDGET_MB); ask fewer tokens")
        return need

    def _new_seq(self, request: GenerationRequest, sink, background: bool = False) -> _Seq:
        need = self.check(request)
        return _Seq(GenerationHandle(request, sink), TextStream(self.backbone.tokenizer, request.params.stop),
                    need, time.monotonic() + self.limits.queue_timeout_s, generator_for(request.params),
                    background=background)

    def submit_background(self, request: GenerationRequest, sink) -> GenerationHandle | None:
        """Queue a sequence that answers nobody (see the module docstring), or return None
        when ``max_background`` of them are queued or running already (or the engine is
        closing). ``InvalidInput`` when it is over the limits."""
        seq = self._new_seq(request, sink, background=True)
        with self._cond:
            held = len(self._background) + sum(s.background for s in self._running)
            if self._closed or held >= self.limits.max_background:
                return None
            self._background.append(seq)
            self._cond.notify()
        return seq.handle

    def submit(self, request: GenerationRequest, sink=None) -> GenerationHandle:
        """Queue a sequence; its events go to the returned handle (or ``sink``).
        ``InvalidInput`` when it is over the limits, ``CapacityError`` when the queue is full."""
        seq = self._new_seq(request, sink)
        handle = seq.handle
        with self._cond:
            if self._closed:
                raise CapacityError("the generation engine is shutting down; retry on another replica")
            if len(self._waiting) >= self.limits.max_waiting:
                raise CapacityError(f"{len(self._waiting)} generations are already waiting for KV cache "
                                    f"(TASKSWAP_GENERATION_MAX_WAITING); retry shortly",
                                    retry_after_s=self._retry_after())
            self._waiting.append(seq)
            self._cond.notify()
        return handle

    def _retry_after(self) -> float:
        return max(1.0, min(30.0, self.limits.queue_timeout_s / 2))

    def _admit_from(self, queue: deque) -> None:
        """Under ``_cond``: admit ``queue``'s sequences in order while they fit."""
        while queue and len(self._running) < self.limits.max_running:
            if not self.budget.reserve(queue[0].reserved):
                break
            seq = queue.popleft()
            self._running.append(seq)
            seq.handle.emit(Admitted())

    def _admit(self) -> None:
        """Under ``_cond``: drop cancelled and expired waiters, admit in order while room;
        background sequences only after every caller's, and preempted while one waits."""
        now = time.monotonic()
        for queue in (self._waiting, self._background):
            for seq in [s for s in queue if s.handle.cancelled.is_set()]:
                queue.remove(seq)
                seq.handle.emit(Finished("cancelled", len(seq.req.prompt_ids), 0))
        self._admit_from(self._waiting)
        if self._waiting:  # a caller waits for room: background sequences give theirs back
            for seq in [s for s in self._running if s.background]:
                self._finish(seq, "preempted")
            self._admit_from(self._waiting)
        if not self._waiting:
            self._admit_from(self._background)
        for seq in [s for s in self._background if s.deadline < now]:  # never found spare room
            self._background.remove(seq)
            seq.handle.emit(Finished("preempted", len(seq.req.prompt_ids), 0))
        for seq in [s for s in self._waiting if s.deadline < now]:  # waited too long for room
            self._waiting.remove(seq)
            seq.handle.emit(Failed(CapacityError(
                f"the KV cache budget stayed full for {self.limits.queue_timeout_s}s "
                "(TASKSWAP_GENERATION_QUEUE_TIMEOUT_S); retry shortly", retry_after_s=self._retry_after())))

    # ---- the loop ----------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    break
                self._retire_cancelled()
                self._admit()
                if not self._running:
                    self._cond.wait(timeout=0.05 if self._waiting or self._background else 1.0)
                    continue
            rows = list(self._running)
            try:
                self._step(rows)
            except Exception as exc:  # a model failure fails this step's sequences, not the engine
                log.exception("decode step failed")
                for seq in rows:
                    self._finish(seq, None, error=exc)
        with self._cond:
            for seq in list(self._running) + list(self._waiting) + list(self._background):
                seq.handle.emit(Failed(CapacityError("the generation engine shut down; retry")))
            self._running, self._waiting, self._background = [], deque(), deque()

    def _retire_cancelled(self) -> None:
        for seq in [s for s in self._running if s.handle.cancelled.is_set()]:
            self._finish(seq, "cancelled")

    def _finish(self, seq: _Seq, reason: str | None, error: Exception | None = None) -> None:
        with self._cond:
            if seq not in self._running:
                return
            self._running.remove(seq)
            self.budget.release(seq.reserved)
            self._cond.notify()
        if error is not None:
            seq.handle.emit(Failed(error))
        else:
            seq.handle.emit(Finished(reason, len(seq.req.prompt_ids), len(seq.generated)))

    def _step(self, rows: list[_Seq]) -> None:
        t0 = time.perf_counter()
        prefill = next((s for s in rows if s.prefilled < len(s.req.prompt_ids)), None)
        n_prefill = self._prefill_chunk(prefill) if prefill is not None else 0
        ready = [s for s in rows if s is not prefill and s.generated and s in self._running]
        if ready:
            self._decode(ready)
        if self.on_step is not None:
            self.on_step(len(ready), n_prefill, time.perf_counter() - t0)

    def _forward(self, loras: list, cache, **inputs):
        bb = self.backbone
        with bb.lock, torch.inference_mode(), use_lora_batch(lora_batch(loras)):
            return bb.model(**inputs, **{self._cache_arg: cache}, use_cache=True)

    def _prefill_chunk(self, seq: _Seq) -> int:
        """Run the next chunk of ``seq``'s prompt; its last chunk picks its first token."""
        ids = seq.req.prompt_ids[seq.prefilled:seq.prefilled + self.limits.prefill_chunk]
        start = seq.prefilled
        cache = seq.cache.as_cache(self.backbone.model.config)
        dev = self.backbone.device
        out = self._forward([seq.req.lora], cache,
                            input_ids=torch.tensor([ids], device=dev),  # [1, chunk]
                            position_ids=torch.arange(start, start + len(ids), device=dev)[None],
                            logits_to_keep=1)
        seq.cache.take(cache)
        seq.prefilled += len(ids)
        if seq.prefilled == len(seq.req.prompt_ids):
            self._next_token(seq, out.logits[0, -1].float().cpu())
        return len(ids)

    def _decode(self, seqs: list[_Seq]) -> None:
        """One batched step: each row runs its last token on its own cache and LoRA."""
        dev = self.backbone.device
        cache, mask, pads = batched_cache([s.cache for s in seqs], self.backbone.model.config)
        longest = mask.shape[1] - 1
        out = self._forward([s.req.lora for s in seqs], cache,
                            input_ids=torch.tensor([[s.generated[-1]] for s in seqs], device=dev),  # [rows, 1]
                            attention_mask=mask.to(dev),  # [rows, longest + 1]
                            position_ids=torch.tensor([[s.cache.length] for s in seqs], device=dev),
                            cache_position=torch.tensor([longest], device=dev))
        logits = out.logits[:, -1].float().cpu()  # [rows, vocab]
        for i, (seq, pad) in enumerate(zip(seqs, pads)):
            seq.cache.take(cache, i, pad)
            self._next_token(seq, logits[i])

    def _next_token(self, seq: _Seq, logits: torch.Tensor) -> None:
        params = seq.req.params
        token, logprob = choose(logits, params, seq.gen)
        seq.generated.append(token)
        lps = [logprob] if params.logprobs else []
        if token in self.backbone.eos_token_ids:
            seq.handle.emit(Delta(seq.text.flush(seq.generated[:-1]), [token], lps))
            self._finish(seq, "eos_token")
            return
        delta = seq.text.push(seq.generated)
        if seq.text.stopped:
            seq.handle.emit(Delta(delta, [token], lps))
            self._finish(seq, "stop_sequence")
        elif len(seq.generated) >= params.max_new_tokens:
            seq.handle.emit(Delta(delta + seq.text.flush(seq.generated), [token], lps))
            self._finish(seq, "length")
        else:
            seq.handle.emit(Delta(delta, [token], lps))
