"""Prometheus metrics, exposed on BentoML's own ``/metrics``.

Built with ``bentoml.metrics`` so they work in BentoML's multi-process mode (every
worker writes to the shared prometheus directory; ``/metrics`` merges them).
Per-task series have a bounded label set: the first ``max_tasks`` task names that were
*successfully* served get their own label value, everything else is ``other`` — so
requests naming random, unregistered tasks cannot blow up the series count. Per-namespace
series (requests, rows, trunk milliseconds, stored bytes) are bounded the same way: the
first ``max_namespaces`` namespaces seen get their own value, the rest count as ``_other``
(no namespace can be called that: names start with a letter or digit).
"""

from __future__ import annotations

import threading

import bentoml

from adapters.namespaces import namespace_of

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
_LOAD_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)
_SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
_DELTA_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
_TOKEN_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
_ADDED_BUCKETS = (1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1)
VERSIONS_PER_TASK = 4  # version label values per task (active, candidate, recent); the rest 'other' 
OTHER = "other"
OTHER_NAMESPACE = "_other"


class TaskLabels:
    """Maps task names onto at most ``max_tasks`` label values plus ``other``.

    >>> t = TaskLabels(1)
    >>> t.label("a", claim=True), t.label("b", claim=True), t.label("a")
    ('a', 'other', 'a')
    """

    def __init__(self, max_tasks: int):
        self.max_tasks = max_tasks
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def label(self, task: str, claim: bool = False) -> str:
        if task in self._known:
            return task
        if not claim:
            return OTHER
        with self._lock:
            if len(self._known) < self.max_tasks:
                self._known.add(task)
                return task
        return OTHER


class NamespaceLabels(TaskLabels):
    """Namespaces onto at most ``max_namespaces`` label values plus ``_other``.

    >>> n = NamespaceLabels(1)
    >>> n.label("team-a", claim=True), n.label("other", claim=True), n.label("team-a")
    ('team-a', '_other', 'team-a')
    """

    def label(self, task: str, claim: bool = False) -> str:
        if task in self._known:
            return task
        if claim:
            with self._lock:
                if len(self._known) < self.max_tasks:
                    self._known.add(task)
                    return task
        return OTHER_NAMESPACE


class BoundedValues:
    """At most ``cap`` distinct values per key (e.g. labels per task), then ``other``.

    >>> b = BoundedValues(1)
    >>> b.value("t", "x"), b.value("t", "y"), b.value("u", "y")
    ('x', 'other', 'y')
    """

    def __init__(self, cap: int):
        self.cap = cap
        self._seen: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def value(self, key: str, value: str) -> str:
        seen = self._seen.get(key)
        if seen is not None and value in seen:
            return value
        with self._lock:
            seen = self._seen.setdefault(key, set())
            if len(seen) < self.cap:
                seen.add(value)
                return value
        return OTHER


