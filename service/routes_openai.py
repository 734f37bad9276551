"""OpenAI-compatible embeddings: ``POST /v1/embeddings``, ``GET /v1/models[/{model}]``.

``model`` is a backbone name. ``GET /v1/models`` lists the backbones (``owned_by:
"taskswap-backbone"``, for ``/v1/embeddings``) and the generation tasks (``owned_by:
"taskswap-task"``, the ``model`` of ``/v1/completions`` and ``/v1/chat/completions``;
a task's versions are reached as ``task@version``). A text backbone embeds
strings; an image backbone takes each input string as a base64 image (a
``data:image/...;base64,`` URL is fine), an audio backbone a base64 audio clip. Vectors are the backbone's default pooling,
L2-normalised (as OpenAI's are), from the same batcher and trunk pass as ``/predict``.
``encoding_format="base64"`` (what the ``openai`` package asks for by default) is the
little-endian float32 bytes, base64-encoded. ``dimensions`` other than the backbone's own
size is refused: these vectors cannot be shortened without losing what they mean.
``usage`` counts the tokens the tokenizer produced (after truncation); images count 0.

Usage with the official client::

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:3000/v1", api_key="<inference token or any>")
    client.embeddings.create(model="text", input=["a great movie"]).data[0].embedding
"""

from __future__ import annotations

import base64
import time
from typing import Literal

import anyio
import numpy as np
from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from adapters.errors import InvalidInput
from adapters.embed_spec import EmbedSpec
from service.protocol_errors import OpenAIError, error_responses
from service.routes_common import Svc, deferred_inputs, json_response, observed

router = APIRouter(prefix="/v1", tags=["openai"])
_RESPONSES = error_responses(OpenAIError)
_CREATED = int(time.time())  # OpenAI's 'created': when this process started serving
BACKBONE, TASK = "taskswap-backbone", "taskswap-task"  # a model's owned_by: what it is


class EmbeddingsRequest(BaseModel):
    """The OpenAI embeddings request."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
        {"model": "text", "input": ["a great movie", "a boring plot"]},
        {"model": "text", "input": "one text", "encoding_format": "base64"},
    ]})
    model: str = Field(min_length=1, max_length=64, description="A backbone name (GET /v1/models).")
    input: str | list[str] | list[int] | list[list[int]] = Field(description=(
        "A string or a list of strings (base64 images for an image backbone). Token-id "
        "arrays are refused: send the text."))
    encoding_format: Literal["float", "base64"] = Field("float", description=(
        "'float': lists of numbers; 'base64': little-endian float32 bytes, base64."))
    dimensions: int | None = Field(None, ge=1, description=(
        "Only the backbone's own size is accepted (the vectors cannot be shortened)."))
    user: str | None = Field(None, max_length=256, description="Accepted and ignored.")


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="Floats, or base64 of float32 bytes.")


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = Field(description=f"'{BACKBONE}' (for /v1/embeddings) or '{TASK}' (a generation task).")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


@router.post("/embeddings", response_model=EmbeddingsResponse, responses=_RESPONSES)
async def embeddings(body: EmbeddingsRequest, svc: Svc) -> Response:
    """Embed a string or a list of strings with a backbone (OpenAI-compatible)."""
    async with observed(svc, "openai"):
        bb = svc.engine.backbone(body.model)
        items = [body.input] if isinstance(body.input, str) else list(body.input)
        if any(not isinstance(x, str) for x in items):
            raise InvalidInput("input holds token ids; this server tokenizes itself: send the "
                               "text as a string or a list of strings")
        if body.dimensions is not None and body.dimensions != bb.hidden_size:
            raise InvalidInput(f"dimensions {body.dimensions} is not supported: model {bb.name!r} "
                               f"returns {bb.hidden_size}-d vectors; omit dimensions or pass "
                               f"{bb.hidden_size}")
        decode = deferred_inputs(svc, items, bb.modality, where="input")  # decoded once admitted
        results = await svc.engine.embed(bb.name, decode, bb.modality, EmbedSpec(None, True))
        vectors = results.embeddings  # [inputs, hidden]
        tokens = results.tokens or 0  # counted from the batch's own tokenisation (text), not again
        svc.metrics.observe_embedded(bb.name, len(items))
        if body.encoding_format == "base64":
            rows = np.ascontiguousarray(vectors.numpy(), dtype="<f4")  # [inputs, hidden]
            data = [Embedding(index=i, embedding=base64.b64encode(r.tobytes()).decode())
                    for i, r in enumerate(rows)]
        else:
            data = [Embedding(index=i, embedding=v) for i, v in enumerate(vectors.tolist())]
        return json_response(EmbeddingsResponse(data=data, model=bb.name,
                                                usage=Usage(prompt_tokens=tokens, total_tokens=tokens)))


@router.get("/models", response_model=ModelList, responses=_RESPONSES)
async def models(svc: Svc) -> ModelList:
    """The backbones (for /v1/embeddings) and the generation tasks (for /v1/completions and
    /v1/chat/completions), as OpenAI models."""
    async with observed(svc, "openai"):
        svc.engine.require_ready()
        tasks = await anyio.to_thread.run_sync(svc.engine.generation_tasks)
        return ModelList(data=[Model(id=name, created=_CREATED, owned_by=BACKBONE)
                               for name in sorted(svc.engine.backbones)]
                         + [Model(id=name, created=_CREATED, owned_by=TASK) for name in tasks])


@router.get("/models/{model:path}", response_model=Model, responses=_RESPONSES)
async def model(svc: Svc, model: str = Path(min_length=1, max_length=140)) -> Model:
    """One backbone or generation task as an OpenAI model."""
    async with observed(svc, "openai"):
        svc.engine.require_ready()
        if model in svc.engine.backbones:
            return Model(id=model, created=_CREATED, owned_by=BACKBONE)
        name = await anyio.to_thread.run_sync(svc.engine.generation_task, model)
        return Model(id=name, created=_CREATED, owned_by=TASK)

