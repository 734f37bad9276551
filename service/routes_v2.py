"""Open Inference Protocol (KServe v2) REST, one model per task.

=====================================================  ========================================
``GET  /v2``                                           server metadata
``GET  /v2/health/live`` / ``/v2/health/ready``        200 when live / ready, else 503
``GET  /v2/models/{task}[/versions/{v}]``              model metadata: versions, inputs, outputs
``GET  /v2/models/{task}[/versions/{v}]/ready``        200 when that version can answer
``POST /v2/models/{task}[/versions/{v}]/infer``        inference through the shared batcher
=====================================================  ========================================

A model is a task; its versions are the task's immutable stored versions (sha256 ids; a
unique prefix of at least 8 characters works too). Without a version, the task's active
version answers; with one, exactly that version does, whatever is active now.

Tensors: one input, ``BYTES``, shape ``[n]`` (or ``[n, 1]``), named ``text`` for a text
backbone (UTF-8 strings), ``image`` for a vision or ``audio`` for an audio backbone
(base64 strings of encoded files in JSON; raw bytes with Triton's binary tensor extension, see
:mod:`service.v2_binary`). Outputs: one tensor per field of the task type's answer (what
``/predict`` returns per input), whatever the type, by the field's value: a string is
``BYTES [n]`` (``label``), a number ``FP32 [n]`` (``score``), a mapping of names to numbers
``FP32 [n, k]`` with the names, in order, in the tensor's ``parameters.names`` (``scores``
of a classifier, ``values`` of a regression), anything else (a list, e.g. the ``labels`` of
a multi-label task, or nested objects) ``BYTES [n]`` of JSON texts. A task type with typed
arrays (``TaskType.arrays``) answers with those instead: a detection task ``boxes`` FP32
``[boxes, 4]``, ``labels`` BYTES ``[boxes]``, ``scores`` FP32 ``[boxes]`` and ``box_image``
INT32 ``[boxes]`` (the input each box is on), every box of the request image after image; a
segmentation task ``mask`` UINT8 ``[n, H, W]`` (class indices; images of different sizes are
padded to the largest with 255), ``mask_size`` INT32 ``[n, 2]`` (height, width) and ``shares``
FP32 ``[n, labels]``. The metadata lists them (from the task type's answer to
a probe output; -1 for a variable dimension). Request ``outputs`` selects among them.
Request ``parameters`` may carry ``/predict``'s task options, ``threshold`` and ``max_detections``
(a detection task's, within its manifest's limits: a 400 naming the limit otherwise).
Errors are ``{"error": "<message>"}`` (:mod:`service.protocol_errors`).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import torch

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from adapters.errors import InvalidInput, TaskswapError
from service.errors import status_for
from service.protocol_errors import V2Error, error_responses
from service import task_paths  # noqa: F401  (registers the {task:task} convertor)
from service.request_limits import MAX_TASK_NAME_CHARS
from service.routes_common import Svc, deferred_inputs, observed

router = APIRouter(prefix="/v2", tags=["open-inference-protocol-v2"])
_RESPONSES = error_responses(V2Error)
TaskPath = Path(min_length=1, max_length=MAX_TASK_NAME_CHARS, description=(
    "Task name (the model): 'task' or 'namespace/task'."))
VersionPath = Path(min_length=8, max_length=64, description="Stored version: sha256 id or unique prefix.")
BYTES_B64 = "base64"  # an input's parameters.content_encoding: its BYTES elements are base64
Parameters = dict[str, str | int | float | bool]


# ---- schemas -----------------------------------------------------------------------------
class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 for a variable dimension.")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str] = Field(description="Every stored version, oldest first.")
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: Parameters | None = Field(None, description=(
        "version (the one that would answer), task_type, kind, backbone, output_names (JSON list)."))


class ModelReady(BaseModel):
    name: str
    version: str | None = None
    ready: bool


class InferInput(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    shape: list[int] = Field(min_length=1, max_length=8)
    datatype: str = Field(min_length=1, max_length=16)
    parameters: Parameters | None = None
    data: list[Any] = Field(description="Row-major elements, flat or nested.")


class RequestedOutput(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    parameters: Parameters | None = None


class InferRequest(BaseModel):
    id: str | None = Field(None, max_length=256)
    parameters: Parameters | None = None
    inputs: list[InferInput] = Field(min_length=1, max_length=8)
    outputs: list[RequestedOutput] | None = Field(None, max_length=8)


class OutputTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: list[str] | list[int] | list[float]


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[OutputTensor]


# ---- server ------------------------------------------------------------------------------
@router.get("", response_model=ServerMetadata, responses=_RESPONSES)
def server_metadata() -> ServerMetadata:
    """Server name, version and protocol extensions."""
    try:
        v = version("taskswap")
    except PackageNotFoundError:
        v = "0"
    return ServerMetadata(name="taskswap", version=v, extensions=["binary_tensor_data"])


@router.get("/health/live", response_model=Live, responses=_RESPONSES)
def live(svc: Svc):
    """200 while the server runs (503 once startup failed)."""
    ok = svc.engine.state != "failed"
    return JSONResponse({"live": ok}, status_code=200 if ok else 503)


@router.get("/health/ready", response_model=Ready, responses=_RESPONSES)
def ready(svc: Svc):
    """200 once backbones are loaded and warmed up (503 before)."""
    return JSONResponse({"ready": svc.engine.ready}, status_code=200 if svc.engine.ready else 503)


# ---- models ------------------------------------------------------------------------------
# A task name may hold a '/' (namespace/task): ``{task:path}``, and the routes with words
# after the name come first, the bare one last (Starlette tries routes in order).
@router.get("/models/{task:path}/versions/{version}/ready", response_model=ModelReady, responses=_RESPONSES)
async def model_version_ready(svc: Svc, task: str = TaskPath, version: str = VersionPath) -> ModelReady:
    """200 when that stored version is loaded (or loads now) and can answer."""
    async with observed(svc, "v2"):
        loaded, _ = svc.engine.task_model(task, version)
        return ModelReady(name=task, version=loaded.version, ready=True)


@router.post("/models/{task:path}/versions/{version}/infer", response_model=InferResponse,
             response_model_exclude_none=True, responses=_RESPONSES)
async def infer_version(body: InferRequest, svc: Svc, task: str = TaskPath,
                        version: str = VersionPath) -> InferResponse:
    """Inference on exactly this stored version (rollouts, reproducible evaluation)."""
    return await _infer(svc, task, version, body)



@router.get("/models/{task:path}/versions/{version}", response_model=ModelMetadata,
            response_model_exclude_none=True, responses=_RESPONSES)
async def model_version_metadata(svc: Svc, task: str = TaskPath, version: str = VersionPath) -> ModelMetadata:
    """One stored version of a task as a model."""
    async with observed(svc, "v2"):
        return _metadata(svc, task, version)


@router.get("/models/{task:path}/ready", response_model=ModelReady, responses=_RESPONSES)
async def model_ready(svc: Svc, task: str = TaskPath) -> ModelReady:
    """200 when the task's active version is loaded (or loads now) and can answer."""
    async with observed(svc, "v2"):
        loaded, _ = svc.engine.task_model(task)
        return ModelReady(name=task, version=loaded.version, ready=True)


