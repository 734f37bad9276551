"""OpenAI-compatible text generation: ``POST /v1/completions`` and ``/v1/chat/completions``.

``model`` is a generation task (``task``, or ``task@version`` to pin a stored version); the
task's language model, LoRA, prompt template or system prompt, stop sequences and limits
apply (docs/generation.md). ``stream: true`` answers with server-sent events
(``data: {chunk}`` ... ``data: [DONE]``), as OpenAI does; ``stream_options.include_usage``
adds a last chunk with the usage. ``usage`` counts the prompt's tokens as the model read
them (template and chat markup included) and the tokens generated. ``top_k`` is accepted as
an extension (vLLM does the same). Not supported (400 naming the field): ``n`` > 1,
``best_of``, ``echo``, ``suffix``, penalties, ``logit_bias``, ``top_logprobs``, tools.

Usage with the official client::

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:3000/v1", api_key="<inference token or any>")
    client.chat.completions.create(model="translate-fr", messages=[{"role": "user", "content": "Hello"}])
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from adapters.errors import InvalidInput, TaskswapError
from adapters.generation.events import Delta
from adapters.generation.requests import Overrides
from service.errors import status_for
from service.generation import SamplingBounds, start_generation
from service.protocol_errors import OpenAIError, error_responses
from service.routes_common import Svc, observed

router = APIRouter(prefix="/v1", tags=["openai"])
_RESPONSES = error_responses(OpenAIError)
# ``stream: true`` answers with server-sent events instead of the JSON body.
_STREAMED = {**_RESPONSES, 200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}}
MAX_PROMPT_CHARS = 100_000


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Common(SamplingBounds):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=140, description="A generation task: 'task' or 'task@version'.")
    max_tokens: int | None = Field(None, ge=1, description="At most the task's max_new_tokens (default: it).")
    max_completion_tokens: int | None = Field(None, ge=1, description="Same as max_tokens (chat).")
    temperature: float | None = Field(None, ge=0, le=10, description="0 = greedy; default: the task's.")
    top_p: float | None = Field(None, le=1, description="Nucleus mass, above 0.")
    top_k: int | None = Field(None, ge=0, description="Extension: top-k sampling (0 = off).")
    seed: int | None = Field(None, ge=0, description="Repeatable sampling (below 2**63).")
    stop: str | list[str] | None = Field(None, description="Up to 16 stop sequences, added to the task's.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1, description="Only 1.")
    presence_penalty: float = Field(0, ge=0, le=0, description="Not supported (0 only).")
    frequency_penalty: float = Field(0, ge=0, le=0, description="Not supported (0 only).")
    logit_bias: dict | None = Field(None, max_length=0, description="Not supported.")
    user: str | None = Field(None, max_length=256, description="Accepted and ignored.")

    def overrides(self, logprobs: bool) -> Overrides:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stop) > 16 or any(not s or len(s) > 256 for s in stop):
            raise InvalidInput("stop: at most 16 sequences of 1 to 256 characters")
        return Overrides(max_tokens=self.max_completion_tokens or self.max_tokens,
                         temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
                         seed=self.seed, stop=tuple(stop), logprobs=logprobs)


class CompletionRequest(_Common):
    """The OpenAI completions request."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"model": "translate-fr", "prompt": "Good morning", "max_tokens": 32}]})
    prompt: str | list[str] = Field(description="One prompt (a list of one string is accepted).")
    logprobs: int | None = Field(None, ge=0, le=0, description=(
        "0: the chosen tokens' log-probabilities (alternatives are not returned)."))
    echo: bool = Field(False, description="Not supported (false only).")
    best_of: int | None = Field(None, ge=1, le=1, description="Only 1.")
    suffix: str | None = Field(None, max_length=0, description="Not supported.")


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "developer"]
    content: str = Field(max_length=MAX_PROMPT_CHARS)


