"""Prometheus metrics, exposed on BentoML's own ``/metrics``.

Built with ``bentoml.metrics`` so they work in BentoML's multi-process mode (every
worker writes to the shared prometheus directory; ``/metrics`` merges them).
Per-task series have a bounded label set: the first ``max_tasks`` task names that were
*successfully* served get their own label value, everything else is ``other`` — so
requests naming random, unregistered tasks cannot blow up the series count.
"""

from __future__ import annotations

import threading

import bentoml

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
_LOAD_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)
OTHER = "other"


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


class Metrics:
    """All Taskswap metrics of one process; also the registry's and batcher's observer."""

    def __init__(self, max_tasks: int = 50):
        self.tasks = TaskLabels(max_tasks)
        m = bentoml.metrics
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
        self.loaded = m.Gauge(name="taskswap_adapters_loaded", multiprocess_mode="liveall",
                              documentation="Adapters resident in this worker (heads + LoRAs).")
        self.batch_rows = m.Histogram(name="taskswap_batch_rows", buckets=_ROW_BUCKETS,
                                      documentation="Trunk rows per executed batch.")
        self.batch_requests = m.Histogram(name="taskswap_batch_requests", buckets=_ROW_BUCKETS,
                                          documentation="Requests merged into one batch.")
        self.batch_seconds = m.Histogram(name="taskswap_batch_seconds", buckets=_LATENCY_BUCKETS,
                                         documentation="Time to run one batch.")
        self.queue_rows = m.Gauge(name="taskswap_queue_rows", multiprocess_mode="livesum",
                                  documentation="Rows waiting for the batcher.")
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

    # ---- per request -----------------------------------------------------------------
    def observe_request(self, tasks: list[str], status: int, seconds: float, n_inputs: int) -> None:
        ok = status < 400
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

    # ---- registry observer -------------------------------------------------------------
    def on_register(self, kind: str) -> None:
        self.registrations.labels(kind=kind).inc()

    def on_load(self, adapter, seconds: float) -> None:
        self.loads.labels(kind=adapter.kind).inc()
        self.load_seconds.labels(kind=adapter.kind).observe(seconds or 0.0)

    # ---- batcher observer --------------------------------------------------------------
    def on_batch(self, n_requests: int, n_rows: int, seconds: float) -> None:
        self.batch_requests.observe(n_requests)
        self.batch_rows.observe(n_rows)
        self.batch_seconds.observe(seconds)

    def set_state(self, queued_rows: int, loaded: int, generation: int) -> None:
        self.queue_rows.set(queued_rows)
        self.loaded.set(loaded)
        self.generation.set(generation)
