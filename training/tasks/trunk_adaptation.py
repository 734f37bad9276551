"""``trunk_adaptation``: the shared adaptation a multitask run writes beside its tasks.

It has no targets or head of its own: it is fitted only jointly with the heads of the
tasks that ride on it, and a data set for it alone is refused with the command that
trains it. Its headline is the mean of its tasks' validation headlines.
"""

from __future__ import annotations

from training.tasks.base import TrainingTask


class TrunkAdaptationTraining(TrainingTask):
    name = "trunk_adaptation"
    outputs_word = "tasks"
    loss_words = "the weighted sum of its tasks' losses"
    loss_name = "weighted task loss"
    headline_name = "mean task headline"
    headline_metric = "task_mean"

    def check_data(self, data) -> list[str]:
        return ["a trunk_adaptation is trained jointly with its tasks, not from one data set: "
                "use taskswap train --multitask a.csv,b.csv,..."]

    def manifest_metrics(self, metrics: dict) -> dict:
        """``{"val_task_mean": ..., "<task>/val_accuracy": ...}`` from ``{task: {key: value}}``."""
        flat = {f"{task}/{k}": v for task, m in metrics.items() for k, v in m.items()}
        return {**flat, **self.headline_record("val")}
