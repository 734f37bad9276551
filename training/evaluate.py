"""Score an adapter folder on labelled data with the server's own code path.

The adapter is registered into a throwaway local store through
:class:`adapters.registry.Registry` (the checks of ``POST /adapters``) and scored by
:class:`adapters.runtime.Runtime` (the server's batched forward), so the numbers are
what the server would answer on the same inputs.

Example::

    taskswap evaluate out/sentiment --demo rotten-tomatoes --limit 500
"""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from adapters.backbones.base import Backbone, BackboneSpec, load_backbone
from adapters.errors import InvalidInput
from adapters.plugin_checks import read_adapter_dir
from adapters.registry import Registry
from adapters.runtime import Runtime
from adapters.store import open_store
from training.data import LabelledData, open_image, open_input
from training.metrics import ClassificationMetrics, classification_metrics


@dataclass
class Evaluation:
    task: str
    version: str
    metrics: ClassificationMetrics
    probs: torch.Tensor  # [n, n_labels] in the adapter's label order


def backbone_spec_for(adapter_dir: Path, override: BackboneSpec | None = None) -> BackboneSpec:
    """The backbone an adapter names (source + preprocessing from its manifest), unless overridden."""
    adir = read_adapter_dir(Path(adapter_dir))
    if override is not None:
        return override
    m = adir.manifest
    if m is None or not m.backbone.source:
        raise InvalidInput(f"{adapter_dir} does not say which backbone it needs (no adapter.json "
                           "backbone.source); pass --backbone")
    spec = BackboneSpec(name=m.backbone.name, source=m.backbone.source)
    if "max_length" in m.preprocessing:
        spec = replace(spec, max_length=int(m.preprocessing["max_length"]))
    if "image_size" in m.preprocessing:
        spec = replace(spec, image_size=int(m.preprocessing["image_size"]))
    return spec


def adapter_labels(adapter_dir: Path) -> list[str] | None:
    m = read_adapter_dir(Path(adapter_dir)).manifest
    return list(m.labels) if m is not None else None


def evaluate_adapter(adapter_dir: Path, data: LabelledData, backbone: Backbone | BackboneSpec | None = None,
                     batch_size: int = 64, progress: bool = True) -> Evaluation:
    """Register ``adapter_dir`` in a temp store and score ``data`` with the runtime.

    ``data.label_names`` must be the adapter's labels (load it with ``labels=`` the adapter's).
    """
    if backbone is None or isinstance(backbone, BackboneSpec):
        backbone = load_backbone(backbone_spec_for(adapter_dir, backbone))
    with tempfile.TemporaryDirectory(prefix="taskswap-eval-") as tmp:
        registry = Registry(open_store(tmp), {backbone.name: backbone})
        # a plain PEFT directory names neither itself nor its outputs: the data's labels do
        plain = not (Path(adapter_dir) / "adapter.json").exists()
        loaded = registry.register(Path(adapter_dir), name="evaluated" if plain else None,
                                   labels=list(data.label_names) if plain else None)
        if list(loaded.labels) != list(data.label_names):
            raise InvalidInput(f"the data's labels {data.label_names} are not the adapter's labels "
                               f"{loaded.labels}; load the data with labels={loaded.labels}")
        modality = backbone.modality
        if data.modality != modality:
            raise InvalidInput(f"the adapter takes {modality} inputs but the data is {data.modality}")
        runtime = Runtime(registry)
        rows = []
        for start in tqdm(range(0, len(data), batch_size), desc="evaluate", unit="batch",
                          disable=not progress, leave=False):
            chunk = data.inputs[start:start + batch_size]
            chunk = [open_input(x, modality) for x in chunk]
            result = runtime.run([runtime.prepare([loaded.name], chunk, modality)])[0][0]
            rows += [[r.scores[lab] for lab in loaded.labels] for r in result.rows]
    probs = torch.tensor(rows, dtype=torch.float32).reshape(len(data), len(loaded.labels))
    y = torch.tensor(data.labels)
    loss = float(-torch.log(probs[torch.arange(len(y)), y].clamp_min(1e-12)).mean()) if len(y) else None
    metrics = classification_metrics(data.labels, probs.argmax(1).tolist(), data.label_names, loss)
    return Evaluation(loaded.name, loaded.version, metrics, probs)


def evaluate_served(client, task: str, data: LabelledData, batch_size: int = 64,
                    progress: bool = True) -> Evaluation:
    """Score ``data`` with the answers of a running server (a :class:`taskswap_client.Client`).

    ``data.label_names`` must be the task's labels (``client.show(task).labels``). All the
    answers must come from one adapter version; a registration landing mid-way is an error
    (evaluate again), so the metrics always describe exactly one version.
    """
    rows, versions = [], []
    for start in tqdm(range(0, len(data), batch_size), desc="evaluate", unit="batch",
                      disable=not progress, leave=False):
        chunk = data.inputs[start:start + batch_size]
        if data.modality == "image":
            answer = client.predict(task, images=[_encoded_image(x) for x in chunk])
        else:
            answer = client.predict(task, texts=list(chunk))
        result = answer.results[0]
        versions.append(result.version)
        missing = set(data.label_names) - set(result.predictions[0].scores)
        if missing:
            raise InvalidInput(f"task {task!r} has no labels {sorted(missing)}; load the data with "
                               "the task's labels")
        rows += [[p.scores[lab] for lab in data.label_names] for p in result.predictions]
    if len(set(versions)) > 1:
        raise InvalidInput(f"task {task!r} changed version during the evaluation "
                           f"({', '.join(sorted({v[:12] for v in versions}))}); evaluate again")
    probs = torch.tensor(rows, dtype=torch.float32).reshape(len(data), len(data.label_names))
    y = torch.tensor(data.labels)
    loss = float(-torch.log(probs[torch.arange(len(y)), y].clamp_min(1e-12)).mean()) if len(y) else None
    metrics = classification_metrics(data.labels, probs.argmax(1).tolist(), data.label_names, loss)
    return Evaluation(task, versions[0] if versions else "", metrics, probs)


def _encoded_image(x) -> bytes:
    """An image input of a data set (a path or an in-memory image) as PNG/JPEG file bytes."""
    if isinstance(x, (str, Path)):
        return Path(x).read_bytes()
    buf = io.BytesIO()
    open_image(x).save(buf, "PNG")
    return buf.getvalue()
