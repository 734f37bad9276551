"""The BentoML service: ``bentoml serve service.service:Taskswap`` from the repository root.

BentoML 1.4 runs the process (workers, ``/healthz`` ``/livez`` ``/readyz`` ``/metrics``,
``/docs.json``); our routes live on a FastAPI app mounted with ``@bentoml.asgi_app``
because BentoML's own ``@bentoml.api`` routes are POST-only, with no path parameters,
``DELETE`` or custom status codes. The routes are methods of the service class
(BentoML injects the instance as ``self``), thin translations between pydantic models and
:class:`service.engine.Engine`; batching is ours (:class:`adapters.batching.Batcher`),
across requests whatever their task, not BentoML's per-endpoint adaptive batching.

Endpoints (admin = needs the admin token; the others are open unless an inference token
is set): ``POST /predict`` (texts, images or audio), ``POST /predict/upload``, ``GET /backbones``,
``GET /adapters``, ``GET /adapters/{name}``, ``POST /adapters`` (admin),
``POST /adapters/{name}/activate`` (admin), ``POST /adapters/{name}/pin`` (admin),
``DELETE /adapters/{name}`` (admin); rollouts (docs/rollout.md): ``POST /adapters/{name}/fit``
(admin, 202 + a job), ``GET /jobs/{id}`` (admin), ``GET /adapters/{name}/rollout``,
``POST /adapters/{name}/rollout``, ``POST /adapters/{name}/promote`` and
``DELETE /adapters/{name}/rollout`` (admin); and, in their own modules, ``POST /embed``
(:mod:`service.routes_embed`), the OpenAI-compatible ``/v1/embeddings`` and ``/v1/models``
(:mod:`service.routes_openai`), the Open Inference Protocol's ``/v2/...``
(:mod:`service.routes_v2`) and ``GET/PUT/DELETE /admin/namespaces/{namespace}/quota`` (admin,
:mod:`service.routes_quota`).
"""

from __future__ import annotations

import os

# Before transformers is imported anywhere: no hub access, no progress bars, less noise.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import asyncio  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
from typing import Annotated  # noqa: E402

import anyio  # noqa: E402
import bentoml  # noqa: E402
from fastapi import Depends, FastAPI, File, Form, Path, Query, Request, Response, UploadFile  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from adapters.errors import InvalidInput, NotFound, TaskswapError  # noqa: E402
from adapters.namespaces import namespace_of  # noqa: E402
from adapters.store.base import NAMESPACES_ROOT, stored_task  # noqa: E402
from service.audio_inputs import audio_limits_from, looks_like_audio  # noqa: E402
from adapters.embed_spec import EmbedSpec  # noqa: E402
from service import access, audit, task_paths  # noqa: E402,F401  (task_paths: the {name:task} convertor)
from service.auth import Auth, AuthGuard  # noqa: E402
from service.jwt_auth import JwtVerifier  # noqa: E402
from service import decoding, uvicorn_errors  # noqa: E402
from service.client_key import ClientKey  # noqa: E402
from service.generation import generate_all  # noqa: E402
from service.lazy_modules import lazy_module  # noqa: E402
from service.errors import install_error_handlers, status_for  # noqa: E402
from service.inputs import InputLimits, MAX_TASK_NAME_CHARS, MAX_TASKS, check_task_names, check_texts  # noqa: E402
from service.request_inputs import check_items, decode_items, decode_raw  # noqa: E402
from service.metrics import ServiceMetrics  # noqa: E402
from service.metrics_guard import MetricsGuard  # noqa: E402
from service.parent_watch import watch_parent  # noqa: E402
from service import server_timing  # noqa: E402
from service.middleware import (BodyLimit, HeadAsGet, JsonNotFound, LastResort, ReadTimeout,  # noqa: E402
                                ReplicaHeader)