class ChatRequest(_Common):
    """The OpenAI chat completions request."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"model": "translate-fr", "messages": [{"role": "user", "content": "Good morning"}]}]})
    messages: list[Message] = Field(min_length=1, max_length=256)
    logprobs: bool = Field(False, description="The chosen tokens' log-probabilities.")
    top_logprobs: int | None = Field(None, ge=0, le=0, description="Not supported (0 only).")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: None = None
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class TokenLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]
    top_logprobs: list = Field(default_factory=list)


class ChatLogprobs(BaseModel):
    content: list[TokenLogprob]


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatMessageOut
    logprobs: ChatLogprobs | None = None
    finish_reason: Literal["stop", "length"]


class ChatResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


def _prompt(body: CompletionRequest) -> str:
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1:
        raise InvalidInput(f"prompt: send exactly one prompt per request (got {len(prompts)})")
    if not prompts[0] or len(prompts[0]) > MAX_PROMPT_CHARS:
        raise InvalidInput(f"prompt: 1 to {MAX_PROMPT_CHARS} characters")
    return prompts[0]


def _tokens(tokenizer, ids: list[int]) -> list[str]:
    return [tokenizer.decode([i]) for i in ids]


def _usage(gen, completion_tokens: int) -> Usage:
    return Usage(prompt_tokens=gen.prompt_tokens, completion_tokens=completion_tokens,
                 total_tokens=gen.prompt_tokens + completion_tokens)


def _model_name(gen) -> str:
    return f"{gen.adapter.name}@{gen.adapter.version}"


def _sse(obj) -> str:
    return "data: " + (obj if isinstance(obj, str) else json.dumps(obj)) + "\n\n"


def _sse_error(exc: Exception) -> str:
    kind = status_for(exc)[1] if isinstance(exc, TaskswapError) else "internal_error"
    message = exc.message if isinstance(exc, TaskswapError) else "the generation failed"
    return _sse({"error": {"message": message, "type": kind, "param": None, "code": kind}})


def _finish(reason: str) -> str:
    return "length" if reason == "length" else "stop"  # OpenAI: eos and stop sequences are both "stop"


async def _stream(gen, chunk, include_usage: bool, deadline: float):
    """Server-sent events of one generation; the sequence is cancelled if the client leaves."""
    completion = 0
    try:
        # Starlette's stream watches the connection itself and closes this generator when the
        # client leaves (then ``finally`` cancels the sequence): a second reader of the
        # connection here could take its disconnect message.
        async for ev in gen.events(None, deadline):
            if isinstance(ev, Delta):
                completion += len(ev.token_ids)
                if ev.text or ev.logprobs:
                    yield _sse(chunk(ev, None))
            else:
                yield _sse(chunk(None, _finish(ev.reason)))
        if include_usage:
            yield _sse(chunk(None, None, _usage(gen, completion).model_dump()))
        yield _sse("[DONE]")
    except TaskswapError as exc:
        yield _sse_error(exc)
    finally:
        gen.cancel()


@router.post("/completions", response_model=CompletionResponse, responses=_STREAMED)
async def completions(body: CompletionRequest, request: Request, svc: Svc):
    """Continue a prompt with a generation task (OpenAI-compatible, streamed or not)."""
    async with observed(svc, "openai"):
        if body.echo:
            raise InvalidInput("echo is not supported; the prompt is not repeated in the answer")
        gen = await start_generation(svc.engine, body.model, prompt=_prompt(body),
                                     overrides=body.overrides(body.logprobs is not None), request=request)
    cid, created, tok = f"cmpl-{uuid.uuid4().hex}", int(time.time()), gen.adapter.backbone.tokenizer
    deadline = time.monotonic() + svc.settings.predict_timeout_s
    if body.stream:
        def chunk(ev, finish, usage=None):
            lp = (CompletionLogprobs(tokens=_tokens(tok, ev.token_ids), token_logprobs=ev.logprobs,
                                     text_offset=[0] * len(ev.token_ids)).model_dump()
                  if ev is not None and ev.logprobs else None)
            choices = [] if usage else [{"index": 0, "text": ev.text if ev else "", "logprobs": lp,
                                         "finish_reason": finish}]
            return {"id": cid, "object": "text_completion", "created": created, "model": _model_name(gen),
                    "choices": choices, **({"usage": usage} if usage else {})}
        include = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_stream(gen, chunk, include, deadline), media_type="text/event-stream")
    try:
        c = await gen.complete(request, deadline)
    finally:
        gen.cancel()
    lp = None
    if body.logprobs is not None:
        toks = _tokens(tok, c.token_ids)
        offsets = [sum(len(t) for t in toks[:i]) for i in range(len(toks))]
        lp = CompletionLogprobs(tokens=toks, token_logprobs=c.logprobs, text_offset=offsets)
    return CompletionResponse(id=cid, created=created, model=_model_name(gen), usage=_usage(gen, c.completion_tokens),
                              choices=[CompletionChoice(text=c.text, logprobs=lp,
                                                        finish_reason=_finish(c.finish_reason))])


@router.post("/chat/completions", response_model=ChatResponse, responses=_STREAMED)
async def chat_completions(body: ChatRequest, request: Request, svc: Svc):
    """Answer a conversation with a generation task (OpenAI-compatible, streamed or not)."""
    async with observed(svc, "openai"):
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.content}
                    for m in body.messages]
        gen = await start_generation(svc.engine, body.model, messages=messages,
                                     overrides=body.overrides(body.logprobs), request=request)
    cid, created, tok = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), gen.adapter.backbone.tokenizer
    deadline = time.monotonic() + svc.settings.predict_timeout_s
    if body.stream:
        first = {"sent": False}

        def chunk(ev, finish, usage=None):
            delta = {} if ev is None else {"content": ev.text}
            if not first["sent"]:
                delta, first["sent"] = {"role": "assistant", **delta}, True
            lp = ({"content": [TokenLogprob(token=t, logprob=p, bytes=list(t.encode())).model_dump()
                               for t, p in zip(_tokens(tok, ev.token_ids), ev.logprobs)]}
                  if ev is not None and ev.logprobs else None)
            choices = [] if usage else [{"index": 0, "delta": delta, "logprobs": lp, "finish_reason": finish}]
            return {"id": cid, "object": "chat.completion.chunk", "created": created,
                    "model": _model_name(gen), "choices": choices, **({"usage": usage} if usage else {})}
        include = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_stream(gen, chunk, include, deadline), media_type="text/event-stream")
    try:
        c = await gen.complete(request, deadline)
    finally:
        gen.cancel()
    lp = None
    if body.logprobs:
        lp = ChatLogprobs(content=[TokenLogprob(token=t, logprob=p, bytes=list(t.encode()))
                                   for t, p in zip(_tokens(tok, c.token_ids), c.logprobs)])
    return ChatResponse(id=cid, created=created, model=_model_name(gen), usage=_usage(gen, c.completion_tokens),
                        choices=[ChatChoice(message=ChatMessageOut(content=c.text), logprobs=lp,
                                            finish_reason=_finish(c.finish_reason))])
