"""Everything one worker process serves, behind a small API the HTTP routes call.

The engine owns the backbones, the registry over the store, the runtime, the
micro-batcher and the store watcher. It speaks the core's objects (``TaskResult``,
``LoadedAdapter``), never HTTP; the routes in :mod:`service.service` translate.

Startup runs in a background thread so BentoML answers ``/livez`` at once and
``/readyz`` only once every backbone is loaded and has run a forward pass and the task
table is read from the store's index (no adapter is loaded: each loads on its first
request, :meth:`adapters.registry.Registry.start`), so readiness no longer waits for
every registered task to load. The store's gc runs after that, in the background
(``TASKSWAP_STARTUP_GC``). A startup failure is logged and makes ``/livez`` fail too, so
an orchestrator restarts the pod.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, TimeoutError as FutureTimeout
from pathlib import Path
from typing import Callable, Sequence

import anyio
import torch
from PIL import Image

from adapters.backbones.base import Backbone, load_backbone
from adapters.backbones.causal_lm import LMBackbone, load_lm_backbone
from adapters.batching import Batcher
from adapters.cost import Cost, estimate
from adapters.dryrun import check_embeddings_finite, check_rows_finite
from adapters.errors import CapacityError, InvalidInput, NotFound
from adapters.format.archive import extract_archive
from adapters.plugin_checks import read_adapter_dir
from adapters.generation.engine import DecodeEngine, EngineLimits
from adapters.generation.events import GenerationHandle
from adapters.generation.requests import Overrides, request_for
from adapters.generation.shadow import ShadowPair
from adapters.loading import LoadedAdapter
from adapters.namespaces import DEFAULT_NAMESPACE, namespace_of
from adapters.quota_checks import RegistrationQuota, usage_by_namespace
from adapters.quotas import QuotaBook
from adapters.rate_limits import RateLimits
from adapters.registry import Registry
from adapters.rollout import canary_choice
from adapters.runtime import EmbedSpec, PreparedRequest, Results, Runtime
from adapters.upload_cleanup import collect_stale_uploads
from adapters.store import open_store
from service import access
from service.admission import NamespaceGate
from service.client_key import CLIENT
from service.errors import NotReady, PredictTimeout
from service.inputs import InputLimits, check_registration_fields
from service.prediction_log import PredictionLog
from service.registrations import RegistrationQueue
from service.request_cost import check_cost
from service.tokens import TokenBook
from service.rollouts import Rollouts
from service.settings import Settings
from service.watcher import StoreWatcher

log = logging.getLogger("taskswap.service")
Inputs = Sequence | Callable[[], list]
"""A request's inputs, or a function decoding them, called once the request is admitted
(:mod:`service.admission`): a request waiting for its namespace's slot has decoded nothing."""