class ServiceMetrics:
    """All Taskswap metrics of one process; also the registry's and batcher's observer."""

    def __init__(self, max_tasks: int = 50, max_labels: int = 20, max_namespaces: int = 100):
        self.tasks = TaskLabels(max_tasks)
        self.namespaces = NamespaceLabels(max_namespaces)
        self._stored_labels: set[str] = set()
        self.versions = BoundedValues(VERSIONS_PER_TASK)
        self.labels = BoundedValues(max_labels)
        m = bentoml.metrics
        # ---- per-task prediction monitoring (task x version x label, all bounded) ----
        self.top_score = m.Histogram(name="taskswap_prediction_top_score", labelnames=["task", "version"],
                                     buckets=_SCORE_BUCKETS, documentation=(
                                         "Top score (confidence) of each predicted row, per task and "
                                         "answering version (first 12 hex digits)."))
        self.predicted = m.Counter(name="taskswap_predicted_labels", labelnames=["task", "version", "label"],
                                   documentation="Predicted top labels per task and version.")
        # ---- shadow comparisons ----
        self.shadow_rows = m.Counter(name="taskswap_shadow_rows", labelnames=["task", "candidate"],
                                     documentation="Rows scored by a shadow candidate as well as the active version.")
        self.shadow_agree = m.Counter(name="taskswap_shadow_agreements", labelnames=["task", "candidate"],
                                      documentation="Shadow rows where candidate and active chose the same label.")
        self.shadow_delta = m.Histogram(name="taskswap_shadow_abs_delta_top_score",
                                        labelnames=["task", "candidate"], buckets=_DELTA_BUCKETS,
                                        documentation="|active top score - candidate top score| per shadow row.")
        self.shadow_added = m.Histogram(name="taskswap_shadow_added_seconds", labelnames=["task", "candidate"],
                                        buckets=_ADDED_BUCKETS, documentation=(
                                            "Compute a shadow candidate added to one request's task."))
        self.requests = m.Counter(name="taskswap_task_requests", labelnames=["task", "status"],
                                  documentation="Predictions per task and HTTP status.")
        self.latency = m.Histogram(name="taskswap_task_request_seconds", labelnames=["task"],
                                   buckets=_LATENCY_BUCKETS,
                                   documentation="Prediction latency per task (whole request).")
        self.inputs = m.Counter(name="taskswap_task_inputs", labelnames=["task"],
                                documentation="Inputs (texts or images) predicted per task.")
        self.registrations = m.Counter(name="taskswap_adapter_registrations", labelnames=["kind"],
                                       documentation="Adapter versions registered by this process.")
        self.loads = m.Counter(name="taskswap_adapter_loads", labelnames=["kind"],
                               documentation="Adapter versions loaded into memory.")
        self.load_seconds = m.Histogram(name="taskswap_adapter_load_seconds", labelnames=["kind"],
                                        buckets=_LOAD_BUCKETS,
                                        documentation="Time to load one adapter version.")
        self.registrations_waiting = m.Gauge(
            name="taskswap_registrations_waiting", multiprocess_mode="livesum",
            documentation="Registrations queued or running on the registration thread.")
        self.registrations_refused = m.Counter(
            name="taskswap_registrations_refused",
            documentation="Registrations refused with 429: the registration queue was full.")
        self.loaded = m.Gauge(name="taskswap_adapters_loaded", multiprocess_mode="liveall",
                              documentation="Adapters resident in this worker (every kind: heads, LoRA, top layers).")
        self.batch_rows = m.Histogram(name="taskswap_batch_rows", buckets=_ROW_BUCKETS,
                                      documentation="Trunk rows per executed batch.")
        self.batch_requests = m.Histogram(name="taskswap_batch_requests", buckets=_ROW_BUCKETS,
                                          documentation="Requests merged into one batch.")
        self.batch_seconds = m.Histogram(name="taskswap_batch_seconds", buckets=_LATENCY_BUCKETS,
                                         documentation="Time to run one batch.")
        self.batches_parked = m.Counter(name="taskswap_batches_parked", documentation=(
            "Batches parked between trunk blocks while another namespace's owed batch ran "
            "(TASKSWAP_PREEMPT, docs/tenancy.md)."))
        self.queue_rows = m.Gauge(name="taskswap_queue_rows", multiprocess_mode="livesum",
                                  documentation="Rows waiting for the batcher.")
        # Autoscaling signals (deploy/hpa.yaml): the queue above, and how full the adapter
        # budget is. Pressure near 1 with loads climbing means the tasks routed here no longer
        # fit: add replicas (each then holds a smaller share of the tasks).
        self.resident_bytes = m.Gauge(name="taskswap_adapter_resident_bytes", multiprocess_mode="livesum",
                                      documentation="Bytes of evictable adapters (LoRA, top layers) resident.")
        self.budget_bytes = m.Gauge(name="taskswap_adapter_budget_bytes", multiprocess_mode="livesum",
                                    documentation="The evictable adapters' byte budget (TASKSWAP_ADAPTER_BUDGET_MB).")
        self.pressure = m.Gauge(name="taskswap_residency_pressure", multiprocess_mode="livemax",
                                documentation="Resident evictable adapter bytes / budget (the fullest worker).")
        # Per API family (embed, openai, v2), a fixed label set; v2 inference also counts
        # under its task in the per-task series above.
        self.api_requests = m.Counter(name="taskswap_api_requests", labelnames=["api", "status"],
                                      documentation="Requests per API family (embed, openai, v2) and HTTP status.")
        self.api_latency = m.Histogram(name="taskswap_api_request_seconds", labelnames=["api"],
                                       buckets=_LATENCY_BUCKETS,
                                       documentation="Latency per API family (whole request).")
        self.embedded = m.Counter(name="taskswap_embedded_inputs", labelnames=["backbone"],
                                  documentation="Inputs embedded per backbone (/embed, /v1/embeddings, predict embed).")
        self.generation = m.Gauge(name="taskswap_store_generation", multiprocess_mode="livemax",
                                  documentation="Store generation this worker has caught up with.")
        # ---- per namespace (docs/tenancy.md), at most max_namespaces values + '_other' ----
        self.ns_requests = m.Counter(name="taskswap_namespace_requests", labelnames=["namespace", "status"],
                                     documentation=("Requests naming tasks, per namespace (of the first "
                                                    "task) and HTTP status; 429 includes rate quotas."))
        self.ns_rows = m.Counter(name="taskswap_namespace_rows", labelnames=["namespace"],
                                 documentation=("Trunk rows the batch worker ran per namespace (/embed "
                                                "and registration dry runs under 'default')."))
        self.ns_trunk_ms = m.Counter(name="taskswap_namespace_trunk_milliseconds", labelnames=["namespace"],
                                     documentation=("Batch worker milliseconds per namespace: each batch's "
                                                    "time shared by its slices' estimated cost."))
        self.ns_stored = m.Gauge(name="taskswap_namespace_stored_bytes", labelnames=["namespace"],
                                 multiprocess_mode="livemax", documentation=(
                                     "Bytes of every stored version of the namespace's tasks (as recorded "
                                     "at registration), refreshed every TASKSWAP_QUOTA_TTL_S."))
        # ---- generation tasks (docs/generation.md) ----
        self.gen_prompt_tokens = m.Counter(name="taskswap_generation_prompt_tokens", labelnames=["task"],
                                           documentation="Prompt tokens read per generation task.")
        self.gen_completion_tokens = m.Counter(name="taskswap_generation_completion_tokens",
                                               labelnames=["task"],
                                               documentation="Tokens generated per generation task.")
        self.gen_ttft = m.Histogram(name="taskswap_generation_time_to_first_token_seconds", labelnames=["task"],
                                    buckets=_LATENCY_BUCKETS, documentation=(
                                        "From queueing a generation to its first token (admission wait included)."))
        self.gen_finished = m.Counter(name="taskswap_generation_finished", labelnames=["task", "reason"],
                                      documentation=("Generations ended per task and reason (eos_token, "
                                                     "stop_sequence, length, cancelled)."))
        self.gen_itl = m.Histogram(name="taskswap_generation_inter_token_seconds", labelnames=["task"],
                                   buckets=_TOKEN_BUCKETS, documentation="Between a generation's consecutive tokens.")

    # ---- per request -----------------------------------------------------------------
    def observe_request(self, tasks: list[str], status: int, seconds: float, n_inputs: int) -> None:
        ok = status < 400
        if tasks:
            namespace = self.namespaces.label(namespace_of(tasks[0]), claim=ok)
            self.ns_requests.labels(namespace=namespace, status=str(status)).inc()
        for task in tasks:
            label = self.tasks.label(task, claim=ok)
            self.requests.labels(task=label, status=str(status)).inc()
            self.latency.labels(task=label).observe(seconds)
            if ok:
                self.inputs.labels(task=label).inc(n_inputs)

    def observe_api(self, api: str, status: int, seconds: float) -> None:
        """One request of an API family: ``api`` is one of a fixed few names."""
        self.api_requests.labels(api=api, status=str(status)).inc()
        self.api_latency.labels(api=api).observe(seconds)

    def observe_embedded(self, backbone: str, n_inputs: int) -> None:
        """``backbone`` is a configured name (bounded), never a client's string."""
        self.embedded.labels(backbone=backbone).inc(n_inputs)

    def observe_generation(self, task: str, first_token_s: float | None, gaps: list[float],
                           prompt_tokens: int, completion_tokens: int) -> None:
        """One finished generation of ``task`` (a registered name: it was resolved)."""
        label = self.tasks.label(task, claim=True)
        self.gen_prompt_tokens.labels(task=label).inc(prompt_tokens)
        self.gen_completion_tokens.labels(task=label).inc(completion_tokens)
        if first_token_s is not None:
            self.gen_ttft.labels(task=label).observe(first_token_s)
        itl = self.gen_itl.labels(task=label)
        for gap in gaps:
            itl.observe(gap)

    def observe_finish(self, task: str, reason: str) -> None:
        """How a generation of ``task`` ended: ``reason`` is the engine's (``eos_token``,
        ``stop_sequence``, ``length``, ``cancelled``: its client left or timed out)."""
        self.gen_finished.labels(task=self.tasks.label(task, claim=True), reason=reason).inc()

    # ---- prediction monitoring -----------------------------------------------------------
    def _task_version(self, task: str, version: str) -> tuple[str, str]:
        label = self.tasks.label(task, claim=True)
        return label, (self.versions.value(label, version[:12]) if label != OTHER else OTHER)

    def observe_predictions(self, results) -> None:
        """Top score and top label of every answered row (``TaskResult`` list of a request)."""
        for r in results:
            task, version = self._task_version(r.task, r.version)
            hist = self.top_score.labels(task=task, version=version)
            for row in r.rows:
                if row.label is None:  # task types without labels (regression): nothing to count
                    continue
                hist.observe(row.score)
                label = self.labels.value(task, row.label) if task != OTHER else OTHER
                self.predicted.labels(task=task, version=version, label=label).inc()

    def observe_shadow(self, active, candidate, added_seconds: float) -> None:
        """One request's shadow comparison for one task (``TaskResult`` of each side)."""
        task, version = self._task_version(active.task, candidate.version)
        kw = {"task": task, "candidate": version}
        n = len(active.rows)
        self.shadow_rows.labels(**kw).inc(n)
        pairs = [(a, c) for a, c in zip(active.rows, candidate.rows) if a.label is not None]
        self.shadow_agree.labels(**kw).inc(sum(a.label == c.label for a, c in pairs))
        delta = self.shadow_delta.labels(**kw)
        for a, c in pairs:
            delta.observe(abs(a.score - c.score))
        self.shadow_added.labels(**kw).observe(added_seconds)

    # ---- registry observer -------------------------------------------------------------
    def on_register(self, kind: str) -> None:
        self.registrations.labels(kind=kind).inc()

    def on_load(self, adapter, seconds: float) -> None:
        self.loads.labels(kind=adapter.kind).inc()
        self.load_seconds.labels(kind=adapter.kind).observe(seconds or 0.0)

    def on_registration_queue(self, in_progress: int, refused: bool = False) -> None:
        self.registrations_waiting.set(in_progress)
        if refused:
            self.registrations_refused.inc()

    # ---- batcher observer --------------------------------------------------------------
    def on_batch(self, n_requests: int, n_rows: int, seconds: float) -> None:
        self.batch_requests.observe(n_requests)
        self.batch_rows.observe(n_rows)
        self.batch_seconds.observe(seconds)

    def on_park(self) -> None:
        """A running batch was parked for another namespace's (the batcher's ``on_park``)."""
        self.batches_parked.inc()

    def on_namespace_usage(self, usage: dict[str, tuple[int, float]]) -> None:
        """One batch's rows and seconds per namespace (the batcher's ``on_usage``)."""
        for namespace, (rows, seconds) in usage.items():
            label = self.namespaces.label(namespace, claim=True)
            self.ns_rows.labels(namespace=label).inc(rows)
            self.ns_trunk_ms.labels(namespace=label).inc(seconds * 1000.0)

    def set_stored(self, stored: dict[str, int]) -> None:
        """Stored bytes per namespace (namespaces past the cap summed under '_other')."""
        totals: dict[str, int] = {}
        for namespace, nbytes in stored.items():
            label = self.namespaces.label(namespace, claim=True)
            totals[label] = totals.get(label, 0) + nbytes
        for label in self._stored_labels - totals.keys():  # a namespace emptied since
            self.ns_stored.labels(namespace=label).set(0)
        for label, nbytes in totals.items():
            self.ns_stored.labels(namespace=label).set(nbytes)
        self._stored_labels = set(totals)

    def set_state(self, queued_rows: int, loaded: int, generation: int) -> None:
        self.queue_rows.set(queued_rows)
        self.loaded.set(loaded)
        self.generation.set(generation)

    def set_residency(self, resident_bytes: int, budget_bytes: int) -> None:
        self.resident_bytes.set(resident_bytes)
        self.budget_bytes.set(budget_bytes)
        self.pressure.set(resident_bytes / budget_bytes if budget_bytes > 0 else 0.0)

    def set_queue(self, queued_rows: int) -> None:
        self.queue_rows.set(queued_rows)
