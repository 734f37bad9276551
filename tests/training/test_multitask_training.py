"""``taskswap train --multitask``: one LoRA trained jointly with a head per task, written as
a shared adaptation + task folders that register and serve, with one card and per-task
metrics; the served answers on each task's validation split reproduce the accuracy the run
reported (the trained trunk + heads are what the server runs)."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from adapters.runtime import Runtime
from training import cli
from training.data.dataset import stratified_split
from training.data.files import load_text_table
from support.training_helpers import sentiment_rows, write_text_csv

MOVIE = {"movie", "film", "plot", "story"}


def task_files(tmp_path):
    """Three tasks on the same texts: sentiment, whether a film word occurs, whether it starts
    with a filler word."""
    rows = sentiment_rows(48, seed=1)
    sentiment = write_text_csv(tmp_path / "sentiment.csv", rows)
    film = write_text_csv(tmp_path / "film.csv", [(t, "yes" if MOVIE & set(t.split()) else "no") for t, _ in rows])
    lead = write_text_csv(tmp_path / "lead.csv",
                          [(t, "filler" if t.split()[0] in {"the", "was", "is", "it", "this", "very"} else "other")
                           for t, _ in rows])
    return [sentiment, film, lead]


def run(capsys, *args):
    code = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def trained(tmp_path, text_backbone, capsys, one_torch_thread):
    files = task_files(tmp_path)
    code, out, err = run(capsys, "train", "--name", "base", "--multitask", ",".join(map(str, files)),
                         "--backbone", text_backbone.spec.source, "--out", tmp_path / "out", "--epochs", 2,
                         "--task-weights", "1,0.5,1", "--lora-r", 4, "--threads", 1, "--quiet")
    assert code == 0, err
    return tmp_path / "out", files, out


def test_the_run_writes_a_shared_adaptation_and_task_folders(trained):
    out, _, printed = trained
    assert "shared adaptation base" in printed
    shared = json.loads((out / "base" / "adapter.json").read_text())
    assert shared["kind"] == "shared_lora" and shared["task_type"] == "trunk_adaptation"
    assert shared["training"]["weights"] == {"sentiment": 1.0, "film": 0.5, "lead": 1.0}
    assert {"sentiment/val_accuracy", "film/val_accuracy", "lead/val_accuracy"} <= set(shared["metrics"])
    lora = load_file(str(out / "base" / "adapter_model.safetensors"))
    assert not any("classifier" in k for k in lora) and any(v.abs().sum() > 0 for k, v in lora.items() if "lora_B" in k)
    card = (out / "base" / "README.md").read_text()
    for task in ("sentiment", "film", "lead"):
        m = json.loads((out / task / "adapter.json").read_text())
        assert m["kind"] == "multitask" and m["shared"] == {"name": "base"}  # its active version at registration
        assert "val_accuracy" in m["metrics"]
        assert f"| `{task}` |" in card
        assert (out / task / "README.md").read_text() == card  # one card, travelling with each


def test_registered_tasks_serve_what_training_measured(trained, registry):
    out, files, _ = trained
    base = registry.register(out / "base")
    tasks = [registry.register(out / f.stem) for f in files]
    assert all(t.manifest.shared.version == base.version for t in tasks)
    rt = Runtime(registry)
    for f, t in zip(files, tasks):
        data = load_text_table(f)
        _, val = stratified_split(data, 0.8, seed=0)  # the CLI's split (--val-fraction 0.2, --seed 0)
        res = rt.run([rt.prepare([t.name], val.inputs, "text")])[0][0]
        served = sum(r.label == val.label_names[y] for r, y in zip(res.rows, val.labels)) / len(val)
        assert served == pytest.approx(t.manifest.metrics["val_accuracy"], abs=1e-6), t.name  # metrics are kept to 6 digits
    req = rt.prepare([t.name for t in tasks], ["a good film", "the worst plot"], "text")
    assert req.rows == 2  # three tasks, one adapted trunk row per input


@pytest.mark.parametrize("extra, message", [
    (["--task-weights", "1,2"], "2 loss weights for 3 tasks"),
    (["--task-weights", "0,0,0"], "at least one > 0"),
])
def test_bad_multitask_options_exit_2_naming_the_problem(tmp_path, text_backbone, capsys, extra, message):
    files = task_files(tmp_path)
    code, _, err = run(capsys, "train", "--name", "base", "--multitask", ",".join(map(str, files)),
                       "--backbone", text_backbone.spec.source, "--out", tmp_path / "out", "--epochs", 1, *extra)
    assert code == 2 and message in err
    assert not (tmp_path / "out").exists()


def test_one_file_is_not_a_multitask_run(tmp_path, text_backbone, capsys):
    files = task_files(tmp_path)
    code, _, err = run(capsys, "train", "--name", "base", "--multitask", files[0],
                       "--backbone", text_backbone.spec.source, "--out", tmp_path / "out")
    assert code == 2 and "at least 2 tasks" in err
