"""What a fit job would refuse, decided from the request before the job is queued.

``POST /adapters/{task}/fit`` fits a ``single_label`` head with the trainer of ``taskswap
train --method head`` (``training/fit_job.py``). Everything that trainer refuses and that
the request alone decides is refused here at submission, as a 422 naming the problem,
instead of a ``202`` whose job fails seconds later:

- fewer than 2 classes with examples (``label_names`` may name more: a class without an
  example teaches nothing), the rule of ``training/tasks/single_label.py``;
- fewer than 4 examples, or a validation split that would come out empty: the trainer's
  ``check_data`` and ``split_data`` (``training/trainer.py``); the split is the stratified
  one of ``training/data/dataset.py``, whose per-class sizes do not depend on the seed, so
  its size is computed here exactly;
- a task whose active version is not a ``single_label`` task (a regressor or a tagger):
  the fit would make a classifier of it.

The service does not import ``training`` (imports flow service -> adapters <- training);
``tests/http/test_http_rollout.py`` runs each case against the real server, and
``tests/unit/test_fit_data.py`` checks the split size against the trainer's own split.
"""

from __future__ import annotations

from collections import Counter

from adapters.errors import InvalidInput

MIN_EXAMPLES = 4
"""The trainer's minimum when it carves the validation split itself (``check_data``)."""

FIT_TASK_TYPE = "single_label"
"""The task type a fit over HTTP makes (``training/fit_job.py``)."""


class UnfittableData(InvalidInput):
    """Examples the fit job's trainer would refuse: mapped to 422 (``service/errors.py``)."""


def held_out_size(class_counts: list[int], val_fraction: float) -> int:
    """Examples the trainer's stratified split puts in validation: per class of ``c``
    examples, ``c - round((1 - val_fraction) * c)``, with at least one on each side when
    ``c >= 2`` (``training.data.dataset.stratified_split``).

    >>> held_out_size([5, 5], 0.2), held_out_size([1, 1, 1, 1], 0.2), held_out_size([2, 1], 0.9)
    (2, 0, 2)
    """
    held = 0
    for c in class_counts:
        kept = int(round((1.0 - val_fraction) * c))
        if c >= 2:
            kept = min(max(kept, 1), c - 1)
        held += c - kept
    return held


def fit_data_problems(labels: list[str], val_fraction: float) -> list[str]:
    """Every reason the fit job's trainer would refuse these labels (empty: none).

    >>> fit_data_problems(["a", "a", "a", "a"], 0.2)
    ["the examples' labels have 1 class ['a']; a classifier needs at least 2: send examples of another class"]
    """
    counts = Counter(labels)
    problems = []
    if len(counts) < 2:
        problems.append(f"the examples' labels have {len(counts)} class {sorted(counts)[:10]}; a classifier "
                        "needs at least 2: send examples of another class")
    if len(labels) < MIN_EXAMPLES:
        problems.append(f"only {len(labels)} examples: too few to carve off a validation split; send at "
                        f"least {MIN_EXAMPLES}")
    elif held_out_size(list(counts.values()), val_fraction) == 0:
        problems.append(f"the validation split (options.val_fraction={val_fraction:g}) would be empty: every "
                        "class has a single example; send at least 2 examples of some class")
    return problems


def check_fit_data(labels: list[str], val_fraction: float, active_task_type: str | None) -> None:
    """Raise :class:`UnfittableData` naming every problem, or return.
    ``active_task_type``: the task's active version's task type (None: a new task)."""
    problems = fit_data_problems(labels, val_fraction)
    if active_task_type is not None and active_task_type != FIT_TASK_TYPE:
        problems.append(f"the task's active version is a {active_task_type} task; a fit over HTTP makes "
                        f"{FIT_TASK_TYPE} heads: fit another task name, or train it with `taskswap train "
                        f"--task-type {active_task_type}`")
    UnfittableData.collect(problems, "fit")
