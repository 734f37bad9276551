"""The fine-tuning recipe's small parts (no backbone): the fresh head trained on standardised
features folds into a plain head that gives the same outputs on raw features, the kept epoch
follows the validation headline (ties: the lower loss), and the methods' defaults."""

from __future__ import annotations

import pytest
import torch

from adapters.format import HeadSpec
from training.config import TrainConfig
from training.finetune import BestHeadline, KeepLast, StandardisedHead


@pytest.mark.parametrize("hidden,normalize", [([], False), ([8], True)])
def test_standardised_head_folds_into_a_head_on_raw_features(hidden, normalize):
    torch.manual_seed(0)
    x = torch.randn(50, 6) * torch.tensor([0.1, 1.0, 30.0, 0.5, 2.0, 0.01]) + 3.0  # scales far apart
    from training.head_fit import _features_for_head, standardiser
    spec = HeadSpec(pooling="mean", input_dim=6, hidden=hidden, normalize=normalize)
    mean, std = standardiser(_features_for_head(spec, x))
    head = StandardisedHead(spec, 3, mean, std)
    with torch.no_grad():  # move the weights off their initialisation
        for p in head.parameters():
            p.add_(torch.randn_like(p))
    z = (_features_for_head(spec, x) - mean) / std
    assert 0.9 < float(z.std(0).median()) < 1.1  # the layer sees unit-scale inputs (tiny dims floored)
    folded = head.folded()
    assert folded.spec == spec and not any(p.requires_grad for p in folded.parameters())
    assert torch.allclose(folded(x), head(x), atol=1e-4, rtol=1e-5)


def test_head_dropout_acts_while_training_only_and_is_not_folded_in():
    torch.manual_seed(0)
    x = torch.randn(40, 6)
    spec = HeadSpec(pooling="mean", input_dim=6)
    head = StandardisedHead(spec, 2, x.mean(0), torch.full((6,), 0.5), dropout=0.5)
    head.train()
    assert not torch.allclose(head(x), head(x))  # a fresh mask per call
    head.eval()
    assert torch.allclose(head.folded()(x), head(x), atol=1e-5)


def test_best_headline_keeps_the_most_accurate_epoch_ties_to_the_lower_loss():
    sel = BestHeadline(patience=2)
    assert not sel.step(0, 0.69, {"e": 0}, 0.50)
    assert not sel.step(1, 0.40, {"e": 1}, 0.70)
    assert not sel.step(2, 0.55, {"e": 2}, 0.75)  # higher loss, higher accuracy: kept
    assert not sel.step(3, 0.50, {"e": 3}, 0.75)  # same accuracy, lower loss: kept
    assert not sel.step(4, 0.45, {"e": 4}, 0.70)  # lower loss, lower accuracy: not kept
    assert sel.step(5, 0.60, {"e": 5}, 0.75)      # tie with a higher loss: second bad epoch
    assert (sel.best_epoch, sel.state) == (3, {"e": 3})


def test_keep_last_keeps_the_newest_state_and_never_stops():
    sel = KeepLast()
    assert [sel.step(e, loss, {"e": e}, acc) for e, (loss, acc) in
            enumerate([(0.7, 0.5), (0.4, 0.8), (0.9, 0.6)])] == [False, False, False]
    assert (sel.best_epoch, sel.state) == (2, {"e": 2})


def test_fine_tuning_defaults():
    lora, top = TrainConfig(name="a", method="lora"), TrainConfig(name="b", method="top_layers")
    assert (lora.epochs, lora.lr, lora.head_lr, lora.select, lora.warm_start, lora.warmup_fraction) == (
        6, 2e-3, 2e-3, "headline", False, 0.1)
    assert lora.patience >= lora.epochs  # the schedule runs to its end; the best epoch is kept
    assert (lora.head_init, lora.head_dropout) == ("normal", 0.1)
    assert (top.lr, top.head_lr, top.select, top.warm_start) == (5e-4, 2e-3, "headline", False)
    assert (top.head_init, top.head_dropout) == ("standardised", 0.0)
    assert TrainConfig(name="d", method="lora", head_init="standardised", head_dropout=0).head_dropout == 0
    assert top.patience >= top.epochs
    assert TrainConfig(name="c", method="lora", select="loss", head_lr=3e-3).head_lr == 3e-3
    # The token LoRA tagger keeps the recipe its transfer report measured; explicit values still win.
    tagger = TrainConfig(name="t", method="lora", task_type="token_classification")
    assert (tagger.epochs, tagger.lr, tagger.patience, tagger.select) == (5, 5e-4, 2, "loss")
    assert TrainConfig(name="t", method="lora", task_type="token_classification", lr=1e-3).lr == 1e-3
    # BERT's head was measured on single-label classification only; the other task types keep theirs.
    for other in ("regression", "multi_label"):
        cfg = TrainConfig(name="r", method="lora", task_type=other)
        assert (cfg.head_init, cfg.head_dropout) == ("standardised", 0.0)


def test_the_schedule_shrinks_to_a_wall_clock_budget_and_ends_at_lr_zero():
    import time
    from training.finetune import _Schedule
    free = _Schedule(100, 0.1, deadline=None)
    for _ in range(5):
        free.stepped()
    assert free.total == 100 and free.factor(0) == 0.1 and free.factor(10) == 1.0 and free.factor(100) == 0.0
    tight = _Schedule(100, 0.1, deadline=time.monotonic() + 0.05)
    tight.begin()
    for _ in range(3):
        time.sleep(0.01)
        tight.stepped()
    assert 3 <= tight.total < 20  # ~0.01 s per step, ~0.02 s left: a handful of steps fit, not 100
    assert tight.factor(tight.total) == 0.0
    while not tight.finished:
        tight.stepped()
    assert tight.done == tight.total
