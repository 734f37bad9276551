"""The warm start of the dense methods that train trunk weights: LoRA and top layers start from the
head fitted on the frozen maps, so before their first joint step they answer exactly what that head
answers and score what it scores (epoch 0 = the head); the joint epochs start from there."""

from __future__ import annotations

import pytest
import torch

from support.dense_factories import squares, with_masks
from training.dense.fit import DenseFitConfig
from training.dense_run import score
from training.methods import METHODS
from training.tasks import training_task

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SETS = {"detection": (lambda n, s: squares(n, s), "map"),
        "segmentation": (lambda n, s: with_masks(squares(n, s)), "miou")}


def _cfg(task_type, method, **kw):
    settings = dict(input_size=64, width=8, epochs=3, batch_size=8, method=method, progress=False)
    return DenseFitConfig(task_type, [8, 16], **{**settings, **kw})


def _fit(bb, task_type, method, **kw):
    data, _ = SETS[task_type]
    cfg = _cfg(task_type, method, **kw)
    fit = METHODS[method].fit_dense(bb, data(16, 0), cfg, training_task(task_type))
    test = data(6, 1)
    with torch.no_grad():
        out = fit.head(fit.maps_of(test.images))
    return fit, out, score(fit, test, cfg)


@pytest.fixture(scope="module")
def heads(vision_backbone):
    return {t: _fit(vision_backbone, t, "head") for t in SETS}


@pytest.mark.parametrize("method", ["lora", "top_layers"])
@pytest.mark.parametrize("task_type", list(SETS))
def test_epoch_0_answers_and_scores_what_the_head_does(heads, vision_backbone, method, task_type):
    # no joint epoch: the run is its warm start (3 head epochs, as the head run fitted)
    fit, out, scores = _fit(vision_backbone, task_type, method, epochs=0, warm_epochs=3)
    _, head_out, head_scores = heads[task_type]
    assert fit.notes["warm_start"]["head_epochs"] == 3 and fit.history == []
    assert torch.allclose(out, head_out, atol=1e-6)
    key = SETS[task_type][1]
    assert scores[key] == pytest.approx(head_scores[key], abs=1e-9)


def test_without_warm_start_the_head_starts_fresh(vision_backbone, heads):
    fit, out, _ = _fit(vision_backbone, "detection", "lora", epochs=0, warm_start=False)
    assert fit.notes["warm_start"] is None
    assert not torch.allclose(out, heads["detection"][1], atol=1e-3)
