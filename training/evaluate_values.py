"""Score a regression adapter (a folder, or a task a server answers) on rated data.

The same paths as classification (:mod:`training.evaluate`): a folder is registered into a
throwaway store and answered by the server's runtime; a served task is asked through the
typed client. The metrics are the trainer's (:func:`adapters.tasks.metrics.regression_metrics`:
MAE, RMSE, R² and Spearman per output, in the targets' units), so ``taskswap evaluate`` on the
trainer's ``--test-data`` prints the numbers the trainer wrote for its test split.

    taskswap evaluate out/rating --data ratings-test.csv          # outputs from the adapter
    taskswap evaluate --url http://127.0.0.1:3000 --task rating --data ratings-test.csv
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adapters.backbones.base import Backbone, BackboneSpec
from adapters.errors import InvalidInput
from adapters.plugin_checks import read_adapter_dir
from adapters.tasks import task_type
from adapters.tasks.metrics import RegressionMetrics, regression_metrics
from training.data import LabelledData
from training.evaluate import run_in_process, served_predictions


@dataclass
class ValueEvaluation:
    task: str
    version: str
    metrics: RegressionMetrics
    values: np.ndarray  # [n, outputs] in the targets' units, in the data's output order


def is_regressor(adapter_dir: Path) -> bool:
    """True for a folder whose manifest names a real-valued task type (``regression``)."""
    m = read_adapter_dir(Path(adapter_dir)).manifest
    return m is not None and task_type(m.task_type).name == "regression"


def evaluate_regressor(adapter_dir: Path, data: LabelledData, backbone: Backbone | BackboneSpec | None = None,
                       batch_size: int = 64, progress: bool = True) -> ValueEvaluation:
    """Score rated ``data`` (``values``) with a regression adapter folder, as served."""
    _check_rated(data)
    loaded, rows = run_in_process(adapter_dir, data, backbone, batch_size, progress)
    values = _matrix([r.values for r in rows], data.label_names, loaded.name)
    return ValueEvaluation(loaded.name, loaded.version, _metrics(data, values), values)


def evaluate_served_regressor(client, task: str, data: LabelledData, batch_size: int = 64,
                              progress: bool = True) -> ValueEvaluation:
    """Score rated ``data`` with the values a running server answers for ``task``."""
    _check_rated(data)
    version, predictions = served_predictions(client, task, data, batch_size, progress)
    values = _matrix([p.values for p in predictions], data.label_names, task)
    return ValueEvaluation(task, version, _metrics(data, values), values)


def print_value_evaluation(ev: ValueEvaluation, data: LabelledData) -> None:
    m = ev.metrics
    print(f"{ev.task} (version {ev.version[:12]}) on {len(data)} examples of {data.source}")
    print(f"R² {m.r2:.4f}  MAE {m.mae:.4f}  RMSE {m.rmse:.4f}  Spearman {m.spearman:.4f}")
    print(f"{'output':<20}{'R²':>8}{'MAE':>10}{'RMSE':>10}{'Spearman':>10}")
    for name, o in m.per_output.items():
        print(f"{name:<20}{o['r2']:>8.3f}{o['mae']:>10.3f}{o['rmse']:>10.3f}{o['spearman']:>10.3f}")


def _check_rated(data: LabelledData) -> None:
    if data.values is None:
        raise InvalidInput("a regression task is scored on real-valued targets: give the numeric "
                           "columns with --target-columns (default: the task's outputs)")


def _matrix(rows: list[dict[str, float] | None], names: list[str], task: str) -> np.ndarray:
    """``[n, outputs]`` from per-row ``{output: value}`` maps, in ``names``' order."""
    if rows and (rows[0] is None or set(names) - set(rows[0])):
        got = sorted(rows[0] or {})
        raise InvalidInput(f"task {task!r} answers the outputs {got}, not {names}; name the task's "
                           "outputs with --target-columns")
    return np.array([[r[n] for n in names] for r in rows], dtype=np.float64).reshape(len(rows), len(names))


def _metrics(data: LabelledData, values: np.ndarray) -> RegressionMetrics:
    """The trainer's metrics; its loss for a split is the MSE in the targets' units."""
    mse = float(((values - np.asarray(data.values, dtype=np.float64)) ** 2).mean()) if len(values) else None
    return regression_metrics(data.values, values.tolist(), data.label_names, mse)
