"""Typed generation results for :meth:`Client.generate` / :meth:`Client.stream`, and how they
are read from the server's OpenAI-compatible routes (``/v1/completions`` for a prompt,
``/v1/chat/completions`` for chat messages).

A streamed generation is a sequence of :class:`TokenDelta` events (released text, the tokens
and their log-probabilities when asked for) closed by one :class:`StreamEnd` (finish reason,
token counts, the task version that answered). An error event inside a stream (the
generation failed after it started) raises :class:`~taskswap_client.errors.GenerationFailed`.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Literal, Sequence

from pydantic import BaseModel, Field

from taskswap_client.errors import GenerationFailed

FinishReason = Literal["stop", "length"]


class GeneratedToken(BaseModel):
    """One generated token: its text and its log-probability under the model."""

    text: str
    logprob: float


class Usage(BaseModel):
    prompt_tokens: int = Field(description="Tokens the model read (template and chat markup included).")
    completion_tokens: int = Field(description="Tokens generated (an end-of-sequence token included).")
    total_tokens: int


class GenerationResult(BaseModel):
    """A whole generation."""

    task: str
    version: str
    text: str
    finish_reason: FinishReason = Field(description="'stop' (end of sequence or a stop sequence) or 'length'.")
    usage: Usage
    tokens: list[GeneratedToken] | None = Field(None, description="Only with logprobs=True.")


class TokenDelta(BaseModel):
    """New text of a stream (may be empty while a stop sequence is undecided)."""

    type: Literal["delta"] = "delta"
    text: str
    tokens: list[GeneratedToken] = Field(default_factory=list, description="Only with logprobs=True.")


class StreamEnd(BaseModel):
    """The last event of a stream."""

    type: Literal["end"] = "end"
    task: str
    version: str
    finish_reason: FinishReason
    usage: Usage


StreamEvent = TokenDelta | StreamEnd


def generation_body(task: str, prompt: str | None, messages: Sequence[dict] | None, max_tokens: int | None,
                    temperature: float | None, top_p: float | None, top_k: int | None, seed: int | None,
                    stop: Sequence[str] | None, logprobs: bool, stream: bool) -> tuple[str, dict]:
    """The route and JSON body of one generation (exactly one of ``prompt`` and ``messages``).

    >>> generation_body("fr", "hi", None, 8, None, None, None, None, None, False, False)
    ('/v1/completions', {'model': 'fr', 'prompt': 'hi', 'max_tokens': 8})
    """
    if (prompt is None) == (messages is None):
        raise ValueError("give exactly one of prompt (a completion) or messages (a chat)")
    if prompt is not None and not isinstance(prompt, str):
        raise TypeError("prompt is one string")
    body: dict[str, Any] = {"model": task}
    if prompt is not None:
        path = "/v1/completions"
        body["prompt"] = prompt
        if logprobs:
            body["logprobs"] = 0
    else:
        path = "/v1/chat/completions"
        body["messages"] = [dict(m) for m in messages]
        if logprobs:
            body["logprobs"] = True
    for key, value in (("max_tokens", max_tokens), ("temperature", temperature), ("top_p", top_p),
                       ("top_k", top_k), ("seed", seed)):
        if value is not None:
            body[key] = value
    if stop:
        body["stop"] = list(stop)
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return path, body


def _split_model(model: str) -> tuple[str, str]:
    task, _, version = model.partition("@")
    return task, version


def _tokens(choice: dict) -> list[GeneratedToken]:
    """Tokens of a completion or chat choice (or chunk) that carries log-probabilities."""
    lp = choice.get("logprobs")
    if not lp:
        return []
    if "content" in lp:  # chat
        return [GeneratedToken(text=t["token"], logprob=t["logprob"]) for t in lp["content"] or []]
    return [GeneratedToken(text=t, logprob=p) for t, p in zip(lp["tokens"], lp["token_logprobs"])]


def _text(choice: dict) -> str:
    if "text" in choice:
        return choice["text"]
    part = choice.get("message") or choice.get("delta") or {}
    return part.get("content") or ""


def parse_result(body: dict, logprobs: bool) -> GenerationResult:
    """A non-streamed completion or chat answer as a :class:`GenerationResult`."""
    choice = body["choices"][0]
    task, version = _split_model(body["model"])
    return GenerationResult(task=task, version=version, text=_text(choice), finish_reason=choice["finish_reason"],
                            usage=Usage.model_validate(body["usage"]),
                            tokens=_tokens(choice) if logprobs else None)


class StreamReader:
    """Turns the server-sent events of one streamed generation into :class:`StreamEvent`s
    (feed it lines with :meth:`feed`; it yields the events they complete)."""

    def __init__(self):
        self.finish: str | None = None
        self.model: str | None = None
        self.done = False

    def check_done(self) -> None:
        """Raise :class:`GenerationFailed` if the stream ended without its ``[DONE]``."""
        if not self.done:
            raise GenerationFailed("incomplete_stream", "the stream ended before its last event "
                                   "(the connection dropped or the server stopped)")

    def feed(self, line: str) -> Iterable[StreamEvent]:
        if not line.startswith("data:"):
            return
        data = line[5:].strip()
        if data == "[DONE]":
            self.done = True
            return
        chunk = json.loads(data)
        if "error" in chunk:
            err = chunk["error"]
            raise GenerationFailed(str(err.get("type")), str(err.get("message")))
        self.model = chunk.get("model", self.model)
        for choice in chunk.get("choices") or []:
            text, tokens = _text(choice), _tokens(choice)
            if text or tokens:
                yield TokenDelta(text=text, tokens=tokens)
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        if chunk.get("usage"):
            task, version = _split_model(self.model or "")
            yield StreamEnd(task=task, version=version, finish_reason=self.finish or "stop",
                            usage=Usage.model_validate(chunk["usage"]))
