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

from adapters.backbones.base import Backbone, BackboneSpec, load_backbone
from adapters.errors import InvalidInput
from adapters.loading import LoadedAdapter
from adapters.plugin_checks import read_adapter_dir
from adapters.registry import Registry
from adapters.runtime import Runtime
from adapters.store import open_store
from adapters.tasks import output_names
from adapters.tasks.base import RowResult
from training.data import LabelledData, open_image, open_input
from training.metrics import ClassificationMetrics, classification_metrics
from training.progress import work


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


def adapter_outputs(adapter_dir: Path) -> list[str] | None:
    """The output names of an adapter folder as its task type names them (a regression's outputs)."""
    m = read_adapter_dir(Path(adapter_dir)).manifest
    return output_names(m) if m is not None else None


def run_in_process(adapter_dir: Path, data: LabelledData, backbone: Backbone | BackboneSpec | None = None,
                   batch_size: int = 64, progress: bool = True,
                   options: dict | None = None) -> tuple[LoadedAdapter, list[RowResult]]:
    """Register ``adapter_dir`` in a temp store and answer every input of ``data`` with the
    runtime: ``(the registered version, one row per input in order)``; ``options``: a
    request's task options (``/predict``'s ``threshold``, ``max_detections``).

    ``data.label_names`` must be the adapter's output names (its labels, or a regression's
    outputs): load the data with the adapter's.
    """
    if backbone is None or isinstance(backbone, BackboneSpec):
        backbone = load_backbone(backbone_spec_for(adapter_dir, backbone))
    with tempfile.TemporaryDirectory(prefix="taskswap-eval-") as tmp:
        registry = Registry(open_store(tmp), {backbone.name: backbone})
        # a plain PEFT directory names neither itself nor its outputs: the data's labels do
        plain = not (Path(adapter_dir) / "adapter.json").exists()
        loaded = registry.register(Path(adapter_dir), name="evaluated" if plain else None,
                                   labels=list(data.label_names) if plain else None)
        names = output_names(loaded.manifest)
        if names != list(data.label_names):
            raise InvalidInput(f"the data's {loaded.task.name} outputs {data.label_names} are not the "
                               f"adapter's {names}; load the data with the adapter's")
        modality = backbone.modality
        if data.modality != modality:
            raise InvalidInput(f"the adapter takes {modality} inputs but the data is {data.modality}")
        runtime = Runtime(registry)
        rows: list[RowResult] = []
        with work(len(data), "evaluate", progress) as bar:
            for start in range(0, len(data), batch_size):
                chunk = [open_input(x, modality) for x in data.inputs[start:start + batch_size]]
                rows += runtime.run([runtime.prepare([loaded.name], chunk, modality, options=options)])[0][0].rows
                bar.update(len(chunk))
    return loaded, rows


def served_predictions(client, task: str, data: LabelledData, batch_size: int = 64,
                       progress: bool = True, options: dict | None = None) -> tuple[str, list]:
    """Every input of ``data`` sent to ``task`` on a running server (a
    :class:`taskswap_client.Client`): ``(the version that answered, one prediction per input)``;
    ``options``: ``/predict``'s task options (``threshold``, ``max_detections``).

    All the answers must come from one adapter version; a registration landing mid-way is an
    error (evaluate again), so the metrics always describe exactly one version.
    """
    predictions, versions = [], []
    with work(len(data), "evaluate", progress) as bar:
        for start in range(0, len(data), batch_size):
            chunk = data.inputs[start:start + batch_size]
            if data.modality == "image":
                answer = client.predict(task, images=[_encoded_image(x) for x in chunk], **(options or {}))
            else:
                answer = client.predict(task, texts=list(chunk))
            result = answer.results[0]
            versions.append(result.version)
            predictions += result.predictions
            bar.update(len(chunk))
    if len(set(versions)) > 1:
        raise InvalidInput(f"task {task!r} changed version during the evaluation "
                           f"({', '.join(sorted({v[:12] for v in versions}))}); evaluate again")
    return (versions[0] if versions else ""), predictions


def evaluate_adapter(adapter_dir: Path, data: LabelledData, backbone: Backbone | BackboneSpec | None = None,
                     batch_size: int = 64, progress: bool = True) -> Evaluation:
    """Score ``data`` with ``adapter_dir`` as the server would answer (:func:`run_in_process`).

    ``data.label_names`` must be the adapter's labels (load it with ``labels=`` the adapter's).
    """
    loaded, rows = run_in_process(adapter_dir, data, backbone, batch_size, progress)
    probs = _probabilities([r.scores for r in rows], data.label_names)
    return Evaluation(loaded.name, loaded.version, _classification(data, probs), probs)


def evaluate_served(client, task: str, data: LabelledData, batch_size: int = 64,
                    progress: bool = True) -> Evaluation:
    """Score ``data`` with the answers of a running server (:func:`served_predictions`).

    ``data.label_names`` must be the task's labels (``client.show(task).labels``).
    """
    version, predictions = served_predictions(client, task, data, batch_size, progress)
    missing = set(data.label_names) - set(predictions[0].scores) if predictions else set()
    if missing:
        raise InvalidInput(f"task {task!r} has no labels {sorted(missing)}; load the data with "
                           "the task's labels")
    probs = _probabilities([p.scores for p in predictions], data.label_names)
    return Evaluation(task, version, _classification(data, probs), probs)


def _probabilities(scores: list[dict[str, float]], labels: list[str]) -> torch.Tensor:
    """``[n, labels]`` from per-row ``{label: score}`` maps, in ``labels``' order."""
    return torch.tensor([[s[lab] for lab in labels] for s in scores],
                        dtype=torch.float32).reshape(len(scores), len(labels))


def _classification(data: LabelledData, probs: torch.Tensor) -> ClassificationMetrics:
    y = torch.tensor(data.labels)
    loss = float(-torch.log(probs[torch.arange(len(y)), y].clamp_min(1e-12)).mean()) if len(y) else None
    return classification_metrics(data.labels, probs.argmax(1).tolist(), data.label_names, loss)


def _encoded_image(x) -> bytes:
    """An image input of a data set (a path or an in-memory image) as PNG/JPEG file bytes."""
    if isinstance(x, (str, Path)):
        return Path(x).read_bytes()
    buf = io.BytesIO()
    open_image(x).save(buf, "PNG")
    return buf.getvalue()
