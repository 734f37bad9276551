"""What a caller sends the decode engine and what it hears back: a sequence's request, its
events in order (:class:`Admitted`, :class:`Delta`..., then :class:`Finished` or
:class:`Failed`) and the handle that carries them (:class:`GenerationHandle`)."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass

from adapters.generation.sampling import SamplingParams


@dataclass(frozen=True)
class GenerationRequest:
    """One sequence to decode: its prompt's token ids, how to sample, and its task's LoRA
    weights (None: the base model). ``task`` and ``version`` only label it."""

    prompt_ids: list[int]
    params: SamplingParams
    lora: object | None = None
    task: str = ""
    version: str = ""


@dataclass
class Admitted:
    """The sequence got its KV reservation and joined the running batch."""


@dataclass
class Delta:
    """New output of one step: released ``text`` (may be empty while a stop sequence or a
    split character is undecided), the chosen ``token_ids`` and their ``logprobs``."""

    text: str
    token_ids: list[int]
    logprobs: list[float]


@dataclass
class Finished:
    """The sequence ended: ``reason`` is ``"eos_token"`` (the model's end-of-sequence token),
    ``"stop_sequence"``, ``"length"`` (``max_new_tokens``) or ``"cancelled"`` (TGI's names;
    OpenAI's ``"stop"`` covers the first two)."""

    reason: str
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Failed:
    error: Exception


@dataclass
class Completion:
    """A whole generation, as :meth:`GenerationHandle.result` gathers it."""

    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


class GenerationHandle:
    """The caller's side of one sequence: its events (:class:`Admitted`, :class:`Delta`...,
    then :class:`Finished` or :class:`Failed`), in order, to ``sink`` (default: a queue read
    by :meth:`events`), and :meth:`cancel`."""

    def __init__(self, request: GenerationRequest, sink=None):
        self.request = request
        self._queue: queue.Queue | None = None if sink is not None else queue.Queue()
        self._sink = sink if sink is not None else self._queue.put
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        """Stop decoding this sequence; its cache is freed at the engine's next step."""
        self.cancelled.set()

    def emit(self, event) -> None:
        self._sink(event)

    def events(self, timeout: float | None = None):
        """Every event until the last (only for a handle made without a ``sink``)."""
        while True:
            ev = self._queue.get(timeout=timeout)
            yield ev
            if isinstance(ev, (Finished, Failed)):
                return

    def result(self, timeout: float | None = None) -> Completion:
        """Wait for the whole generation; raise the error of a failed one."""
        text, ids, lps = [], [], []
        for ev in self.events(timeout):
            if isinstance(ev, Delta):
                text.append(ev.text)
                ids += ev.token_ids
                lps += ev.logprobs
            elif isinstance(ev, Failed):
                raise ev.error
            elif isinstance(ev, Finished):
                return Completion("".join(text), ids, lps, ev.reason, ev.prompt_tokens, ev.completion_tokens)
        raise RuntimeError("unreachable")
