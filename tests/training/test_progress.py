"""Training progress (training/progress.py) and the "kept epoch N (by ...)" wording, through
every trainer: off a TTY (a log, ``make serve``, a job) one line per epoch and no carriage
return; on a TTY a step bar with the loss and the validation headline; the rule named in the
log, the card and metrics.json is the one that chose the epoch."""

from __future__ import annotations

import io
import json
import re

import pytest

from training.config import TrainConfig
from training.data import LabelledData
from training.data.tokens import TokenData
from training.progress import Progress, kept_line, work
from training.sources import DataSource
from training.trainer import train
from support.training_helpers import sentiment_rows, write_text_csv

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def no_library_bars():
    """transformers' own "Loading weights" bar (a LoRA's trainable copy) is not ours: the CLI
    and the demo turn it off when stderr is not a TTY (test_the_cli_... checks that)."""
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    yield
    hf_logging.enable_progress_bar()


class Terminal(io.StringIO):
    def isatty(self):
        return True


def epoch_lines(err: str, desc: str) -> list[int]:
    """The epoch numbers of ``desc``'s epoch lines, in order."""
    return [int(m) for m in re.findall(rf"^{re.escape(desc)} epoch (\d+)/\d+: ", err, re.M)]


def assert_plain_log(err: str, desc: str, epochs_run: int) -> None:
    assert "\r" not in err, err[:2000]
    assert epoch_lines(err, desc) == list(range(1, epochs_run + 1)), err[:3000]


# ---- the module itself ----------------------------------------------------------------------
def test_off_a_tty_one_line_per_epoch_and_no_carriage_return():
    out = io.StringIO()
    p = Progress("lora", 3, "R²", stream=out)
    for epoch in (1, 2, 3):
        with p.epoch(epoch, steps=50) as bar:
            for _ in range(50):
                bar.step(0.5)
        p.epoch_done(epoch, 0.5, 0.4, 0.25 * epoch)
    p.kept(3, 3, "highest validation R²")
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines == ["lora epoch 1/3: train loss 0.5000, val loss 0.4000, val R² 0.2500",
                     "lora epoch 2/3: train loss 0.5000, val loss 0.4000, val R² 0.5000",
                     "lora epoch 3/3: train loss 0.5000, val loss 0.4000, val R² 0.7500",
                     "lora: kept epoch 3 of 3 (by highest validation R²)"]


def test_on_a_tty_a_step_bar_with_the_loss_and_the_last_validation_headline(monkeypatch):
    monkeypatch.setattr(Progress, "mininterval", 0)  # draw every step (tqdm waits 0.1 s between redraws)
    term = Terminal()
    p = Progress("tagger", 2, "token accuracy", stream=term)
    for epoch in (1, 2):
        with p.epoch(epoch, steps=4) as bar:
            for _ in range(4):
                bar.step(1.25)
        p.epoch_done(epoch, 1.25, 1.0, 0.5)
    text = term.getvalue()
    assert "\r" in text and "tagger epoch 2/2" in text and "4/4" in text
    assert "loss=1.2500" in text and "val=token accuracy 0.5000" in text  # epoch 2's bar shows epoch 1's
    assert "tagger epoch 1/2: train loss 1.2500, val loss 1.0000, val token accuracy 0.5000\n" in text


def test_fast_epochs_leave_no_line_on_a_tty_and_quiet_is_silent():
    term, quiet = Terminal(), io.StringIO()
    for stream, enabled in ((term, True), (quiet, False)):
        p = Progress("head", 200, "accuracy", enabled=enabled, epoch_lines=False, stream=stream)
        with p.epoch(1, 2) as bar:
            bar.step(0.1)
        p.epoch_done(1, 0.1, 0.1, 0.9)
    assert "head epoch 1/200" in term.getvalue()  # the bar
    assert "head epoch 1/200: train loss" not in term.getvalue() and quiet.getvalue() == ""


def test_work_off_a_tty_is_one_line_at_the_end():
    out = io.StringIO()
    with work(300, "features", stream=out) as bar:
        for _ in range(3):
            bar.update(100)
    assert re.fullmatch(r"features: 300 ex in \d+\.\d s\n", out.getvalue())


# ---- every trainer, off a TTY (pytest's capture is not a terminal) --------------------------
@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    path = write_text_csv(tmp_path_factory.mktemp("progress") / "r.csv", sentiment_rows(40))
    return DataSource(path=path).load()


def ratings(reviews: LabelledData) -> LabelledData:
    values = [[8.0 if reviews.label_names[y] == "pos" else 2.0] for y in reviews.labels]
    return LabelledData("text", reviews.inputs, [], ["rating"], "ratings", values=values)


@pytest.mark.parametrize("method, task_type, select, rule, desc", [
    ("head", "single_label", None, "lowest validation loss", "head"),
    ("lora", "single_label", "headline", "highest validation accuracy", "lora"),
    ("lora", "single_label", "loss", "lowest validation loss", "lora"),
    ("top_layers", "regression", "headline", "highest validation R²", "top_layers k=1"),
    ("scratch", "single_label", "last", "last epoch", "scratch"),
])
def test_each_pooled_trainer_logs_its_epochs_and_the_rule_that_kept_one(
        method, task_type, select, rule, desc, reviews, text_backbone, tmp_path, capsys):
    data = ratings(reviews) if task_type == "regression" else reviews
    extra = {"layers": 1} if method == "top_layers" else {}
    if select is not None:
        extra["select"] = select
    cfg = TrainConfig(name="p", method=method, task_type=task_type, epochs=3, batch_size=16,
                      lr=1e-2, progress=True, **extra)
    r = train(data, text_backbone, cfg, tmp_path / "out", cache_dir=None)
    err = capsys.readouterr().err
    ran = len(r.history.train_loss)
    assert_plain_log(err, desc, ran)
    assert r.history.kept_by == rule
    kept = kept_line(r.history.best_epoch, ran, rule)
    assert f"{desc}: {kept}\n" in err
    headline = "R²" if task_type == "regression" else "accuracy"
    assert f"val {headline} " in err
    if task_type == "regression":
        assert "val accuracy" not in err
    card = (tmp_path / "out" / "README.md").read_text()
    assert f"K{kept[1:]}." in card
    if rule != "lowest validation loss":  # the rule that did not choose is named nowhere
        assert "lowest validation loss" not in card
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["history"]["kept_by"] == rule and saved["training"]["kept_by"] == rule


