"""The training half of dense task types: fitted by :mod:`training.dense` (heads on cached
frozen maps), not by the pooled trainer, whose data check says so."""

from __future__ import annotations

from training.tasks.base import TrainingTask


class DenseTraining(TrainingTask):
    """What differs between detection and segmentation in :func:`training.dense.fit.fit_dense`."""

    default_strides: tuple[int, ...] = (8, 16)
    default_input_size: int = 224

    def check_data(self, data) -> list[str]:
        return [f"a {self.name} task trains with its own trainer: taskswap train --task-type {self.name}"]

    def n_out(self, n_labels: int) -> int:
        raise NotImplementedError

    def init_head(self, head, n_labels: int) -> None:
        """Set the head's initial biases (before fitting)."""

    def dense_targets(self, data, cfg, stride: int):
        raise NotImplementedError

    def dense_loss(self, out, targets, idx, n_labels: int):
        raise NotImplementedError

    def dense_scores(self, head, maps, data, cfg, spec) -> dict:
        raise NotImplementedError
