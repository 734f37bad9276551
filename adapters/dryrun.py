"""The registration dry run: a new adapter answers a few probe inputs before it is published.

Its shapes were checked from headers; this checks its numbers. An adapter whose scores
are not finite on ordinary inputs (a head with weights of 3e38, ``lora_alpha: 1e38``)
would answer ``"score": null`` — it is refused with :class:`NonFiniteOutput` instead.
The probes go through the same runtime as requests (trunk, LoRA deltas, heads). A pooled
head reads only the frozen trunk's pooled features, which never change: they are computed
once per backbone and pooling and every new head is scored on them, so a head's dry run
costs no forward pass. A kind with its own trunk rows (LoRA), and a token head, run the
probes through the trunk. Forward passes run in the caller's thread by default or, in the
server, as ordinary requests through its batcher (``run``), so a registration never runs a
forward pass beside the batch worker's.

The same checks guard every answer: :func:`check_rows_finite` a request's task results,
:func:`check_embeddings_finite` its embeddings (a backbone whose features overflow on some
input, e.g. in float16 or with broken weights); JSON has no NaN, and a base64 float32
vector would carry one silently.
"""

from __future__ import annotations

import math
import threading

import torch
from PIL import Image

from adapters.errors import NonFiniteOutput
from adapters.generation.probe import check_generation_finite
from adapters.runtime import EmbedSpec, PreparedRequest, Runtime, score_alone
from adapters.tasks import BatchFeatures

TEXT_PROBES = ["warm up", "A longer probe sentence, with punctuation and numbers: 1, 2, 3!"]


def _image_probes() -> list:
    gray = Image.new("RGB", (64, 64), (128, 128, 128))
    stripes = Image.new("RGB", (64, 64), (255, 255, 255))
    stripes.paste((0, 0, 0), (0, 0, 32, 64))
    return [gray, stripes]


def probe_inputs(bb) -> list:
    """The registration probes for ``bb``'s modality."""
    if bb.modality == "text":
        return list(TEXT_PROBES)
    if bb.modality == "image":
        return _image_probes()
    return list(bb.sample_inputs())  # another modality (audio): the backbone's own samples


_POOLED: dict[tuple[int, str], tuple[object, object]] = {}  # (id(bb), pooling) -> (bb, [probes, hidden])
_POOLED_LOCK = threading.Lock()


def probe_features(bb, poolings: set[str], run=None):
    """The probes' pooled plain-trunk features on ``bb`` (a ``BatchFeatures``), each pooling
    computed once per backbone, as an embeddings request (through ``run`` when given)."""
    inputs, pooled = probe_inputs(bb), {}
    for pooling in sorted(poolings):
        with _POOLED_LOCK:
            hit = _POOLED.get((id(bb), pooling))
        if hit is None or hit[0] is not bb:
            req = PreparedRequest(bb, inputs, [], EmbedSpec(pooling=pooling))
            emb = (run(req) if run is not None else Runtime(None).run([req])[0]).embeddings
            hit = (bb, emb)  # [probes, hidden] float32 on CPU
            with _POOLED_LOCK:
                _POOLED[(id(bb), pooling)] = hit
        pooled[pooling] = hit[1].to(bb.device)
    return BatchFeatures(pooled, None, inputs)