@router.post("/models/{task:path}/infer", response_model=InferResponse, response_model_exclude_none=True,
             responses=_RESPONSES)
async def infer(body: InferRequest, svc: Svc, task: str = TaskPath) -> InferResponse:
    """Inference on the task's active version."""
    return await _infer(svc, task, None, body)


@router.get("/models/{task:task}", response_model=ModelMetadata, response_model_exclude_none=True,
            responses=_RESPONSES)
async def model_metadata(svc: Svc, task: str = TaskPath) -> ModelMetadata:
    """A task as a model: its versions, input tensor and output tensors."""
    async with observed(svc, "v2"):
        return _metadata(svc, task, None)

# ---- helpers -----------------------------------------------------------------------------
def _input_name(modality: str) -> str:
    return modality  # "text", "image", "audio"


def _metadata(svc, task: str, version: str | None) -> ModelMetadata:
    loaded, versions = svc.engine.task_model(task, version)
    names = loaded.task.output_names(loaded.manifest)
    outputs = [TensorMetadata(name=t.name, datatype=t.datatype, shape=[-1, *(d or -1 for d in t.shape[1:])])
               for t in _probe_tensors(loaded)]
    return ModelMetadata(
        name=task, versions=versions, platform="taskswap",
        inputs=[TensorMetadata(name=_input_name(loaded.backbone.modality), datatype="BYTES", shape=[-1])],
        outputs=outputs,
        parameters={"version": loaded.version, "task_type": loaded.manifest.task_type,
                    "kind": loaded.kind, "backbone": loaded.backbone.name,
                    "output_names": json.dumps(list(names))})


