"""Fit a head from labelled examples sent over HTTP: the child process of a server fit job.

The server (``service/jobs.py``) writes a job spec (JSON: examples, labels, backbone,
options) and runs ``python -m training.fit_job SPEC OUT``; this module fits the head with
the same :func:`training.trainer.train` as ``taskswap train --method head`` (same check,
split, fit, evaluate, export phases, same model card and metrics files), and writes
``OUT/adapter/`` plus ``OUT/result.json``. With ``compare_with`` (the task's active
version folder), the active version is scored on the *same* validation examples, so the
server can promote only if the new head is better.

It runs in its own process so the fit never competes with the server's batches for the
GIL, and the server lowers its priority (``nice``) and thread count. Progress goes to
stdout as one JSON object per line (``{"phase": ...}``); an error to ``result.json`` with
the same message the CLI would print, and exit code 2 (bad data) or 1.

Example (what the server runs)::

    python -m training.fit_job /tmp/job/spec.json /tmp/job/out
"""

from __future__ import annotations

import base64
import io
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

# Before transformers is imported (below): no hub access (read once, when it is imported).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from adapters.backbones.base import BackboneSpec, load_backbone  # noqa: E402
from adapters.errors import InvalidInput, TaskswapError  # noqa: E402
from adapters.redact import redact  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.data import LabelledData, open_image  # noqa: E402
from adapters.tasks import task_type  # noqa: E402
from training.evaluate import adapter_labels, evaluate_adapter  # noqa: E402
from training.generation_job import run_generation  # noqa: E402
from training.trainer import check_data, train  # noqa: E402

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def phase(name: str, **extra) -> None:
    print(json.dumps({"phase": name, "at": time.time(), **extra}), flush=True)


def decode_images(images: list[str]) -> list:
    """PIL images of base64 strings the server already checked (RGB)."""
    return [open_image(Image.open(io.BytesIO(base64.b64decode(b)))) for b in images]


def labelled_data(spec: dict):
    """The job's examples as :class:`training.data.LabelledData` (labels as given, in
    ``label_names`` order, or sorted when none is given)."""
    labels = spec["labels"]
    names = spec.get("label_names") or sorted(set(labels))
    unknown = sorted(set(labels) - set(names))
    if unknown:
        raise InvalidInput(f"labels {unknown[:10]} are not in label_names {names}")
    if spec.get("texts") is not None:
        inputs, modality = list(spec["texts"]), "text"
    else:
        inputs, modality = decode_images(spec["images"]), "image"
    index = {n: i for i, n in enumerate(names)}
    return LabelledData(modality, inputs, [index[y] for y in labels], list(names), "examples sent over HTTP")


def compare_active(active_dir: Path, val, backbone) -> dict:
    """The active version's metrics on the candidate's validation examples."""
    labels = adapter_labels(active_dir) or []
    if sorted(labels) != sorted(val.label_names):
        return {"comparable": False, "reason": f"the active version's labels {labels} differ from "
                f"the examples' labels {val.label_names}"}
    remap = {n: labels.index(n) for n in val.label_names}
    data = replace(val, labels=[remap[val.label_names[y]] for y in val.labels], label_names=list(labels))
    ev = evaluate_adapter(active_dir, data, backbone, progress=False)
    return {"comparable": True, "version": ev.version, "val_accuracy": ev.metrics.accuracy,
            "val_macro_f1": ev.metrics.macro_f1, "metrics": ev.metrics.summary("val")}


def run(spec: dict, out: Path) -> dict:
    """Fit, export to ``out/adapter``, compare; returns the result document."""
    if task_type(spec.get("task_type", "single_label")).generates:  # a LoRA on a language model
        return run_generation(spec, out)
    torch.set_num_threads(int(spec.get("threads") or 1))
    o = spec.get("options") or {}
    config = TrainConfig(name=spec["name"], method="head", hidden=o.get("hidden") or [],
                         epochs=o.get("epochs"), val_fraction=o.get("val_fraction", 0.2),
                         seed=o.get("seed", 0), progress=False)
    data = labelled_data(spec)
    check_data(data, None, None, None)  # the CLI's data errors, before the backbone loads
    phase("loading_backbone")
    backbone = load_backbone(BackboneSpec(**spec["backbone"]))
    phase("fitting", examples=len(data))
    result = train(data, backbone, config, out / "adapter", cache_dir=None)
    doc = {"status": "fitted", "seconds": result.seconds, "examples": {s: len(d) for s, d in result.splits.items()},
           "metrics": result.manifest.metrics,  # every split's summary and the headline record
           "best_epoch": result.history.best_epoch, "epochs_run": len(result.history.train_loss)}
    if spec.get("compare_with"):
        phase("comparing")
        doc["active"] = compare_active(Path(spec["compare_with"]), result.splits["validation"], backbone)
    return doc


def main(argv: list[str] | None = None) -> int:
    spec_path, out = (argv or sys.argv[1:])[:2]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        spec = json.loads(Path(spec_path).read_text())
        doc = run(spec, out)
        code = 0
    except TaskswapError as exc:
        doc, code = {"status": "failed", "error": type(exc).__name__, "message": redact(exc.message),
                     "problems": [redact(p) for p in exc.problems]}, EXIT_BAD_INPUT
    except Exception as exc:  # reported to the job, never silently lost; details in the log only
        print(f"fit failed: {exc!r}", file=sys.stderr)
        doc, code = {"status": "failed", "error": "FitFailed",
                     "message": f"the fit failed ({type(exc).__name__}: {redact(str(exc))[:300]})"}, EXIT_FAILED
    (out / "result.json").write_text(json.dumps(doc, indent=2))
    phase("done", status=doc["status"])
    return code


if __name__ == "__main__":
    sys.exit(main())