from service.protocol_errors import ProtocolErrors  # noqa: E402
from service.query_params import refuse_unknown_query  # noqa: E402
from service.upload_form import read_file  # noqa: E402
from service.routes_admin import router as admin_router  # noqa: E402
from service.routes_common import json_response  # noqa: E402
from service.routes_completions import router as completions_router  # noqa: E402
from service.routes_embed import router as embed_router  # noqa: E402
from service.routes_openai import router as openai_router  # noqa: E402
from service.routes_quota import router as quota_router  # noqa: E402
from service.routes_shared_sets import router as shared_sets_router  # noqa: E402
from service.routes_tgi import router as tgi_router  # noqa: E402
from service.routes_v2 import router as v2_router  # noqa: E402
from service.v2_binary import V2BinaryBody  # noqa: E402
from service.schemas import (ERROR_RESPONSES, EXPECTED, ActivateRequest, AdapterInfo, AdapterList,  # noqa: E402
                             BackboneInfo, BackboneList, DeleteResponse, PinRequest, Prediction,
                             PredictRequest, PredictResponse, RegisterFromStore, RegisterResponse,
                             TaskPrediction)
from service.rollout_schemas import (AdaptRequest, FitRequest, JobInfo, PromoteResponse, RolloutInfo,  # noqa: E402
                                     RolloutRequest)
from service.settings import Settings  # noqa: E402
from service.tracing import record_prediction_spans  # noqa: E402

log = logging.getLogger("taskswap.service")
# The engine (backbones, adapters, the runtime: torch models, transformers, PEFT) is built
# in the serving worker only; `bentoml serve`'s own process imports this module just to read
# the service's definition, so the engine's module is executed on first use, in
# Taskswap.__init__ (service.lazy_modules; tests/unit/test_serve_imports.py checks it).
engine_module = lazy_module("service.engine")
TaskPath = Annotated[str, Path(min_length=1, max_length=MAX_TASK_NAME_CHARS, description=(
    "Task name: 'task' (the default namespace) or 'namespace/task'."))]
ExpectedQuery = Annotated[str | None, Query(min_length=8, max_length=64, description=EXPECTED)]


@functools.cache
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return Settings()


def check_settings_or_exit() -> None:
    """Fail ``bentoml serve`` at once, with the reason, when the environment is invalid
    (rather than a worker that fails its startup again and again)."""
    try:
        get_settings()
    except ValidationError as exc:
        raise SystemExit(f"invalid Taskswap settings (TASKSWAP_* environment variables):\n{exc}") from None


@functools.cache
def get_auth() -> Auth:
    s = get_settings()
    verifier = JwtVerifier.from_files(s.jwt_public_key_file, s.jwt_jwks_file, s.jwt_claim,
                                      s.jwt_audience, s.jwt_issuer)
    return Auth(s.admin_token, s.inference_token, jwt=verifier)  # scoped tokens once the engine runs


check_settings_or_exit()  # runs in the `bentoml serve` process too, before any worker starts
uvicorn_errors.install(lambda: get_settings().replica_id)  # uvicorn's own 400s: JSON too
app = FastAPI(title="Taskswap", docs_url=None, redoc_url=None, openapi_url=None,
              dependencies=[Depends(refuse_unknown_query)])
install_error_handlers(app)
# Added last = outermost: LastResort wraps AuthGuard wraps ReadTimeout wraps BodyLimit wraps
# V2BinaryBody wraps ClientKey wraps the routes (ReplicaHeader and HeadAsGet wrap BentoML's
# whole app, at the end of this file).
app.add_middleware(ClientKey)  # the fair queue's key for this request's work (service.client_key)
app.add_middleware(V2BinaryBody)  # inside BodyLimit: it buffers an already capped body
app.add_middleware(BodyLimit, limit=lambda: get_settings().max_upload_bytes)
app.add_middleware(ReadTimeout, timeout=lambda: get_settings().read_timeout_s)
app.add_middleware(AuthGuard, auth=get_auth)
app.add_middleware(LastResort)
for _router in (embed_router, openai_router, completions_router, tgi_router, v2_router, admin_router, quota_router,
                shared_sets_router):  # routes that call self.engine too
    app.include_router(_router)

