"""The training half of dense task types: fitted by :mod:`training.dense` (heads on cached
frozen maps), not by the pooled trainer, whose data check says so; scored on held-out data
by :mod:`training.evaluate_dense` from the answers the server gives."""

from __future__ import annotations

from pathlib import Path

from training.tasks.base import TrainingTask


class DenseTraining(TrainingTask):
    """What differs between detection and segmentation in :func:`training.dense.fit.fit_dense`
    and in :mod:`training.evaluate_dense`."""

    default_strides: tuple[int, ...] = (8, 16)
    default_input_size: int = 224
    demo: str = ""
    """The bundled demo data set of this type (``taskswap train --demo``)."""

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
        """The scores of the answers ``head`` gives on cached ``maps`` of ``data``, as the
        server would decode them with a request's :meth:`serving_options`."""
        raise NotImplementedError

    def dense_plots(self, head, maps, data, cfg, spec, folder: Path, split: str) -> list[tuple[str, str]]:
        """Write this type's evaluation plots of ``head`` on cached ``maps`` of held-out ``data``
        (``split``) into ``folder`` (:mod:`training.dense.plots`); ``(file name, caption)`` each."""
        raise NotImplementedError

    # ---- held-out evaluation: the same scores from served answers -------------------------
    def serving_options(self, dense_spec) -> dict:
        """The request options (``/predict``'s ``threshold``...) under which a server's answers
        are the ones :meth:`dense_scores` scored."""
        return {}

    def served_scores(self, data, answers: list) -> dict:
        """:meth:`dense_scores`'s numbers from answers, one per image of ``data``: the runtime's
        ``RowResult`` rows or the client's ``Prediction`` models (both read as attributes)."""
        raise NotImplementedError

    def load_files(self, path: Path, labels: list[str], masks: Path | None = None,
                   image_root: Path | None = None):
        """A labelled data set of this type from files (a ``DenseData``)."""
        raise NotImplementedError

    def demo_test(self, limit: int | None, seed: int = 0) -> dict:
        """The demo's held-out splits: split name -> ``DenseData`` (the trainer's ``tests``)."""
        raise NotImplementedError
