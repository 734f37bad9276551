"""The registration dry run: a new adapter answers a few probe inputs before it is published.

Its shapes were checked from headers; this checks its numbers. An adapter whose scores
are not finite on ordinary inputs (a head with weights of 3e38, ``lora_alpha: 1e38``)
would answer ``"score": null`` — it is refused with :class:`NonFiniteOutput` instead.
The probes go through the same runtime as requests (trunk, LoRA deltas, heads).
"""

from __future__ import annotations

import math

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