def _probe_tensors(loaded) -> list[OutputTensor]:
    """The tensors a task answers with, from its task type's answer to a probe output."""
    n = len(loaded.task.output_names(loaded.manifest))
    return answer_tensors(loaded.task.rows(loaded, torch.full((1, n), 1.0 / n)), loaded.task)  # probe: [1, outputs]


def answer_tensors(rows: list, task=None) -> list[OutputTensor]:
    """The v2 tensors of a task's answers (``RowResult`` rows, same fields each): its task
    type's typed arrays when it has them (``TaskType.arrays``: a detector's boxes FP32
    ``[n, 4]``, a segmenter's masks UINT8), else one tensor per field, by the field's value.

    >>> from adapters.tasks import RowResult
    >>> [(t.name, t.datatype, t.shape) for t in answer_tensors([RowResult(label="a", score=0.9,
    ...     scores={"a": 0.9, "b": 0.1}), RowResult(label="b", score=0.6, scores={"a": 0.4, "b": 0.6})])]
    [('label', 'BYTES', [2]), ('score', 'FP32', [2]), ('scores', 'FP32', [2, 2])]
    """
    typed = task.arrays(rows) if task is not None else None
    if typed is not None:
        return [_typed_tensor(a) for a in typed]
    n, out = len(rows), []
    for name in rows[0].keys() if rows else []:
        vals = [r[name] for r in rows]
        first = vals[0]
        if first is None:
            continue
        if isinstance(first, str):
            out.append(OutputTensor(name=name, shape=[n], datatype="BYTES", data=vals))
        elif isinstance(first, dict) and all(_number(x) for x in first.values()):
            keys = list(first)
            out.append(OutputTensor(name=name, shape=[n, len(keys)], datatype="FP32",
                                    parameters={"names": json.dumps(keys)},
                                    data=[float(v[k]) for v in vals for k in keys]))
        elif _number(first):
            out.append(OutputTensor(name=name, shape=[n], datatype="FP32", data=[float(v) for v in vals]))
        else:  # lists (multi-label labels), nested structures (spans...): one JSON text per input
            out.append(OutputTensor(name=name, shape=[n], datatype="BYTES",
                                    parameters={"content": "json"}, data=[json.dumps(v) for v in vals]))
    return out


async def _infer(svc, task: str, version: str | None, body: InferRequest) -> InferResponse:
    start, status, n_inputs = time.perf_counter(), 500, 0
    try:
        async with observed(svc, "v2"):
            loaded, _ = svc.engine.task_model(task, version)
            modality = loaded.backbone.modality
            items = _bytes_input(body, _input_name(modality))
            wanted = _wanted_outputs(body, [t.name for t in _probe_tensors(loaded)])
            decode = deferred_inputs(svc, items, modality, where="inputs[0].data")  # decoded once admitted
            # Pinned to the version resolved above: a rollback landing now cannot change it.
            _, results = await svc.engine.predict([task], decode, modality,
                                                  versions={task: loaded.version},
                                                  options=_task_options(body.parameters))
            status, n_inputs = 200, len(items)
    except TaskswapError as exc:
        status = status_for(exc)[0]
        raise
    finally:
        svc.metrics.observe_request([task], status, time.perf_counter() - start, n_inputs)
    r = results[0]
    tensors = {t.name: t for t in answer_tensors(r.rows, loaded.task)}
    return InferResponse(model_name=task, model_version=r.version, id=body.id,
                         outputs=[tensors[name] for name in wanted if name in tensors])


