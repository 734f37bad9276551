"""From a generation task and a caller's prompt (or chat messages) to a :class:`GenerationRequest`.

The task's manifest gives the prompt's shape and the defaults; the caller may lower
``max_tokens`` (never raise it over the task's ``max_new_tokens``: 400), set the sampling
parameters and add stop sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

from adapters.errors import InvalidInput
from adapters.generation.events import GenerationRequest
from adapters.generation.sampling import SamplingParams
from adapters.tasks.generation import render_prompt, settings

MAX_STOP = 16


@dataclass(frozen=True)
class Overrides:
    """What a request may set; None = the task's default."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: bool = False


def request_for(adapter, prompt: str | None = None, messages: list[dict] | None = None,
                overrides: Overrides = Overrides()) -> GenerationRequest:
    """The request decoding ``prompt`` (a completion) or ``messages`` (a chat) with ``adapter``
    (a generation task's :class:`~adapters.loading.LoadedAdapter`); ``InvalidInput`` naming
    the field when it asks for more than the task allows."""
    if not adapter.task.generates:
        raise InvalidInput(f"task {adapter.name!r} is a {adapter.manifest.task_type} task: it scores "
                           "inputs and generates no text; send it to /predict")
    spec = settings(adapter.manifest)
    o = overrides
    max_new = spec.max_new_tokens if o.max_tokens is None else o.max_tokens
    if max_new < 1 or max_new > spec.max_new_tokens:
        raise InvalidInput(f"max_tokens {max_new} is outside 1..{spec.max_new_tokens}, the most task "
                           f"{adapter.name!r} generates per request; ask for fewer")
    stop = tuple(dict.fromkeys([*spec.stop, *o.stop]))
    if len(stop) > MAX_STOP or any(not s for s in stop):
        raise InvalidInput(f"stop: at most {MAX_STOP} non-empty sequences (task's and request's together)")
    params = SamplingParams(
        max_new_tokens=max_new,
        temperature=spec.temperature if o.temperature is None else o.temperature,
        top_p=spec.top_p if o.top_p is None else o.top_p,
        top_k=spec.top_k if o.top_k is None else o.top_k,
        seed=o.seed, stop=stop, logprobs=o.logprobs)
    tokenizer = adapter.backbone.tokenizer
    text = render_prompt(spec, tokenizer, prompt=prompt, messages=messages)
    ids = tokenizer(text, add_special_tokens=prompt is not None and spec.prompt_format == "raw")["input_ids"]
    return GenerationRequest(list(ids), params, adapter.weights, adapter.name, adapter.version)