class Engine:
    """``Engine(settings).start()``, then ``predict`` / ``register_*`` / ``activate`` / ..."""

    def __init__(self, settings: Settings, metrics=None):
        self.settings = settings
        self.metrics = metrics
        self.state = "starting"  # starting | ready | failed
        self.error: str | None = None
        self.backbones: dict[str, Backbone] = {}
        self.lms: dict[str, LMBackbone] = {}  # language models: generation tasks decode on them
        self.generators: dict[str, DecodeEngine] = {}  # one decode engine (thread) per language model
        self.registry: Registry | None = None
        self.runtime: Runtime | None = None
        self.batcher: Batcher | None = None
        self.watcher: StoreWatcher | None = None
        self.limits = InputLimits.from_settings(settings)
        self.store = None  # the adapter store (jobs, store paths); the registry writes adapters to it
        self.tokens: TokenBook | None = None  # scoped credentials, in the store (service.tokens)
        self.rollouts = None  # service.rollouts.Rollouts once started
        self.registrations: RegistrationQueue | None = None  # POST /adapters runs there
        self.prediction_log = PredictionLog.from_settings(settings)
        self.quotas: QuotaBook | None = None  # every namespace's quota (docs/tenancy.md)
        self.rates = RateLimits()  # request-rate and rows-per-second buckets per namespace
        # requests of one namespace past admission at once (service.admission): the namespace's
        # max_inflight quota, else TASKSWAP_NAMESPACE_MAX_INFLIGHT (0: no limit, still counted)
        self.gate = NamespaceGate(settings.namespace_max_inflight or None, settings.namespace_max_waiting,
                                  limit_of=self._max_inflight_of)

    # ---- lifecycle -------------------------------------------------------------------
    def start_in_background(self) -> threading.Thread:
        t = threading.Thread(target=self.start, name="taskswap-startup", daemon=True)
        t.start()
        return t

    def start(self) -> None:
        """Load backbones, open the store, catch up, warm up; then mark ready."""
        try:
            self._start()
        except Exception as exc:
            self.state, self.error = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("startup failed: %s", self.error)

    def _start(self) -> None:
        s = self.settings
        t0 = time.perf_counter()
        torch.set_num_threads(s.torch_threads)
        sys.setswitchinterval(s.gil_switch_ms / 1000)  # how long the batch worker waits for the GIL per op
        Image.MAX_IMAGE_PIXELS = s.max_image_pixels  # PIL's own decompression-bomb guard
        for spec in s.backbone_specs():
            log.info("loading backbone %r from %s", spec.name, spec.source)
            self.backbones[spec.name] = load_backbone(spec)
        for spec in s.lm_specs():
            log.info("loading language model %r from %s", spec.name, spec.source)
            self.lms[spec.name] = load_lm_backbone(spec)
        stages = {"backbones": time.perf_counter() - t0}  # seconds per start-up stage, for the ready log line
        store = open_store(s.store)
        if s.startup_gc == "before_ready":
            self._collect(store)
        registry = Registry(store, {**self.backbones, **self.lms}, adapter_budget_bytes=s.adapter_budget_mb << 20,
                            events=self.metrics)
        t = time.perf_counter()
        started = registry.start()  # rows from the store's index; adapters load on first use
        if started["shared_sets"]["recovered"]:  # half-switched sets a dead replica left, put back
            log.warning("start-up: shared adaptation sets put back on their active set: %s",
                        started["shared_sets"]["recovered"])
        stages["table"] = time.perf_counter() - t
        t = time.perf_counter()
        for bb in self.backbones.values():  # warm-up: one real forward pass per backbone
            bb.embed(bb.sample_inputs())
        stages["warm-up"] = time.perf_counter() - t
        t = time.perf_counter()
        # What startup loaded lives as long as the process: keep it out of the cyclic
        # collector's scans (100,000 tasks are 1.6M objects: each full collection paused
        # every request for about a second).
        gc.collect()
        gc.freeze()
        stages["gc freeze"] = time.perf_counter() - t
        self.quotas = QuotaBook(store, s.quota_ttl_s)
        self.quotas.refresh(force=True)
        registry.lifecycle.admit = RegistrationQuota(self.quotas, lambda: registry.table.aliases().items())
        registry.residency.share = lambda namespace: self.quotas.get(namespace).max_resident_bytes
        self.store, self.registry = store, registry
        self.tokens = TokenBook(store, s.token_ttl_s)
        self.rollouts = Rollouts(self)  # policies arrive on the registry's task rows with each sync
        self.runtime = Runtime(registry, max_forward_rows=s.max_forward_rows,
                               token_budget=s.token_budget or None)
        self.batcher = Batcher(self.runtime, s.max_batch_rows, s.max_wait_ms, s.max_queue_rows,
                               on_batch=self._on_batch, slice_cost=s.slice_cost or None,
                               on_usage=self.metrics.on_namespace_usage if self.metrics is not None else None,
                               slice_split=s.slice_split, competing_window_s=s.competing_window_s,
                               preempt=s.preempt,
                               on_park=self.metrics.on_park if self.metrics is not None else None)
        registry.run_probe = self._run_probe  # registration dry runs join ordinary batches
        limits = EngineLimits(kv_budget_bytes=int(s.generation_kv_budget_mb * (1 << 20)),
                              max_running=s.generation_max_running, max_waiting=s.generation_max_waiting,
                              queue_timeout_s=s.generation_queue_timeout_s,
                              prefill_chunk=s.generation_prefill_chunk)
        self.generators = {name: DecodeEngine(bb, limits).start() for name, bb in self.lms.items()}
        self.registrations = RegistrationQueue(s.register_max_queued, s.register_niceness)
        self.watcher = StoreWatcher(self.sync, s.sync_interval_s).start()
        self._publish_state()
        self._publish_stored()
        log.info("speed settings in use: %s", self.speed_settings())
        self.state = "ready"
        log.info("ready in %.1fs: backbones %s, %d tasks from %s (%s, %d changes replayed); stages: %s",
                 time.perf_counter() - t0, sorted(self.backbones), registry.count(), store.url,
                 started["source"], started["replayed"],
                 ", ".join(f"{name} {sec:.2f}s" for name, sec in stages.items()))
        if s.startup_gc == "background":
            threading.Thread(target=self._collect_in_background, args=(store,), name="taskswap-store-gc",
                             daemon=True).start()

    def _collect(self, store) -> None:
        """Remove the leftovers of crashes older than ``gc_grace_s`` (store staging, unreferenced
        versions, upload scratch in $TMPDIR)."""
        removed = store.gc(self.settings.gc_grace_s)
        removed += collect_stale_uploads(self.settings.gc_grace_s)  # upload scratch a crash left in $TMPDIR
        log.info("store gc removed %d leftovers", len(removed))

    def _collect_in_background(self, store) -> None:
        # Not niced: the sweep is Python holding the GIL, and a niced thread preempted while it
        # holds the GIL stalls every request thread behind it (priority inversion).
        try:
            self._collect(store)
        except Exception:  # noqa: BLE001 - the server serves on; the next start collects again
            log.exception("store gc failed")

    def speed_settings(self) -> str:
        """What the running batch path uses, read back from the live objects (not the
        settings): ``torch_threads=1 token_budget=512 max_forward_rows=256 ...``."""
        rt, b = self.runtime, self.batcher
        return (f"torch_threads={torch.get_num_threads()} token_budget={rt.token_budget or 0} "
                f"max_forward_rows={rt.max_forward_rows} max_batch_rows={b.max_batch_rows} "
                f"max_wait_ms={b.max_wait_s * 1000:g} slice_cost={b.slice_cost or 0:g}")

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def require_ready(self) -> None:
        if self.state == "failed":
            raise NotReady(f"server failed to start: {self.error}; fix the settings and restart",
                           retry_after_s=60)
        if self.state != "ready":
            raise NotReady("server is starting (loading backbones); retry shortly", retry_after_s=2)

    def close(self) -> None:
        if self.rollouts is not None:
            self.rollouts.close()
        if self.watcher is not None:
            self.watcher.stop()
        if self.registrations is not None:
            self.registrations.close()
        if self.batcher is not None:
            self.batcher.close()
        for gen in self.generators.values():
            gen.close()

    # ---- store convergence -------------------------------------------------------------
    def sync(self, wait: bool = True) -> bool:
        """Follow the store (cheap when nothing changed); with ``wait=False``, skip it while
        an admin call holds the registry's writer lock (that call brings this process up to date)."""
        changed = self.registry.sync(wait=wait)  # rollout policies ride on the tasks' rows
        self._publish_state()
        if self.quotas is not None and self.quotas.refresh():  # every quota_ttl_s
            self._publish_stored()
        return changed

    def _publish_stored(self) -> None:
        """The stored-bytes gauge per namespace (one pass over the table: every quota_ttl_s)."""
        if self.metrics is not None and self.registry is not None:
            used = usage_by_namespace(self.registry.table.aliases().items())
            self.metrics.set_stored({ns: u.stored_bytes for ns, u in used.items()})

    def _on_batch(self, n_requests: int, n_rows: int, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.on_batch(n_requests, n_rows, seconds)
            self._publish_queue()

    def publish_state(self) -> None:
        self._publish_state()

    def _publish_state(self) -> None:
        """Every gauge; counting loaded adapters takes the registry's lock, so the batch
        worker and the request path publish only the queue (:meth:`_publish_queue`): the
        watcher's sync refreshes the rest every ``sync_interval_s``."""
        if self.metrics is not None and self.registry is not None:
            queued = self.batcher.queued_rows if self.batcher is not None else 0
            self.metrics.set_state(queued, self.registry.loaded_count(), self.registry.generation)
            self.metrics.set_residency(self.registry.resident_bytes, self.registry.adapter_budget_bytes)

    def _publish_queue(self) -> None:
        if self.metrics is not None and self.batcher is not None:
            self.metrics.set_queue(self.batcher.queued_rows)

    # ---- inference ---------------------------------------------------------------------
    async def predict(self, tasks: list[str], inputs: Inputs, modality: str, embed: EmbedSpec | None = None,
                      versions: dict[str, str] | None = None, routing_key: str | None = None,
                      trace=None, options: dict | None = None,
                      stamps: dict[str, int] | None = None) -> tuple[str, Results]:
        """Validate and pin ``tasks`` (in a worker thread), await the shared batcher;
        returns (backbone name, one result per task, plus ``.embeddings`` when ``embed``).
        ``inputs``: the inputs, or a function that decodes them (images, audio), called only
        once the namespace's in-flight slot is granted, in the worker thread that prepares.
        ``versions`` pins tasks to stored versions instead of their active ones;
        ``routing_key`` keeps a caller on one side of a canary; ``trace(prepared)`` is
        called once the batch has run; ``options`` are task types' request options
        (detection's ``threshold``, ``max_detections``), checked against each task's limits.
        ``stamps``: ``time.time_ns()`` stamps taken before (``entered``), copied into the
        request's timings with the ones taken here (:mod:`service.server_timing`)."""
        self.require_ready()
        access.check("infer", tasks)  # a task in a namespace the caller cannot read: 404
        spaces = self._admit_requests(tasks)  # a request over its rate costs no work
        async with self.admitted(spaces[0]):
            stamps = {**(stamps or {}), "admitted": time.time_ns()}
            # prepare may load an evicted LoRA from the store, and the cost estimate tokenises:
            # keep both off the event loop.
            prepared, cost = await anyio.to_thread.run_sync(lambda: self._costed(
                self.runtime.prepare(tasks, _decoded(inputs), modality, embed=embed, versions=versions,
                                     rollout=self.registry, routing_key=routing_key, options=options)))
            prepared.timings.update(stamps)
            self._admit_rows(spaces, prepared.rows)
            results = await self._submit(prepared, cost, spaces[0])
        _check_finite(results, prepared.backbone.name)
        self.rollouts.observe(results)
        if self.metrics is not None:
            self.metrics.observe_predictions(results)
        if self.prediction_log.enabled:
            self.prediction_log.write(results, prepared.inputs)
        if trace is not None:
            trace(prepared)
        return prepared.backbone.name, results

    async def embed(self, backbone: str, inputs: Inputs, modality: str, embed: EmbedSpec) -> Results:
        """Pooled features of ``backbone`` (``.embeddings``, ``[inputs, hidden]``; ``.tokens``: the
        real tokens the trunk read, for text), batched with all other traffic. ``inputs`` as
        for :meth:`predict` (a decoding function runs once admitted)."""
        self.require_ready()
        spaces = self._admit_requests([])
        async with self.admitted(spaces[0]):
            prepared, cost = await anyio.to_thread.run_sync(
                lambda: self._costed(self.runtime.prepare_embed(backbone, _decoded(inputs), modality, embed)))
            self._admit_rows(spaces, prepared.rows)
            results = await self._submit(prepared, cost, spaces[0])
        _check_finite(results, backbone)
        return results

    def admitted(self, namespace: str):
        """An async context holding one of ``namespace``'s in-flight slots (:mod:`service.admission`)."""
        return self.gate.slot(namespace)

    def _max_inflight_of(self, namespace: str) -> int | None:
        """``namespace``'s ``max_inflight`` quota (None: the server's default)."""
        return self.quotas.get(namespace).max_inflight if self.quotas is not None else None

    def _costed(self, prepared: PreparedRequest) -> tuple[PreparedRequest, Cost]:
        """``prepared`` with its estimated cost, refused (413) past a per-request cap."""
        cost = estimate(prepared)
        check_cost(cost, self.settings)
        return prepared, cost

    def _admit_requests(self, tasks: list[str]) -> list[str]:
        """The namespaces a request names (the first: where it queues; a request naming no
        task, an embedding, is in the default namespace), once each has room in its request
        rate (:class:`adapters.errors.RateLimited`, 429, otherwise)."""
        spaces = list(dict.fromkeys(namespace_of(t) for t in tasks)) or [DEFAULT_NAMESPACE]
        for namespace in spaces:
            self.rates.admit_request(namespace, self.quotas.get(namespace))
        return spaces

    def _admit_rows(self, spaces: list[str], rows: int) -> None:
        """Each namespace's rows-per-second bucket takes the request's trunk rows (429 otherwise)."""
        for namespace in spaces:
            self.rates.admit_rows(namespace, self.quotas.get(namespace), rows)

    async def _submit(self, prepared: PreparedRequest, cost: Cost, namespace: str = DEFAULT_NAMESPACE) -> Results:
        """Queue ``prepared`` in slices under the caller's client key within ``namespace``
        (fair queuing: namespaces by weight, then clients)."""
        client, weight = CLIENT.get(), self.quotas.weight(namespace)
        # cutting one long input into parts resamples and scans an audio clip: off the event loop
        future = await anyio.to_thread.run_sync(
            lambda: self.batcher.submit(prepared, client, cost, namespace, weight))
        self._publish_queue()
        try:
            # shield: a timeout or a client hang-up must not cancel the batcher's future,
            # which the batch worker will still complete.
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)),
                                          timeout=self.settings.predict_timeout_s)
        except asyncio.TimeoutError as exc:
            raise PredictTimeout(f"no answer within {self.settings.predict_timeout_s}s "
                                 "(TASKSWAP_PREDICT_TIMEOUT_S); the server is overloaded") from exc

    def _run_probe(self, prepared: PreparedRequest) -> Results:
        """A registration's dry-run request, run by the batch worker like any request (in the
        registration thread's stead: no second forward beside the batch worker's)."""
        future = self.batcher.submit(prepared, "registration", estimate(prepared))
        self._publish_queue()
        try:
            return future.result(timeout=self.settings.predict_timeout_s)
        except FutureTimeout as exc:
            raise PredictTimeout(f"the registration's dry run got no batch slot within "
                                 f"{self.settings.predict_timeout_s}s; the server is overloaded") from exc

    def backbone(self, name: str | None, modality: str | None = None) -> Backbone:
        """The backbone called ``name``; without a name, the only one of ``modality``."""
        self.require_ready()
        if name is not None:
            bb = self.backbones.get(name)
            if bb is None:
                raise NotFound(f"backbone {name!r} is not served here "
                               f"(backbones: {', '.join(sorted(self.backbones))})")
            return bb
        hits = [bb for bb in self.backbones.values() if modality is None or bb.modality == modality]
        if len(hits) != 1:
            raise InvalidInput(f"{len(hits)} backbones take {modality} inputs "
                               f"({', '.join(b.name for b in hits) or 'none'}); name one in 'backbone'")
        return hits[0]

    def task_model(self, task: str, version: str | None = None) -> tuple[LoadedAdapter, list[str]]:
        """The adapter that serves ``task`` (or that exact stored ``version``) and every
        stored version of the task, oldest first."""
        self.require_ready()
        access.check("infer", [task])
        loaded = self.registry.resolve_version(task, version) if version else self.registry.resolve(task)
        return loaded, [v["version"] for v in self.registry.show(task)["versions"]]

    def start_generation(self, model: str, prompt: str | None, messages: list[dict] | None,
                         overrides: Overrides, sink, on_resolved=None,
                         routing_key: str | None = None) -> tuple[LoadedAdapter, GenerationHandle]:
        """Queue one generation for ``model`` (``task`` or ``task@version``) on its language
        model's decode engine; its events go to ``sink`` (called on the engine's thread).
        ``on_resolved(adapter)`` runs before the sequence is queued (before any event). An
        unpinned task in canary answers with its candidate for the share the policy routes
        (sticky per ``routing_key``)."""
        self.require_ready()
        task, _, version = model.partition("@")
        access.check("infer", [task])
        self._admit_rows(self._admit_requests([task]), 1)  # a generation: one request, one row
        adapter = self.registry.resolve_version(task, version) if version else self.registry.resolve(task)
        if not version:
            adapter = canary_choice(self.registry, self.registry, task, routing_key) or adapter
        req = request_for(adapter, prompt, messages, overrides)
        policy = self.registry.policy(task) if not version else None
        if policy is not None and policy.mode == "shadow":
            sink = self._shadowed(task, adapter, policy.candidate, prompt, messages, overrides, sink)
        if on_resolved is not None:
            on_resolved(adapter)
        return adapter, self.generators[adapter.backbone.name].submit(req, sink)

    def _shadowed(self, task: str, adapter: LoadedAdapter, candidate: str, prompt, messages,
                  overrides: Overrides, sink):
        """``sink`` wrapped so that the task's shadow candidate also generates this prompt,
        off the response path (:mod:`adapters.generation.shadow`). The candidate is loaded
        and its prompt tokenised here, on the request's thread; a candidate that cannot be
        (not loadable, over its limits) is logged and skipped, never the caller's failure."""
        stats = self.registry.shadow_stats(task, adapter.version, candidate)
        try:
            cand = self.registry.candidate(task, candidate)
            cand_req = request_for(cand, prompt, messages, overrides)
        except Exception as exc:  # noqa: BLE001  (the active path is unaffected)
            log.warning("shadow candidate %s of %s unavailable: %s", candidate[:12], task, exc)
            stats.skip()
            return sink
        engine = self.generators[cand.backbone.name]
        return ShadowPair(stats, sink, lambda cand_sink: engine.submit_background(cand_req, cand_sink)).primary

    def generation_tasks(self) -> list[str]:
        """The registered generation tasks' names, in order (none without a language model),
        after catching up with the store. One pass over the task table: a listing, not a
        request-path call."""
        self.require_ready()
        if not self.lms:
            return []
        self.sync(wait=False)
        readable = access.current().reads_name
        return [d["name"] for d in self.registry.list() if d["task_type"] == "generation" and readable(d["name"])]

    def generation_task(self, name: str) -> str:
        """``name`` if it is a registered generation task; ``NotFound`` otherwise."""
        self.require_ready()
        try:
            if self.lms and access.current().reads_name(name) and self.registry.show(name)["task_type"] == "generation":
                return name
        except (NotFound, InvalidInput):  # not registered, or not even a task name
            pass
        raise NotFound(f"model {name!r} is neither a backbone nor a generation task served here "
                       "(GET /v1/models lists them)")

    def generates(self, tasks: list[str]) -> bool:
        """True when every task of a ``/predict`` request generates text, False when none
        does (always False without a language model); a mix is refused (400)."""
        if not self.lms:
            return False
        access.check("infer", tasks)
        flags = [self.registry.resolve(t).task.generates for t in tasks]
        if any(flags) and not all(flags):
            raise InvalidInput(f"tasks {tasks} mix generation and scoring tasks; send the generation "
                               "tasks in a request of their own")
        return all(flags)

    # ---- adapters ----------------------------------------------------------------------
    def submit_registration(self, fn, *args) -> Future:
        """Queue ``fn(*args)`` (``register_archive`` / ``register_path``) on the one
        registration thread; 429 (:class:`CapacityError`) when its queue is full."""
        self.require_ready()
        q = self.registrations
        try:
            job = q.submit(fn, *args)
        except CapacityError:
            if self.metrics is not None:
                self.metrics.on_registration_queue(q.in_progress, refused=True)
            raise
        if self.metrics is not None:
            self.metrics.on_registration_queue(q.in_progress)
            job.add_done_callback(lambda _: self.metrics.on_registration_queue(q.in_progress))
        return job

    def register_archive(self, data: bytes, name: str | None, labels: list[str] | None,
                         backbone: str | None, expected: str | None = None, authorize=None
                         ) -> tuple[LoadedAdapter, str | None]:
        """Extract an uploaded zip/tar.gz safely, then register it; returns (new, previous)."""
        self.require_ready()
        s = self.settings
        check_registration_fields(name, labels)
        with tempfile.TemporaryDirectory(prefix="taskswap-upload-") as tmp:
            folder = extract_archive(data, Path(tmp) / "x", max_bytes=s.max_archive_bytes,
                                     max_entries=s.max_archive_entries)
            return self._register(folder, name, labels, backbone, expected, authorize=authorize)

    def register_path(self, ref: str, name: str | None, labels: list[str] | None,
                      backbone: str | None, expected: str | None = None, authorize=None
                      ) -> tuple[LoadedAdapter, str | None]:
        """Register a folder inside the store (``imports/...``); returns (new, previous)."""
        self.require_ready()
        check_registration_fields(name, labels)
        folder = self.store.resolve_store_path(ref)
        return self._register(folder, name, labels, backbone, expected, authorize=authorize)

    def _register(self, folder: Path, name, labels, backbone, expected,
                  activate: bool = True, authorize=None) -> tuple[LoadedAdapter, str | None]:
        """``authorize(name)``: the caller's check on the task name (the registration thread
        does not run in the request's context, so the route hands it over)."""
        # previous = the alias the store's compare-and-swap replaced, never a separate read.
        loaded, previous = self.registry.register_replacing(folder, name=name, labels=labels,
                                                            backbone=backbone, expected=expected,
                                                            activate=activate, authorize=authorize)
        self._publish_state()
        return loaded, previous

    def register_folder(self, folder: Path, name: str, backbone: str | None,
                        activate: bool = True, expected: str | None = None) -> tuple[LoadedAdapter, str | None]:
        """Register a folder this process wrote (a fit job's output); ``activate=False``
        stores it as a candidate; ``expected``: the active version it may replace (a
        ``Conflict`` otherwise). Returns (new, previously active version)."""
        self.require_ready()
        return self._register(folder, name, None, backbone, expected, activate=activate)

    def activate(self, name: str, version: str, expected: str | None = None) -> dict:
        self.require_ready()
        self.registry.activate(name, version, expected=expected)
        self._publish_state()
        return self.registry.show(name)

    def delete(self, name: str, expected: str | None = None) -> None:
        self.require_ready()
        self.registry.delete(name, expected=expected)  # its rollout policy goes with it
        self._publish_state()

    def pin(self, name: str, pinned: bool) -> dict:
        self.require_ready()
        self.registry.pin(name, pinned)
        return self.registry.show(name)

    def page(self, name: str | None, offset: int, limit: int | None) -> tuple[int, list[dict], int, int | None]:
        """(store generation caught up with, one page of tasks, total matching, next offset)
        after catching up with the store (see :meth:`Registry.page`)."""
        self.require_ready()
        self.sync(wait=False)
        principal = access.current()
        visible = None if principal.everywhere else principal.reads_name
        return (self.registry.generation, *self.registry.page(name, offset, limit, visible))

    def show(self, name: str) -> dict:
        self.require_ready()
        access.check("infer", [name])
        return self.registry.show(name)

    # ---- shared adaptation sets (docs/multitask.md) ----------------------------------------
    def shared_sets(self) -> list[dict]:
        """Every shared adaptation the caller can read, with its active set (tasks the
        caller cannot read left out)."""
        self.require_ready()
        principal = access.current()
        return [_readable_set(s, principal) for s in self.registry.shared_sets.summaries()
                if principal.reads_name(s["name"])]

    def shared_set(self, name: str) -> dict:
        self.require_ready()
        access.check("infer", [name])
        return _readable_set(self.registry.shared_sets.describe(name), access.current())

    def activate_shared_set(self, name: str, version: str | None) -> tuple[dict, dict]:
        """Switch ``name``'s set to adaptation ``version``'s (None: the previous set), all or
        none; the caller needs ``register`` on the adaptation and on every task of the set.
        Returns ``(the set before, the set document after)``."""
        self.require_ready()
        sets = self.registry.shared_sets
        access.check("register", [name])
        before = sets.current(name)
        previous = (sets.document(name) or {}).get("previous") or {"tasks": {}}
        access.check("register", sorted({*before["tasks"], *(previous["tasks"] if version is None else ())}))
        doc = sets.activate(name, version) if version is not None else sets.rollback(name)
        self._publish_state()
        return before, doc

    def register_shared_set(self, data: bytes, heads: list[bytes], authorize=None) -> tuple[dict, dict]:
        """A new version of a shared adaptation (archive ``data``) and of every task riding on
        it (``heads``: archives of task folders with new heads; the other riders carry theirs
        over), switched as one set (:meth:`SharedSets.register`). Runs on the registration
        thread. Returns ``(the set before, the set document after)``."""
        self.require_ready()
        s = self.settings
        with tempfile.TemporaryDirectory(prefix="taskswap-upload-") as tmp:
            folder = extract_archive(data, Path(tmp) / "adaptation", max_bytes=s.max_archive_bytes,
                                     max_entries=s.max_archive_entries)
            task_folders: dict[str, Path] = {}
            for i, head in enumerate(heads):
                hdir = extract_archive(head, Path(tmp) / f"head-{i}", max_bytes=s.max_archive_bytes,
                                       max_entries=s.max_archive_entries)
                task = read_adapter_dir(hdir).manifest
                if task is None:
                    raise InvalidInput(f"heads[{i}]: a task's archive needs its adapter.json (kind 'multitask')")
                if task.name in task_folders:
                    raise InvalidInput(f"heads[{i}]: task {task.name!r} is given twice")
                task_folders[task.name] = hdir
            sets = self.registry.shared_sets
            manifest = read_adapter_dir(folder).manifest
            if manifest is None:
                raise InvalidInput("file: the shared adaptation's archive needs its adapter.json (kind 'shared_lora')")
            if authorize is not None:
                authorize(manifest.name)  # before anything says whether it exists
            before = sets.current(manifest.name)
            doc = sets.register(folder, task_folders, authorize=authorize)
        self._publish_state()
        return before, doc

    def describe_backbones(self) -> list[dict]:
        self.require_ready()
        return [{**bb.describe(), "poolings": list(bb.available_poolings),
                 "default_pooling": bb.default_pooling} for bb in self.backbones.values()]


def _decoded(inputs: Inputs) -> list:
    """The inputs themselves, or what the decoding function given in their stead returns."""
    return inputs() if callable(inputs) else inputs


def _check_finite(results: Results, backbone: str) -> None:
    """JSON has no NaN/Infinity: a request whose scores or embeddings are not finite gets
    ``NonFiniteOutput`` (422) rather than ``null`` or a NaN in base64; the batch's other
    requests are checked on their own and answered as usual."""
    for r in results:
        check_rows_finite(r, "this request")
    check_embeddings_finite(results.embeddings, backbone, "this request")


def _readable_set(d: dict, principal) -> dict:
    """A set's description with the tasks of namespaces ``principal`` cannot read left out."""
    def keep(state):
        return None if state is None else {**state, "tasks": {t: v for t, v in state["tasks"].items()
                                                              if principal.reads_name(t)}}
    out = {**d, "active": keep(d["active"])}
    for k in ("previous", "pending"):
        if k in d:
            out[k] = keep(d[k])
    if "versions" in d:
        out["versions"] = [keep(v) for v in d["versions"]]
    return out
