"""Score a detection or segmentation task (an adapter folder, or a task a server answers) on
held-out data with the trainer's numbers: COCO mAP@[.5:.95], mAP@.5 and mAP@.75
(pycocotools' ``COCOeval``) for detection; mIoU, per-class IoU and pixel accuracy
(scikit-learn's ``jaccard_score``) for segmentation.

The same paths as classification (:mod:`training.evaluate`): a folder is registered into a
throwaway store and answered by the server's runtime; a served task is asked through the
typed client. Either way the request carries the options under which the trainer scored
(:meth:`training.tasks.dense.DenseTraining.serving_options`: a detector's lowest threshold and
its max detections), so ``taskswap evaluate`` on the trainer's ``--test-data`` prints the
numbers the trainer wrote for its test split.

    taskswap evaluate out/boxes --data test/annotations.json
    taskswap evaluate out/regions --data test/images --masks test/masks
    taskswap evaluate --url http://127.0.0.1:3000 --task boxes --data test/annotations.json
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from adapters.backbones.base import Backbone, BackboneSpec
from adapters.errors import InvalidInput
from adapters.format import DenseSpec
from adapters.plugin_checks import read_adapter_dir
from adapters.tasks import task_type
from training.dense.data import DenseData
from training.evaluate import run_in_process, served_predictions
from training.tasks import training_task


@dataclass
class DenseEvaluation:
    task: str
    version: str
    task_type: str
    split: str
    metrics: dict  # the trainer's scores of one split: map, map50, map75 | miou, iou, pixel_accuracy


def is_dense(adapter_dir: Path) -> bool:
    """True for a folder whose task type reads the trunk's spatial maps (detection, segmentation)."""
    m = read_adapter_dir(Path(adapter_dir)).manifest
    return m is not None and task_type(m.task_type).features == "maps"


def held_out(task_type_name: str, labels: list[str], path: Path | None = None, demo: str | None = None,
             masks: Path | None = None, image_root: Path | None = None,
             limit: int | None = None) -> dict[str, DenseData]:
    """The held-out data to score a task of ``task_type_name`` on: split name -> data. Files
    (a COCO JSON file; an image folder with ``masks``) are one split, ``test``; the type's demo
    gives the trainer's test splits (brain-regions: ``test`` and ``test_ch2bet``)."""
    task = training_task(task_type_name)
    if demo is not None:
        if demo != task.demo:
            raise InvalidInput(f"--demo {demo!r} is not a {task_type_name} data set; use --demo {task.demo} "
                               "or --data")
        tests = task.demo_test(limit)
    elif path is not None:
        data = task.load_files(path, labels, masks=masks, image_root=image_root)
        tests = {"test": data.subset(list(range(min(limit, len(data))))) if limit else data}
    else:
        raise InvalidInput(f"give the held-out data: --data (and for segmentation --masks) or --demo {task.demo}")
    for split, d in tests.items():
        if d.label_names != list(labels):
            raise InvalidInput(f"the {split} data's labels {d.label_names} are not the task's {list(labels)}")
    return tests


def evaluate_dense_adapter(adapter_dir: Path, tests: dict[str, DenseData],
                           backbone: Backbone | BackboneSpec | None = None, batch_size: int = 16,
                           progress: bool = True) -> list[DenseEvaluation]:
    """Score each held-out split with a dense adapter folder, as the server would answer."""
    m = read_adapter_dir(Path(adapter_dir)).manifest
    task = training_task(m.task_type)
    out = []
    for split, data in tests.items():
        loaded, rows = run_in_process(adapter_dir, data, backbone, batch_size, progress,
                                      options=task.serving_options(m.dense))
        out.append(DenseEvaluation(loaded.name, loaded.version, m.task_type, split, task.served_scores(data, rows)))
    return out


def evaluate_served_dense(client, task_name: str, tests: dict[str, DenseData], batch_size: int = 16,
                          progress: bool = True) -> list[DenseEvaluation]:
    """Score each held-out split with the answers a running server gives for ``task_name``."""
    info = client.show(task_name)
    if info.dense is None:  # not loaded on this replica yet: one answer loads it
        first = next(iter(tests.values()))
        served_predictions(client, task_name, first.subset([0]), progress=False)
        info = client.show(task_name)
    task = training_task(info.task_type)
    options = task.serving_options(DenseSpec(**info.dense))
    out = []
    for split, data in tests.items():
        version, answers = served_predictions(client, task_name, data, batch_size, progress, options)
        out.append(DenseEvaluation(task_name, version, info.task_type, split, task.served_scores(data, answers)))
    return out


def print_dense_evaluation(evs: list[DenseEvaluation], tests: dict[str, DenseData]) -> None:
    for ev in evs:
        task = training_task(ev.task_type)
        m = ev.metrics
        print(f"{ev.task} (version {ev.version[:12]}) on {len(tests[ev.split])} images of {tests[ev.split].source}")
        print(f"{ev.split}: {task.headline_name} {m[task.headline_metric]:.4f}  "
              + "  ".join(f"{k} {v:.4f}" for k, v in m.items()
                          if isinstance(v, float) and k != task.headline_metric))
        for label, iou in (m.get("iou") or {}).items():
            print(f"  {label:<20}IoU {'-' if iou is None else f'{iou:.3f}'}")


def dense_json(evs: list[DenseEvaluation]) -> str:
    """The evaluation as JSON: the task, its version and each split's metrics."""
    return json.dumps({"task": evs[0].task if evs else None, "version": evs[0].version if evs else None,
                       "task_type": evs[0].task_type if evs else None,
                       "metrics": {ev.split: ev.metrics for ev in evs}}, indent=2)
