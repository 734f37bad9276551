"""The registration dry run: a new adapter answers a few probe inputs before it is published.

Its shapes were checked from headers; this checks its numbers. An adapter whose scores
are not finite on ordinary inputs (a head with weights of 3e38, ``lora_alpha: 1e38``)
would answer ``"score": null`` — it is refused with :class:`NonFiniteOutput` instead.
The probes go through the same runtime as requests (trunk, LoRA deltas, heads).

The same checks guard every answer: :func:`check_rows_finite` a request's task results,
:func:`check_embeddings_finite` its embeddings (a backbone whose features overflow on some
input, e.g. in float16 or with broken weights); JSON has no NaN, and a base64 float32
vector would carry one silently.
"""

from __future__ import annotations

import math

import torch

from adapters.errors import NonFiniteOutput

TEXT_PROBES = ["warm up", "A longer probe sentence, with punctuation and numbers: 1, 2, 3!"]


def _image_probes() -> list:
    from PIL import Image
    gray = Image.new("RGB", (64, 64), (128, 128, 128))
    stripes = Image.new("RGB", (64, 64), (255, 255, 255))
    stripes.paste((0, 0, 0), (0, 0, 32, 64))
    return [gray, stripes]


def check_outputs_finite(adapter) -> None:
    """Run ``adapter`` (a :class:`~adapters.loading.LoadedAdapter`) on probe inputs; raise
    :class:`NonFiniteOutput` if any score is NaN or infinite."""
    from adapters.runtime import Prepared, Runtime  # the runtime imports the registry: import late
    bb = adapter.backbone
    if bb.modality == "text":
        probes = TEXT_PROBES
    elif bb.modality == "image":
        probes = _image_probes()
    else:  # another modality (audio): the backbone's own sample inputs
        probes = bb.sample_inputs()
    result = Runtime(registry=None).run([Prepared(bb, probes, [adapter])])[0][0]
    check_rows_finite(result, f"adapter {adapter.name!r} on its registration probe")


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
