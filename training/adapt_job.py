"""Adapt a task's active head to a new domain from inputs sent over HTTP: the child process of
a server adapt job (``POST /adapters/{task}/adapt``, :mod:`service.jobs`).

Same contract as :mod:`training.fit_job` (which it shares the phases, exit codes and the
active-version comparison with): the server writes a spec (JSON: ``source_dir``, the
task's active version folder in the store; ``texts`` or ``images``; optional
``source_*`` and labelled ``val_*``; ``method`` and its settings (``shrinkage``, ``epochs``,
``lr``, ``keep_fraction``, ``em_iterations``), the backbone), runs
``python -m training.adapt_job SPEC OUT``, and registers ``OUT/adapter/`` as
``OUT/result.json`` and the job's ``promote`` say. The adaptation is
:func:`training.adapt.adapt`, the code behind ``taskswap adapt``.

Example (what the server runs)::

    python -m training.adapt_job /tmp/job/spec.json /tmp/job/out
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

from adapters.backbones.base import BackboneSpec, load_backbone  # noqa: E402
from adapters.errors import InvalidInput, TaskswapError  # noqa: E402
from training.adapt import adapt  # noqa: E402
from training.data import LabelledData  # noqa: E402
from training.domain import AdaptConfig  # noqa: E402
from training.evaluate import adapter_labels  # noqa: E402
from training.fit_job import EXIT_BAD_INPUT, EXIT_FAILED, phase, compare_active, decode_images  # noqa: E402


def _inputs(spec: dict, field: str) -> list | None:
    """The spec's ``{field}_texts`` / ``{field}_images`` (``texts`` / ``images`` for the target)."""
    key = f"{field}_" if field else ""
    if spec.get("modality") == "image":
        images = spec.get(f"{key}images")
        return None if images is None else decode_images(images)
    return spec.get(f"{key}texts")


def _labelled(spec: dict, labels: list[str]) -> LabelledData | None:
    inputs = _inputs(spec, "val")
    if inputs is None:
        return None
    unknown = sorted(set(spec["val_labels"]) - set(labels))
    if unknown:
        raise InvalidInput(f"val_labels {unknown[:10]} are not labels of the task ({labels})")
    return LabelledData(spec.get("modality", "text"), inputs, [labels.index(y) for y in spec["val_labels"]],
                        list(labels), "labelled target examples sent over HTTP")


def run(spec: dict, out: Path) -> dict:
    torch.set_num_threads(int(spec.get("threads") or 1))
    cfg = AdaptConfig(method=spec.get("method", "coral"), shrinkage=spec.get("shrinkage", 0.1), progress=False,
                      epochs=spec.get("epochs", 2), lr=spec.get("lr", 5e-4), keep_fraction=spec.get("keep_fraction", 0.5),
                      em_iterations=spec.get("em_iterations", 100))
    source_dir = Path(spec["source_dir"])
    target = _inputs(spec, "")
    labelled = _labelled(spec, adapter_labels(source_dir) or [])
    phase("loading_backbone")
    backbone = load_backbone(BackboneSpec(**spec["backbone"]))
    phase("adapting", examples=len(target))
    r = adapt(source_dir, target, out / "adapter", cfg, backbone, source_inputs=_inputs(spec, "source"),
              target_labelled=labelled, target_description="inputs sent over HTTP", cache_dir=None)
    doc = {"status": "fitted", "seconds": r.seconds, "metrics": r.manifest.metrics,
           "examples": {"target": len(target), **({"labelled_target": len(labelled)} if labelled else {})},
           "adaptation": r.manifest.training["adaptation"]}
    if spec.get("compare_with"):
        phase("comparing")
        doc["active"] = compare_active(Path(spec["compare_with"]), labelled, backbone)
    return doc


def main(argv: list[str] | None = None) -> int:
    spec_path, out = (argv or sys.argv[1:])[:2]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        doc, code = run(json.loads(Path(spec_path).read_text()), out), 0
    except TaskswapError as exc:
        doc, code = {"status": "failed", "error": type(exc).__name__, "message": exc.message,
                     "problems": exc.problems}, EXIT_BAD_INPUT
    except Exception as exc:  # reported to the job, never silently lost
        doc, code = {"status": "failed", "error": type(exc).__name__, "message": str(exc)}, EXIT_FAILED
    (out / "result.json").write_text(json.dumps(doc, indent=2))
    phase("done", status=doc["status"])
    return code


if __name__ == "__main__":
    sys.exit(main())
