"""The length-aware sub-batch plan (pure): coverage, budget, order; the runtime's use is in
tests/unit/test_runtime_length_batches.py."""

import random

import pytest

from adapters.length_batches import fixed_sub_batches, padding_fraction, plan_sub_batches


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("budget, max_rows", [(64, 8), (512, 64), (2048, 256), (10, 3)])
def test_plan_covers_every_row_once_within_budget(seed, budget, max_rows):
    rng = random.Random(seed)
    lengths = [rng.randint(1, 80) for _ in range(rng.randint(1, 300))]
    plan = plan_sub_batches(lengths, budget, max_rows)
    assert sorted(i for g in plan for i in g) == list(range(len(lengths)))
    for g in plan:
        assert 1 <= len(g) <= max_rows
        longest = max(lengths[i] for i in g)
        assert len(g) == 1 or len(g) * longest <= budget
        assert [lengths[i] for i in g] == sorted((lengths[i] for i in g), reverse=True)
    # Never more padding than one padded batch of the same rows.
    assert padding_fraction(lengths, plan) <= padding_fraction(lengths, [list(range(len(lengths)))]) + 1e-12


def test_longer_than_budget_rows_get_their_own_sub_batch():
    assert plan_sub_batches([100, 3, 120], token_budget=50, max_rows=8) == [[2], [0], [1]]


def test_equal_lengths_fill_to_max_rows_in_input_order():
    assert plan_sub_batches([7] * 5, token_budget=1000, max_rows=2) == [[0, 1], [2, 3], [4]]
    assert fixed_sub_batches(5, 2) == [[0, 1], [2, 3], [4]]
    assert plan_sub_batches([], 10, 2) == [] and fixed_sub_batches(0, 4) == []


def test_padding_fraction():
    assert padding_fraction([4, 4], [[0, 1]]) == 0.0
    assert padding_fraction([1, 3], [[0, 1]]) == pytest.approx(1 / 3)
    assert padding_fraction([], []) == 0.0


@pytest.mark.parametrize("budget, rows", [(0, 4), (10, 0)])
def test_bad_budget_is_refused(budget, rows):
    with pytest.raises(ValueError, match="must be >= 1"):
        plan_sub_batches([3], budget, rows)
