"""LoRAX / TGI text generation: ``POST /generate``, ``POST /generate_stream`` and the
compatibility route ``POST /`` (the body's ``stream`` decides; a non-streamed answer is a
list of one, as LoRAX's and TGI's clients expect when pointed at the server's root).

``parameters.adapter_id`` is the generation task (``task`` or ``task@version``), so a
LoRAX user switches by changing the URL. ``do_sample: false`` with no ``temperature`` is
greedy; the task's prompt template, stop sequences and limits apply. ``details`` gives
each generated token with its log-probability; prompt logprobs (``decoder_input_details``),
``best_of`` > 1, repetition penalty, typical-p, watermarking, truncation, ``ignore_eos_token``,
structured output and merged adapters are refused with a 400 naming the field.

Usage with LoRAX's client::

    from lorax import Client
    Client("http://127.0.0.1:3000").generate("Good morning", adapter_id="translate-fr").generated_text
"""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from adapters.errors import InvalidInput, TaskswapError
from adapters.generation.events import Delta
from adapters.generation.requests import Overrides
from service.errors import status_for
from service.generation import SamplingBounds, start_generation
from service.protocol_errors import TGIError, error_responses
from service.routes_common import Svc, observed

router = APIRouter(tags=["tgi"])
_RESPONSES = error_responses(TGIError)
_EVENTS = {"content": {"text/event-stream": {"schema": {"type": "string"}}}}
MAX_INPUT_CHARS = 100_000
# Accepted only at their no-op value: (field, value that changes nothing).
_UNSUPPORTED = (("best_of", (None, 1)), ("repetition_penalty", (None, 1.0)), ("typical_p", (None,)),
                ("watermark", (False,)), ("truncate", (None,)), ("ignore_eos_token", (False,)),
                ("response_format", (None,)), ("merged_adapters", (None,)), ("return_k_alternatives", (None,)),
                ("decoder_input_details", (False,)))


class Parameters(SamplingBounds):
    model_config = ConfigDict(extra="ignore")
    adapter_id: str | None = Field(None, max_length=140, description="The generation task: 'task' or 'task@version'.")
    adapter_source: str | None = Field(None, description="Accepted and ignored: tasks are found by name.")
    api_token: str | None = Field(None, description="Accepted and ignored (use the bearer token).")
    max_new_tokens: int | None = Field(None, ge=1, description="At most the task's max_new_tokens.")
    do_sample: bool = False
    temperature: float | None = Field(None, ge=0, le=10)
    top_k: int | None = Field(None, ge=0)
    top_p: float | None = Field(None, le=1, description="Nucleus mass, above 0.")
    seed: int | None = Field(None, ge=0, description="Repeatable sampling (below 2**63).")
    stop: list[str] = Field(default_factory=list, max_length=16)
    details: bool = False
    return_full_text: bool = False
    best_of: int | None = None
    repetition_penalty: float | None = None
    typical_p: float | None = None
    watermark: bool = False
    truncate: int | None = None
    ignore_eos_token: bool = False
    response_format: Any = None
    merged_adapters: Any = None
    return_k_alternatives: int | None = None
    decoder_input_details: bool = False

    def overrides(self) -> Overrides:
        bad = [f"parameters.{name}" for name, ok in _UNSUPPORTED if getattr(self, name) not in ok]
        if bad:
            raise InvalidInput(f"{', '.join(bad)}: not supported by this server; leave them unset")
        if any(not s or len(s) > 256 for s in self.stop):
            raise InvalidInput("parameters.stop: sequences of 1 to 256 characters")
        sampling = self.do_sample or (self.temperature is not None and self.temperature > 0)
        temperature = (self.temperature if self.temperature is not None else 1.0) if sampling else 0.0
        return Overrides(max_tokens=self.max_new_tokens, temperature=temperature, top_p=self.top_p,
                         top_k=self.top_k, seed=self.seed, stop=tuple(self.stop), logprobs=True)