def check_outputs_finite(adapter, run=None) -> None:
    """Run ``adapter`` (a :class:`~adapters.loading.LoadedAdapter`) on probe inputs; raise
    :class:`NonFiniteOutput` if any score is NaN or infinite.

    A pooled head is scored on the probes' cached trunk features (no forward). Other kinds
    (and token heads) run a probe request. ``run(prepared) -> Results`` runs a request
    (e.g. through a batcher); None runs it here with a registry-less
    :class:`~adapters.runtime.Runtime`.
    """
    if adapter.task.generates:  # decodes on a language model: its own probe (adapters.generation.probe)
        check_generation_finite(adapter)
        return
    if adapter.head is None:  # a shared trunk adaptation: nothing to score, its trunk must be finite
        check_trunk_finite(adapter)
        return
    bb = adapter.backbone
    needs = adapter.task.needs(adapter.manifest) if adapter.impl.shares_trunk_row else {"tokens"}
    if needs <= set(bb.available_poolings):  # reads the frozen trunk's pooled features only
        result = score_alone(adapter, probe_features(bb, needs, run))
    else:
        probe = PreparedRequest(bb, probe_inputs(bb), [adapter])
        result = (run(probe) if run is not None else Runtime(None).run([probe])[0])[0]
    check_rows_finite(result, f"adapter {adapter.name!r} on its registration probe")


def check_trunk_finite(adapter) -> None:
    """Run the probes through the trunk as ``adapter`` (a head-less shared adaptation)
    changes it and refuse it if the features its tasks would read are not finite. This one
    forward runs in the caller's thread (a request cannot name a task with no head), under
    the backbone's lock like every pass, so never at the same time as the batch worker's."""
    bb = adapter.backbone
    inputs = probe_inputs(bb)
    state = adapter.impl.trunk_state(adapter.weights)
    got: list[torch.Tensor] = []
    adapter.impl.trunk_pass.forward(bb, bb.preprocess(inputs), [state] * len(inputs),
                                    lambda f: got.append(f.get(bb.default_pooling)))
    pooled = got[0]  # [probes, hidden]
    if not bool(torch.isfinite(pooled).all()):
        raise NonFiniteOutput(f"shared adaptation {adapter.name!r} on its registration probe: the "
                              f"adapted trunk's {bb.default_pooling} features are not finite; check "
                              "its LoRA factors and lora_alpha")


def _non_finite(value, path: str) -> list[str]:
    """Paths of every NaN/infinite number inside a row's fields (dicts, lists, numbers)."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _non_finite(v, f"{path}.{k}" if path else str(k))]
    if isinstance(value, (list, tuple)):
        return [p for i, v in enumerate(value) for p in _non_finite(v, f"{path}[{i}]")]
    return []


def check_rows_finite(result, where: str) -> None:
    """Raise :class:`NonFiniteOutput` naming the first row of ``result`` (a ``TaskResult``)
    holding a NaN or infinite number, whatever the task type's fields (scores, values...)."""
    for i, row in enumerate(result.rows):
        bad = _non_finite(dict(row.fields), "")
        if bad:
            raise NonFiniteOutput(
                f"task {result.task!r} (version {result.version[:12]}) gave non-finite numbers "
                f"for input {i} ({where}): {bad[:3]}; its weights overflow — retrain or rescale "
                "them (e.g. a smaller lora_alpha)")


def check_embeddings_finite(embeddings: torch.Tensor | None, backbone: str, where: str) -> None:
    """Raise :class:`NonFiniteOutput` naming the inputs whose embedding (a row of
    ``embeddings``, ``[inputs, hidden]``) holds a NaN or infinite number; None passes.

    >>> check_embeddings_finite(torch.zeros(2, 3), "text", "this request")
    >>> check_embeddings_finite(torch.tensor([[0.0, 1.0], [float("nan"), 0.0]]), "text", "this request")
    Traceback (most recent call last):
    ...
    adapters.errors.NonFiniteOutput: backbone 'text' gave non-finite embedding values for inputs [1] (this request): ...
    """
    if embeddings is None:
        return
    bad = (~torch.isfinite(embeddings)).flatten(1).any(1).nonzero().flatten().tolist()  # input indices
    if bad:
        raise NonFiniteOutput(
            f"backbone {backbone!r} gave non-finite embedding values for inputs {bad[:10]} ({where}): "
            "its features overflow on these inputs; no embedding is returned for this request. "
            "Check the backbone's weights and dtype (float32 instead of float16), or send other inputs")