_REGISTER_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {
        "type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary",
                     "description": "zip or tar.gz of an adapter directory"},
            "name": {"type": "string", "description": "task name (overrides the manifest)"},
            "labels": {"type": "string",
                       "description": "label names: a JSON list or comma-separated"},
            "backbone": {"type": "string", "description": "backbone to attach to"},
            "expected_version": {"type": "string", "description": (
                "409 unless this version (sha256 or 8+ character prefix) is the active one")}}}},
    "application/json": {"schema": RegisterFromStore.model_json_schema()},
}}}


@bentoml.service(name="taskswap", workers=1, traffic={"timeout": 300})
@bentoml.asgi_app(app, path="/")
class Taskswap:
    """One process: the backbones once, every task's adapter, one batcher across tasks."""

    def __init__(self) -> None:
        logging.getLogger("taskswap").setLevel(logging.INFO)
        watch_parent()  # a SIGKILLed `bentoml serve` never leaves this worker holding the port
        self.settings = get_settings()
        self.limits = InputLimits.from_settings(self.settings)
        self.audio_limits = audio_limits_from(self.settings)
        decoding.configure(self.settings.decode_budget_mb << 20, self.settings.decode_wait_s)
        self.metrics = ServiceMetrics(self.settings.metrics_max_tasks, self.settings.metrics_max_labels,
                                      self.settings.metrics_max_namespaces)
        self.engine = engine_module.Engine(self.settings, self.metrics)
        get_auth().attach(lambda: self.engine.tokens)  # scoped tokens: read from the store
        self.engine.start_in_background()

    def __is_ready__(self) -> bool:
        """``/readyz``: backbones loaded and warmed up, store caught up."""
        return self.engine.ready

    def __is_alive__(self) -> bool:
        """``/livez``: fails only when startup failed (an orchestrator restarts us)."""
        return self.engine.state != "failed"

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        self.engine.close()

    # ---- inference ---------------------------------------------------------------------
    @app.post("/predict", response_model=PredictResponse, response_model_exclude_none=True,
              responses=ERROR_RESPONSES)
    async def predict(self, body: PredictRequest, request: Request) -> Response:
        """One or several tasks on texts, base64 images or base64 audio; the backbone runs once for all.

        A task in canary is answered by its candidate for a share of callers; send a stable
        caller id in the routing header (``X-Taskswap-Routing-Key``) to stay on one version."""
        embed = EmbedSpec(body.pooling, body.normalize) if body.embed else None
        key = request.headers.get(self.settings.routing_header)
        if body.texts is not None:
            texts = body.texts
            check_items(texts, "texts", self.limits)
            tasks = check_task_names(body.task_names())
            if self.engine.lms and await anyio.to_thread.run_sync(self.engine.generates, tasks):
                return await self._generate(tasks, check_texts(texts, self.limits), request)
            return await self._predict(tasks, len(texts), lambda: decode_items(
                texts, "text", "texts", self.limits, self.audio_limits), "text", embed, key,
                subtokens=body.subtokens, options=body.options())
        modality, field = ("audio", "audio") if body.audio is not None else ("image", "images")
        items = (body.audio if body.audio is not None else body.images) or []
        check_items(items, field, self.limits)
        return await self._predict(check_task_names(body.task_names()), len(items), lambda: decode_items(
            items, modality, field, self.limits, self.audio_limits), modality, embed, key,
            options=body.options())

    @app.post("/predict/upload", response_model=PredictResponse, response_model_exclude_none=True,
              responses=ERROR_RESPONSES)
    async def predict_upload(
        self,
        request: Request,
        files: Annotated[list[UploadFile], File(description=(
            "Image files (PNG, JPEG, GIF, BMP, WEBP, TIFF) or audio files (WAV, FLAC, OGG)."))],
        task: Annotated[list[str], Form(description="Task name; repeat the field, or comma-separate, for several.")],
    ) -> Response:
        """Images or audio clips as multipart file uploads (``-F files=@cat.jpg -F task=animals``,
        ``-F files=@seven.wav -F task=spoken-digits``); the files' magic bytes tell which."""
        if len(task) > MAX_TASKS:  # before splitting: bound the work on the fields too
            check_task_names(task)
        tasks = check_task_names([t.strip() for field in task for t in field.split(",") if t.strip()])
        key = request.headers.get(self.settings.routing_header)
        check_items(files, "files", self.limits)
        most = max(self.limits.max_image_bytes, self.audio_limits.max_bytes)
        raw = [await f.read(most + 1) for f in files]
        names = [f.filename or f"files[{i}]" for i, f in enumerate(files)]
        audio = [looks_like_audio(data) for data in raw]
        if any(audio) and not all(audio):
            raise InvalidInput(f"files {[names[i] for i, a in enumerate(audio) if not a][:5]} are not "
                               "audio but others are: send images and audio in separate requests")
        modality = "audio" if audio and all(audio) else "image"
        where = [f"files[{i}] ({names[i]!r})" for i in range(len(raw))]
        return await self._predict(tasks, len(raw), lambda: decode_raw(
            raw, where, modality, self.limits, self.audio_limits), modality, routing_key=key)

    async def _predict(self, tasks: list[str], n_inputs: int, decode, modality: str,
                       embed: EmbedSpec | None = None, routing_key: str | None = None,
                       subtokens: bool = False, options: dict | None = None) -> Response:
        """``decode()`` checks the texts or decodes the images / clips: the engine calls it once
        the namespace's in-flight slot is granted (:mod:`service.admission`), in the worker
        thread that prepares the request, so a request waiting for admission costs no CPU."""
        start, status = time.perf_counter(), 500
        stamps, seen = {"entered": time.time_ns()}, []

        def trace(prepared) -> None:
            seen.append(prepared.timings)
            record_prediction_spans(prepared, tasks)
        try:
            self.engine.require_ready()
            backbone, results = await self.engine.predict(
                tasks, decode, modality, embed, routing_key=routing_key, trace=trace, options=options,
                stamps=stamps)
            status = 200
            response = json_response(PredictResponse(backbone=backbone, results=[TaskPrediction(
                task=r.task, version=r.version, kind=r.kind, task_type=r.task_type, role=r.role,
                predictions=[_prediction(p, subtokens) for p in r.rows]) for r in results],
                embeddings=self._embedded(backbone, results.embeddings)), exclude_none=True)
            if self.settings.server_timing and seen:
                response.headers[server_timing.HEADER] = server_timing.header(
                    server_timing.stages(seen[0], time.time_ns()))
            return response
        except TaskswapError as exc:
            status = status_for(exc)[0]
            raise
        finally:
            self.metrics.observe_request(tasks, status, time.perf_counter() - start, n_inputs)

    async def _generate(self, tasks: list[str], prompts: list[str], request: Request) -> PredictResponse:
        """Generation tasks on ``/predict``: each text is a prompt, each answer its generated text."""
        start, status = time.perf_counter(), 500
        try:
            out = await generate_all(self.engine, tasks, prompts, request, self.settings.predict_timeout_s)
            status = 200
            return PredictResponse(backbone=out[0][0].backbone.name, results=[TaskPrediction(
                task=a.name, version=a.version, kind=a.kind, task_type=a.manifest.task_type,
                predictions=[Prediction(text=c.text, finish_reason="length" if c.finish_reason == "length" else "stop",
                                        generated_tokens=c.completion_tokens) for c in cs]) for a, cs in out])
        except TaskswapError as exc:
            status = status_for(exc)[0]
            raise
        finally:
            self.metrics.observe_request(tasks, status, time.perf_counter() - start, len(prompts))

    def _embedded(self, backbone: str, embeddings) -> list[list[float]] | None:
        if embeddings is None:
            return None
        self.metrics.observe_embedded(backbone, len(embeddings))
        return embeddings.tolist()  # [inputs, hidden]

    @app.get("/backbones", response_model=BackboneList, responses=ERROR_RESPONSES)
    def backbones(self) -> BackboneList:
        """The frozen backbones this server holds (name, source, fingerprint, preprocessing)."""
        return BackboneList(backbones=[BackboneInfo(**d) for d in self.engine.describe_backbones()])

    # ---- adapters: read ----------------------------------------------------------------
    @app.get("/adapters", response_model=AdapterList, responses=ERROR_RESPONSES)
    def list_adapters(
        self,
        name: Annotated[str | None, Query(
            max_length=MAX_TASK_NAME_CHARS, description="Only tasks whose name contains this (case-insensitive).")] = None,
        offset: Annotated[int, Query(ge=0, description="Skip this many matching tasks.")] = 0,
        limit: Annotated[int | None, Query(
            ge=1, le=1000, description="At most this many tasks (1-1000); omitted: all that match.")] = None,
    ) -> AdapterList:
        """Tasks by name: active version, history, kind, labels, metrics, and state on this
        replica; filtered by ``name`` and paged by ``offset``/``limit`` (``next_offset``)."""
        generation, items, total, next_offset = self.engine.page(name, offset, limit)
        return AdapterList(replica_id=self.settings.replica_id, generation=generation,
                           adapters=[AdapterInfo(**a) for a in items], total=total,
                           next_offset=next_offset)

    # ---- adapters: admin -----------------------------------------------------------------
    @app.post("/adapters", status_code=201, response_model=RegisterResponse,
              responses=ERROR_RESPONSES, openapi_extra=_REGISTER_BODY)
    async def register(self, request: Request) -> RegisterResponse:
        """(admin) Register an adapter: multipart ``file`` = zip/tar.gz archive (with optional
        ``name``, ``labels``, ``backbone`` fields), or JSON ``{"store_path": "imports/x"}``."""
        self.engine.require_ready()
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        # The work runs on the engine's one registration thread (service.registrations);
        # shielded: an admin who hangs up does not undo a registration already queued.
        # The task's name may come from the manifest inside the upload: the registration
        # checks the caller's role on it once it is known, before anything is loaded or stored.
        principal = access.current()

        def authorize(task: str) -> None:
            principal.check("register", task)
        if ctype == "multipart/form-data":
            data, name, labels, backbone, expected = await _archive_form(request)
            if name is not None:
                principal.check("register", name)
            job = self.engine.submit_registration(
                self.engine.register_archive, data, name, labels, backbone, expected, authorize)
        elif ctype == "application/json":
            body = _parse_json_model(await request.body(), RegisterFromStore)
            if body.name is not None:
                principal.check("register", body.name)
            source = stored_task(body.store_path)
            if source == NAMESPACES_ROOT and not principal.everywhere:
                raise NotFound(f"store path {body.store_path!r} does not exist in the store")
            if source is not None and source != NAMESPACES_ROOT:  # a task's stored files: the caller must read that task
                principal.check("infer", source)
            job = self.engine.submit_registration(
                self.engine.register_path, body.store_path, body.name, body.labels, body.backbone,
                body.expected_version, authorize)
        else:
            raise InvalidInput(f"content type {ctype or 'none'!r} is not accepted: send "
                               "multipart/form-data with the archive in 'file', or "
                               "application/json {\"store_path\": ...}")
        loaded, previous = await asyncio.shield(asyncio.wrap_future(job))
        self._audit("register", loaded.name, before=previous, after=loaded.version,
                    detail={"kind": loaded.manifest.kind})
        m = loaded.manifest
        return RegisterResponse(name=loaded.name, version=loaded.version, kind=m.kind,
                                task_type=m.task_type, labels=m.labels, outputs=m.outputs or None,
                                backbone=loaded.backbone.name,
                                load_seconds=round(loaded.load_seconds, 6), previous_version=previous)

    @app.post("/adapters/{name:path}/activate", response_model=AdapterInfo, responses=ERROR_RESPONSES)
    def activate(self, name: TaskPath, body: ActivateRequest) -> AdapterInfo:
        """(admin) Make a stored version active: rollback or roll forward, atomically."""
        before = self.engine.show(name)["active_version"]
        info = AdapterInfo(**self.engine.activate(name, body.version, body.expected_version))
        self._audit("activate", name, before=before, after=info.active_version)
        return info

    @app.post("/adapters/{name:path}/pin", response_model=AdapterInfo, responses=ERROR_RESPONSES)
    def pin(self, name: TaskPath, body: PinRequest | None = None) -> AdapterInfo:
        """(admin) Keep a LoRA task resident whatever the memory budget (``{"pinned": false}`` releases)."""
        pinned = True if body is None else body.pinned
        info = AdapterInfo(**self.engine.pin(name, pinned))
        self._audit("pin", name, after=info.active_version, detail={"pinned": pinned})
        return info

    # ---- fit jobs and rollouts (admin, except the rollout report) ---------------------------
    @app.post("/adapters/{name:path}/fit", status_code=202, response_model=JobInfo, responses=ERROR_RESPONSES)
    def fit(self, name: TaskPath, body: FitRequest) -> JobInfo:
        """(admin) Fit a head on labelled examples, as a job (``GET /jobs/{id}`` follows it);
        register it as active, as a shadow/canary candidate, or only if it is better."""
        self.engine.require_ready()
        job = JobInfo(**self.engine.rollouts.submit_fit(name, body))
        self._audit("fit", name, detail={"job": job.id})
        return job

    @app.post("/adapters/{name:path}/adapt", status_code=202, response_model=JobInfo, responses=ERROR_RESPONSES)
    def adapt(self, name: TaskPath, body: AdaptRequest) -> JobInfo:
        """(admin) Adapt the task's active head to a new domain from unlabelled inputs, as a job
        (``GET /jobs/{id}`` follows it); the new version goes through the same gate as a fit
        (default: a shadow candidate; ``if_better`` needs labelled target examples)."""
        self.engine.require_ready()
        job = JobInfo(**self.engine.rollouts.submit_adapt(name, body))
        self._audit("adapt", name, detail={"job": job.id})
        return job

    @app.get("/jobs/{job_id}", response_model=JobInfo, responses=ERROR_RESPONSES)
    def job(self, job_id: Annotated[str, Path(max_length=64)]) -> JobInfo:
        """(admin) A fit job: status, phase, and its result or error; any replica answers."""
        self.engine.require_ready()
        record = self.engine.rollouts.jobs.get(job_id)
        if not access.current().has("register", namespace_of(record["task"])):
            raise NotFound(f"job {job_id!r} does not exist")  # another namespace's job: not there
        return JobInfo(**record)

    @app.get("/adapters/{name:path}/rollout", response_model=RolloutInfo, responses=ERROR_RESPONSES)
    def rollout(self, name: TaskPath) -> RolloutInfo:
        """The task's candidate policy and this replica's shadow comparison."""
        self.engine.require_ready()
        return RolloutInfo(**self.engine.rollouts.report(name))

    @app.post("/adapters/{name:path}/rollout", response_model=RolloutInfo, responses=ERROR_RESPONSES)
    def set_rollout(self, name: TaskPath, body: RolloutRequest) -> RolloutInfo:
        """(admin) Put a stored version in shadow or canary (every replica follows)."""
        self.engine.require_ready()
        info = RolloutInfo(**self.engine.rollouts.set(name, body.version, body.mode, body.fraction))
        self._audit("rollout_set", name, before=info.active_version, after=info.candidate_version,
                    detail={"mode": info.mode, "fraction": info.fraction})
        return info

    @app.delete("/adapters/{name:path}/rollout", response_model=RolloutInfo, responses=ERROR_RESPONSES)
    def drop_rollout(self, name: TaskPath) -> RolloutInfo:
        """(admin) Drop the candidate policy; the active version keeps serving."""
        self.engine.require_ready()
        candidate = self.engine.rollouts.report(name).get("candidate_version")
        info = RolloutInfo(**self.engine.rollouts.drop(name))
        self._audit("rollout_clear", name, before=candidate, after=info.active_version)
        return info

    @app.post("/adapters/{name:path}/promote", response_model=PromoteResponse, responses=ERROR_RESPONSES)
    def promote(self, name: TaskPath) -> PromoteResponse:
        """(admin) Make the candidate the active version, atomically, and end the rollout."""
        self.engine.require_ready()
        out = PromoteResponse(**self.engine.rollouts.promote(name))
        self._audit("promote", name, before=out.previous_version, after=out.active_version)
        return out

    @app.delete("/adapters/{name:task}", response_model=DeleteResponse, responses=ERROR_RESPONSES)
    def delete(self, name: TaskPath, expected_version: ExpectedQuery = None) -> DeleteResponse:
        """(admin) Remove a task and all its versions (``?expected_version=``: 409 unless active)."""
        before = self.engine.show(name)["active_version"]
        self.engine.delete(name, expected_version)
        self._audit("delete", name, before=before)
        return DeleteResponse(name=name, deleted=True)

    # Declared last: ``{name:path}`` would also match ``team/task/rollout``, so the routes
    # with a word after the name come first (service.auth's table reads the same way).
    @app.get("/adapters/{name:task}", response_model=AdapterInfo, responses=ERROR_RESPONSES)
    def show_adapter(self, name: TaskPath) -> AdapterInfo:
        """One task (``team/task`` for a task in namespace ``team``)."""
        return AdapterInfo(**self.engine.show(name))

    def _audit(self, what: str, task: str | None, **fields) -> None:
        """An audit record of an admin action by this request's caller (service.audit)."""
        audit.record(self.engine.store, access.current().id, what, task, **fields)