class GenerateRequest(BaseModel):
    """TGI / LoRAX's generate request."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [
        {"inputs": "Good morning", "parameters": {"adapter_id": "translate-fr", "max_new_tokens": 32}}]})
    inputs: str = Field(min_length=1, max_length=MAX_INPUT_CHARS)
    parameters: Parameters = Field(default_factory=Parameters)
    stream: bool = False


class Token(BaseModel):
    id: int
    text: str
    logprob: float
    special: bool


class Details(BaseModel):
    finish_reason: str = Field(description="'length', 'eos_token' or 'stop_sequence'.")
    prompt_tokens: int
    generated_tokens: int
    seed: int | None = None
    prefill: list = Field(default_factory=list)
    tokens: list[Token] = Field(default_factory=list)


class GenerateResponse(BaseModel):
    generated_text: str
    details: Details | None = None


def _task(body: GenerateRequest) -> str:
    if not body.parameters.adapter_id:
        raise InvalidInput("parameters.adapter_id: name the generation task to run (its name, or "
                           "name@version)")
    return body.parameters.adapter_id


def _tokens(gen, ids: list[int], logprobs: list[float]) -> list[Token]:
    tok = gen.adapter.backbone.tokenizer
    special = set(tok.all_special_ids)
    return [Token(id=i, text=tok.decode([i]), logprob=lp, special=i in special) for i, lp in zip(ids, logprobs)]


async def _generate(body: GenerateRequest, request: Request, svc) -> GenerateResponse:
    async with observed(svc, "tgi"):
        gen = await start_generation(svc.engine, _task(body), prompt=body.inputs,
                                     overrides=body.parameters.overrides(), request=request)
    try:
        c = await gen.complete(request, time.monotonic() + svc.settings.predict_timeout_s)
    finally:
        gen.cancel()
    text = (body.inputs + c.text) if body.parameters.return_full_text else c.text
    details = Details(finish_reason=c.finish_reason, prompt_tokens=c.prompt_tokens,
                      generated_tokens=c.completion_tokens, seed=body.parameters.seed,
                      tokens=_tokens(gen, c.token_ids, c.logprobs)) if body.parameters.details else None
    return GenerateResponse(generated_text=text, details=details)


def _sse(obj) -> str:
    return "data:" + json.dumps(obj) + "\n\n"


async def _events(gen, body: GenerateRequest, timeout_s: float):
    """TGI's stream: one event per token; the last carries ``generated_text`` and ``details``."""
    texts, last = [], None
    try:
        # Starlette's stream watches the connection and closes this generator when the client
        # leaves (``finally`` cancels the sequence); no second reader of the connection here.
        async for ev in gen.events(None, time.monotonic() + timeout_s):
            if isinstance(ev, Delta):
                if last is not None:
                    yield _sse({"token": last.model_dump(), "generated_text": None, "details": None})
                texts.append(ev.text)
                last = _tokens(gen, ev.token_ids, ev.logprobs)[0]
                last.text = ev.text  # the released text: stop sequences and split characters held back
            else:
                text = "".join(texts)
                full = (body.inputs + text) if body.parameters.return_full_text else text
                details = {"finish_reason": ev.reason, "prompt_tokens": ev.prompt_tokens,
                           "generated_tokens": ev.completion_tokens, "seed": body.parameters.seed}
                if last is not None:
                    yield _sse({"token": last.model_dump(), "generated_text": full, "details": details})
    except TaskswapError as exc:
        yield _sse({"error": exc.message, "error_type": status_for(exc)[1]})
    finally:
        gen.cancel()


async def _stream(body: GenerateRequest, request: Request, svc) -> StreamingResponse:
    async with observed(svc, "tgi"):
        gen = await start_generation(svc.engine, _task(body), prompt=body.inputs,
                                     overrides=body.parameters.overrides(), request=request)
    return StreamingResponse(_events(gen, body, svc.settings.predict_timeout_s),
                             media_type="text/event-stream")


@router.post("/generate", response_model=GenerateResponse, responses={**_RESPONSES, 200: _EVENTS})
async def generate(body: GenerateRequest, request: Request, svc: Svc):
    """Generate with the task named in ``parameters.adapter_id`` (TGI / LoRAX)."""
    if body.stream:
        return await _stream(body, request, svc)
    return await _generate(body, request, svc)


@router.post("/generate_stream", response_class=StreamingResponse, responses={**_RESPONSES, 200: _EVENTS})
async def generate_stream(body: GenerateRequest, request: Request, svc: Svc) -> StreamingResponse:
    """Server-sent events, one per generated token (TGI / LoRAX)."""
    return await _stream(body, request, svc)


# Not in the OpenAPI schema: BentoML serves its own page on GET /, so the schema would claim a
# path whose other methods answer 200 (a fuzzer's "undeclared method" finding).
@router.post("/", response_model=list[GenerateResponse], include_in_schema=False)
async def compat(body: GenerateRequest, request: Request, svc: Svc):
    """TGI / LoRAX's compatibility route (where their clients post): streamed when
    ``stream`` is true, else a list of one answer."""
    if body.stream:
        return await _stream(body, request, svc)
    return [await _generate(body, request, svc)]
