"""The fit request's data rules (service/fit_data.py) against the trainer they stand for."""

from __future__ import annotations

import pytest

from adapters.errors import InvalidInput
from service.errors import status_for
from service.fit_data import UnfittableData, check_fit_data, fit_data_problems, held_out_size
from training.data import LabelledData
from training.data.dataset import stratified_split
from training.trainer import check_data, split_data
from training.config import TrainConfig

SHAPES = [[1, 1], [1, 1, 1, 1], [2, 1], [2, 2], [3, 1, 1], [5, 5], [7, 2, 1], [1] * 9, [40, 3]]
FRACTIONS = [0.05, 0.2, 0.5, 0.55, 0.9]


def data_of(counts: list[int]) -> LabelledData:
    labels = [c for c, n in enumerate(counts) for _ in range(n)]
    return LabelledData("text", [f"t{i}" for i in range(len(labels))], labels,
                        [f"c{c}" for c in range(len(counts))], "test")


@pytest.mark.parametrize("counts", SHAPES)
@pytest.mark.parametrize("fraction", FRACTIONS)
def test_held_out_size_is_the_trainers_split(counts, fraction):
    for seed in (0, 7):
        _, held = stratified_split(data_of(counts), 1.0 - fraction, seed=seed)
        assert held_out_size(counts, fraction) == len(held)


@pytest.mark.parametrize("counts", SHAPES + [[4], [1], [3]])
@pytest.mark.parametrize("fraction", [0.2, 0.5])
def test_refused_exactly_when_the_trainer_refuses(counts, fraction):
    """No false refusal and no job left to fail: the service's verdict is the trainer's."""
    data = data_of(counts)
    try:
        check_data(data, None, None, None)
        split_data(data, None, TrainConfig(name="t", method="head", val_fraction=fraction))
        trainer_ok = True
    except InvalidInput:
        trainer_ok = False
    labels = [data.label_names[y] for y in data.labels]
    assert (fit_data_problems(labels, fraction) == []) is trainer_ok, (counts, fraction)


def test_every_problem_is_named_at_once_and_is_a_422():
    with pytest.raises(UnfittableData) as err:
        check_fit_data(["x", "x"], 0.2, "regression")
    assert len(err.value.problems) == 3
    assert "needs at least 2" in err.value.message and "at least 4" in err.value.message
    assert "regression task" in err.value.message and "--task-type regression" in err.value.message
    assert status_for(err.value) == (422, "unfittable_data")
    check_fit_data(["x", "y", "x", "y"], 0.2, "single_label")  # a fine request passes