_DATATYPES = {"float32": "FP32", "int32": "INT32", "uint8": "UINT8", "object": "BYTES"}


def _typed_tensor(a) -> OutputTensor:
    """A task type's typed array (``adapters.tasks.base.OutputArray``) as a v2 tensor."""
    params = {"names": json.dumps(a.names)} if a.names is not None else None
    return OutputTensor(name=a.name, shape=list(a.array.shape), datatype=_DATATYPES[a.array.dtype.name],
                        parameters=params, data=a.array.ravel().tolist())


TASK_OPTIONS = {"threshold": (int, float), "max_detections": (int,)}  # /predict's, as request parameters


def _task_options(parameters: Parameters | None) -> dict | None:
    """A request's task options (``/predict``'s ``threshold``, ``max_detections``) from its
    ``parameters``; other parameters are the protocol's or a client's and are left alone.
    Their limits are the task's (checked when the request is prepared)."""
    found = {k: v for k, v in (parameters or {}).items() if k in TASK_OPTIONS}
    bad = [f"parameters.{k} must be {'an integer' if k == 'max_detections' else 'a number'}, got {v!r}"
           for k, v in found.items()
           if isinstance(v, bool) or not isinstance(v, TASK_OPTIONS[k])]
    InvalidInput.collect(bad)
    return found or None


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _bytes_input(body: InferRequest, expected: str) -> list[str]:
    """The strings of the request's one BYTES input (base64-decoded text when so marked)."""
    if len(body.inputs) != 1:
        raise InvalidInput(f"send exactly one input tensor named {expected!r}, got {len(body.inputs)}")
    t = body.inputs[0]
    problems = []
    if t.name != expected:
        problems.append(f"input {t.name!r} is unknown: this model's input is {expected!r}")
    if t.datatype != "BYTES":
        problems.append(f"input {t.name!r} has datatype {t.datatype!r}; it must be 'BYTES'")
    InvalidInput.collect(problems)
    items = _flatten(t.data)
    count = 1
    for d in t.shape:
        if d < 0:
            raise InvalidInput(f"input shape {t.shape} has a negative dimension")
        count *= d
    if len(t.shape) > 2 or (len(t.shape) == 2 and t.shape[1] != 1):
        raise InvalidInput(f"input shape {t.shape} is not supported: use [n] or [n, 1]")
    if count != len(items):
        raise InvalidInput(f"input shape {t.shape} holds {count} elements but data has {len(items)}")
    bad = [i for i, x in enumerate(items) if not isinstance(x, str)]
    if bad:
        raise InvalidInput(f"input data elements {bad[:5]} are not strings (BYTES in JSON are strings)")
    encoding = (t.parameters or {}).get("content_encoding")
    if encoding == BYTES_B64 and expected == "text":  # binary extension: raw UTF-8 bytes, base64 here
        try:
            items = [base64.b64decode(x, validate=True).decode("utf-8") for x in items]
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidInput(f"input 'text' holds bytes that are not UTF-8 text ({exc})") from exc
    return items


def _flatten(data: list) -> list:
    out = []
    for x in data:
        if isinstance(x, list):
            out.extend(_flatten(x))
        else:
            out.append(x)
    return out


def _wanted_outputs(body: InferRequest, names: list[str]) -> list[str]:
    if not body.outputs:
        return names
    asked = [o.name for o in body.outputs]
    unknown = [a for a in asked if a not in names]
    if unknown:
        raise InvalidInput(f"outputs {unknown} are unknown: this model's outputs are {names}")
    return asked
