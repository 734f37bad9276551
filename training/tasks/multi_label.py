"""``multi_label`` training: not supported yet (serving is); the data check says so."""

from __future__ import annotations

from training.tasks.single_label import SingleLabelTraining


class MultiLabelTraining(SingleLabelTraining):
    name = "multi_label"

    def check_data(self, data) -> list[str]:
        return ["training a multi_label task is not supported yet (serving is)"]