def toy_tags() -> TokenData:
    s = [["good", "film", "is", "fun"], ["the", "great", "movie"], ["a", "bad", "plot"], ["fun", "good", "film"]]
    t = [[1, 2, 0, 0], [0, 1, 2], [0, 0, 0], [0, 1, 2]]
    return TokenData(s * 4, t * 4, ["O", "B-PER", "I-PER"], "toy")


@pytest.mark.parametrize("method, desc", [("lora", "token lora"), ("head", "head")])
def test_the_taggers_log_their_epochs_with_token_accuracy(method, desc, text_backbone, tmp_path, capsys):
    from training.tokens import train_tokens
    cfg = TrainConfig(name="tagger", method=method, task_type="token_classification", epochs=3, progress=True)
    r = train_tokens(toy_tags(), text_backbone, cfg, tmp_path / "out")
    err = capsys.readouterr().err
    assert_plain_log(err, desc, len(r.history.train_loss))
    assert "val token accuracy " in err and "val accuracy" not in err
    kept = kept_line(r.history.best_epoch, len(r.history.train_loss), "lowest validation loss")
    assert f"{desc}: {kept}\n" in err
    assert f"K{kept[1:]}." in (tmp_path / "out" / "README.md").read_text()


def test_generation_logs_chrf_and_keeps_by_it(lm_backbone, tmp_path, capsys):
    from adapters.format.manifest import GenerationSpec
    from training.generation.data import GenerationData, GenerationExample
    from training.generation_run import train_generation
    words = ["cat", "dog", "sun", "tree", "moon", "fish", "bird", "star"]
    data = GenerationData([GenerationExample(w, w.upper()) for w in words * 2], "upper-casing")
    val = GenerationData([GenerationExample(w, w.upper()) for w in words[:3]], "upper-casing")
    cfg = TrainConfig(name="up", method="lora", task_type="generation", epochs=2, lr=1e-2, batch_size=4)
    r = train_generation(data, lm_backbone, cfg, GenerationSpec(prompt_template="{input}=", max_new_tokens=4),
                         tmp_path / "out", val=val)
    err = capsys.readouterr().err
    assert_plain_log(err, "generation lora", 2)
    assert "val chrF " in err
    kept = kept_line(r.history["best_epoch"], 2, "highest validation chrF")
    assert f"generation lora: {kept}\n" in err
    assert f"K{kept[1:]}" in (tmp_path / "out" / "README.md").read_text()


def test_a_dense_head_logs_one_line_per_epoch(vision_backbone, tmp_path, capsys):
    from training.dense.fit import DenseFitConfig
    from training.dense_run import train_dense
    import numpy as np
    from PIL import Image
    from training.dense.data import DenseData
    images = [Image.fromarray(np.full((64, 64, 3), 20 * i, dtype=np.uint8)) for i in range(4)]
    boxes = [np.array([[8 + i, 8, 30 + i, 30]], dtype=np.float32) for i in range(4)]
    data = DenseData(images, ["a", "b"], "boxes", boxes, [np.array([i % 2]) for i in range(4)])
    cfg = DenseFitConfig("detection", [8, 16], input_size=64, width=16, epochs=3, trunk_batch=8)
    train_dense("boxes", vision_backbone, data, {}, cfg, tmp_path / "out")
    err = capsys.readouterr().err
    assert_plain_log(err, "detection head", 3)
    assert "detection head: kept epoch 3 of 3 (by last epoch)\n" in err


def test_the_cli_prints_the_rule_that_kept_the_epoch(tmp_path, text_backbone, capsys):
    from transformers.utils import logging as hf_logging
    from training import cli
    hf_logging.enable_progress_bar()  # as a fresh process has it: the CLI itself turns it off off a TTY
    csv = write_text_csv(tmp_path / "r.csv", sentiment_rows(40))
    assert cli.main(["train", "--name", "cli", "--data", str(csv), "--backbone", str(text_backbone.source_path),
                     "--method", "lora", "--epochs", "2", "--select", "headline", "--out", str(tmp_path / "o"),
                     "--no-cache"]) == 0
    out, err = capsys.readouterr()
    assert re.search(r"wrote adapter .* \(kept epoch \d of 2 \(by highest validation accuracy\)\)", out), out
    assert "\r" not in err


def test_the_plot_legend_names_the_rule_that_kept_the_epoch(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    import training.plots as plots
    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)  # keep the figure to read its legend
    plots.plot_loss_curves({"train_loss": [1.0, 0.5, 0.4], "val_loss": [1.0, 0.6, 0.7],
                            "val_accuracy": [0.2, 0.5, 0.4], "best_epoch": 2, "kept_by": "highest validation R²",
                            "headline_name": "R²", "loss_name": "MSE (standardised)"}, tmp_path / "c.png", "t")
    labels = [t.get_text() for t in figures[0].axes[0].get_legend().get_texts()]
    plt.close(figures[0])
    assert "kept epoch 2 of 3 (by highest validation R²)" in labels and "validation R²" in labels
    assert not any("loss)" in x for x in labels)  # no "best val loss" when R² chose