# Around BentoML's whole app (its 404 page, /readyz, /livez, /metrics, /docs.json included);
# the first added is the outermost: ReplicaHeader labels every response, rewritten ones too;
# HeadAsGet answers HEAD wherever GET is; ProtocolErrors gives every /v1 and /v2 error
# (JsonNotFound's too) its protocol's shape.
Taskswap.add_asgi_middleware(ReplicaHeader, replica_id=lambda: get_settings().replica_id)
Taskswap.add_asgi_middleware(HeadAsGet)
Taskswap.add_asgi_middleware(ProtocolErrors)
Taskswap.add_asgi_middleware(JsonNotFound)
Taskswap.add_asgi_middleware(MetricsGuard, token=lambda: (  # /metrics: 404 without its token, when one is set
    t.get_secret_value() if (t := get_settings().metrics_token) is not None else None))


async def _archive_form(request: Request) -> tuple[bytes, str | None, list[str] | None, str | None, str | None]:
    """``file`` + optional ``name``/``labels``/``backbone``/``expected_version`` from a multipart registration."""
    form = await request.form(max_files=1, max_fields=8)
    try:
        data = await read_file(form, "the adapter archive", "curl -F file=@adapter.zip ...",
                               "the uploaded archive is empty")
        fields = {}
        for key in ("name", "labels", "backbone", "expected_version"):
            value = form.get(key)
            if value is not None and not isinstance(value, str):
                raise InvalidInput(f"multipart field {key!r} must be text, not a file")
            fields[key] = value.strip() or None if value is not None else None
        return (data, fields["name"], parse_labels(fields["labels"]), fields["backbone"],
                fields["expected_version"])
    finally:
        await form.close()


def parse_labels(raw: str | None) -> list[str] | None:
    """A JSON list or comma-separated label names.

    >>> parse_labels('["neg", "pos"]'), parse_labels("neg, pos"), parse_labels(None)
    (['neg', 'pos'], ['neg', 'pos'], None)
    """
    if raw is None:
        return None
    if raw.startswith("["):
        try:
            labels = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"labels is not a JSON list ({exc}); send [\"a\", \"b\"] or a,b") from exc
        if not isinstance(labels, list):
            raise InvalidInput("labels must be a JSON list of strings or a,b")
        return labels  # checked with adapter.json's rule in check_registration_fields
    return [x.strip() for x in raw.split(",") if x.strip()] or None


def _parse_json_model(raw: bytes, model):
    """Validate a JSON body read by hand (for routes accepting several content types)."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from exc


def _prediction(row, subtokens: bool) -> Prediction:
    """A row's fields as the response model; raw sub-tokens only when the request asked."""
    fields = dict(**row)
    if not subtokens:
        fields.pop("tokens", None)
    return Prediction(**fields)
