"""OpenTelemetry spans for one prediction: queue wait, trunk pass, heads.

Tracing is configured the BentoML way (``tracing.exporter_type``, ``tracing.sample_rate``,
``tracing.otlp.*`` in the BentoML configuration, e.g. through ``BENTOML_CONFIG_OPTIONS``);
BentoML's ASGI middleware opens the request span, and these spans are its children. The
batch runs in the batcher's thread, where the request's context is not current, so the
runtime only stamps times (``PreparedRequest.timings``) and the spans are recorded here, after the
answer, with those explicit start and end times. A batch shared by several requests shows
up in each request's trace with the same trunk and heads intervals (``taskswap.batch_rows``
says how many rows it carried).
"""

from __future__ import annotations

import functools


@functools.cache
def _tracer():
    try:  # BentoML's private module: a version without it, or no server, gets the no-op tracer
        from bentoml._internal.configuration.containers import BentoMLContainer
        return BentoMLContainer.tracer_provider.get().get_tracer("taskswap")
    except Exception:  # outside a BentoML server: the API's no-op tracer
        from opentelemetry import trace  # the fallback only: the API BentoML installs, no exporter
        return trace.get_tracer("taskswap")


def record_prediction_spans(prepared, tasks: list[str]) -> None:
    """Child spans of the current (request) span from the runtime's time stamps."""
    t = prepared.timings
    if not {"submitted", "started", "trunk_done", "heads_done"} <= t.keys():
        return
    tracer = _tracer()
    attrs = {"taskswap.tasks": ",".join(tasks), "taskswap.rows": prepared.rows,
             "taskswap.backbone": prepared.backbone.name}
    for name, start, end in (("taskswap.queue_wait", t["submitted"], t["started"]),
                             ("taskswap.trunk_pass", t["started"], t["trunk_done"]),
                             ("taskswap.heads", t["trunk_done"], t["heads_done"])):
        span = tracer.start_span(name, start_time=start, attributes=attrs)
        span.end(end_time=max(end, start))
