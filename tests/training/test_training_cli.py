"""``taskswap train / evaluate / register`` and ``python -m training.demo``: exit codes,
messages for bad data (before any training), and end-to-end runs on tiny backbones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.backbones.tiny import tiny_backbone_spec
from training import cli
from training import demo as demo_mod
from support.training_helpers import sentiment_rows, write_image_folder, write_text_csv

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def text_folder(tmp_path_factory) -> Path:
    return Path(tiny_backbone_spec("text", tmp_path_factory.mktemp("cli-text") / "text").source)


@pytest.fixture(scope="module")
def vision_folder(tmp_path_factory) -> Path:
    return Path(tiny_backbone_spec("vision", tmp_path_factory.mktemp("cli-vision") / "vision").source)


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


# ---- bad data: exit 2, a message naming the problem, nothing trained ---------------------
def _bad_cases(tmp: Path) -> list[tuple[str, list, str]]:
    (tmp / "cols.csv").write_text("review,label\ngood,pos\nbad,neg\n")
    (tmp / "one.csv").write_text("text,label\ngood,pos\ngreat,pos\nfine,pos\n")
    (tmp / "empty.csv").write_text("")
    (tmp / "labels.csv").write_text("text,label\ngood,pos\nbad,neg\nmeh,neutral\n")
    imgs = write_image_folder(tmp / "imgs", per_class=3)
    (imgs / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    ok = write_text_csv(tmp / "ok.csv", sentiment_rows(20))
    (tmp / "val.csv").write_text("text,label\ngood,pos\nbad,negative\n")
    return [
        ("missing column", ["--data", tmp / "cols.csv"], "missing column(s) 'text'; the columns are 'review', 'label' (name the ones to read with --text-column"),
        ("single class", ["--data", tmp / "one.csv"], "found 1 class(es) ['pos']; a classifier needs examples of at least 2 classes"),
        ("empty file", ["--data", tmp / "empty.csv"], "is empty"),
        ("labels not in list", ["--data", tmp / "labels.csv", "--labels", "neg,pos"],
         "labels ['neutral'] are not in the given labels ['neg', 'pos']"),
        ("unreadable image", ["--data", imgs, "--backbone", "vision"], "unreadable images:"),
        ("validation labels", ["--data", ok, "--val-data", tmp / "val.csv"], "labels ['negative'] are not in the given labels"),
        ("missing file", ["--data", tmp / "nope.csv"], "text table not found"),
        ("unknown demo", ["--demo", "imagenet"], "unknown demo data set 'imagenet'"),
        ("bad option", ["--data", ok, "--epochs", "0"], "--epochs: Input should be greater than or equal to 1"),
        ("bad task name", ["--data", ok, "--name", "Bad Name"], "--name: String should match pattern"),
        ("unknown backbone", ["--data", ok, "--backbone", "no-such-model"], "cannot load 'no-such-model' offline"),
    ]


def test_bad_data_exits_2_with_a_message_before_any_training(tmp_path, capsys, monkeypatch, text_folder):
    import training.trainer
    monkeypatch.setattr(training.trainer, "fit", lambda *a, **k: pytest.fail("training started"))
    cases = _bad_cases(tmp_path) + [
        ("wrong modality", ["--data", write_image_folder(tmp_path / "good-imgs", per_class=2),
                            "--backbone", text_folder],
         "the data is image but the backbone takes text")]
    for what, args, message in cases:
        argv = ["train", "--name", "x", "--backbone", "text", "--out", tmp_path / "out", *args]
        # Later flags win in argparse, so the case's own --name/--backbone override the defaults.
        code, out, err = run_cli(capsys, *argv)
        assert code == 2, (what, out, err)
        assert message in err, (what, err)
        assert "\nerror: " in "\n" + err, (what, err)  # after any progress-bar noise
        assert not (tmp_path / "out").exists(), what


def test_script_entry_point_exit_code(tmp_path):
    (tmp_path / "one.csv").write_text("text,label\ngood,pos\ngreat,pos\n")
    proc = subprocess.run([sys.executable, "-m", "training.cli", "train", "--name", "x", "--backbone",
                           "text", "--data", tmp_path / "one.csv"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert "a classifier needs examples of at least 2 classes" in proc.stderr


# ---- a full run: train, then evaluate with the server's code path ---------------------------
def test_train_then_evaluate_on_a_held_out_file(tmp_path, capsys, text_folder):
    train_csv = write_text_csv(tmp_path / "train.csv", sentiment_rows(60, seed=0), "review", "stars")
    test_csv = write_text_csv(tmp_path / "test.csv", sentiment_rows(20, seed=1), "review", "stars")
    out = tmp_path / "adapter"
    code, stdout, err = run_cli(capsys, "train", "--name", "reviews", "--data", train_csv,
                                "--test-data", test_csv, "--text-column", "review", "--label-column",
                                "stars", "--backbone", text_folder, "--backbone-name", "text",
                                "--epochs", "150", "--lr", "0.01", "--out", out, "--quiet",
                                "--cache-dir", tmp_path / "cache")
    assert code == 0, err
    assert f"wrote adapter {out}" in stdout
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["test"]["n"] == 20 and metrics["test"]["accuracy"] >= 0.9
    manifest = json.loads((out / "adapter.json").read_text())
    assert manifest["backbone"]["source"] == str(text_folder)

    code, stdout, err = run_cli(capsys, "evaluate", out, "--data", test_csv, "--text-column", "review",
                                "--label-column", "stars", "--json", tmp_path / "eval.json", "--quiet")
    assert code == 0, err
    ev = json.loads((tmp_path / "eval.json").read_text())
    # The runtime's scores on the test file give exactly the numbers the trainer reported.
    assert ev["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-9)
    assert ev["loss"] == pytest.approx(metrics["test"]["loss"], abs=1e-5)
    assert ev["confusion"] == metrics["test"]["confusion"]
    assert f"accuracy {ev['accuracy']:.4f}" in stdout

    # Evaluating on data with a label the adapter does not know is a clear error.
    (tmp_path / "odd.csv").write_text("review,stars\ngood,pos\nbad,meh\n")
    code, _, err = run_cli(capsys, "evaluate", out, "--data", tmp_path / "odd.csv", "--text-column",
                           "review", "--label-column", "stars", "--quiet")
    assert code == 2 and "labels ['meh'] are not in the given labels ['neg', 'pos']" in err


def test_register_errors(tmp_path, capsys, monkeypatch):
    from support.server import free_port
    (tmp_path / "notadapter").mkdir()
    (tmp_path / "notadapter" / "notes.txt").write_text("hi")
    code, _, err = run_cli(capsys, "register", tmp_path / "notadapter", "--url", "http://127.0.0.1:9")
    assert code == 2 and "no adapter.json and no adapter_config.json" in err

    from training.export import write_metrics  # any tiny valid adapter will do: build one
    from support.factories import head_adapter
    from adapters.backbones.base import load_backbone
    from adapters.backbones.tiny import tiny_backbone_spec
    bb = load_backbone(tiny_backbone_spec("text", tmp_path / "bb"))
    folder = head_adapter(tmp_path / "a", bb, "toy")
    write_metrics(folder, {})
    port = free_port()  # nothing listens there
    code, _, err = run_cli(capsys, "register", folder, "--url", f"http://127.0.0.1:{port}")
    assert code == 1 and f"cannot reach http://127.0.0.1:{port}/adapters" in err
    monkeypatch.setenv("TASKSWAP_URL", f"http://127.0.0.1:{port}")  # the default server
    code, _, err = run_cli(capsys, "register", folder)
    assert code == 1 and f"cannot reach http://127.0.0.1:{port}/adapters" in err


def test_version_and_threads_options(tmp_path, capsys, text_folder):
    from importlib.metadata import version
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"taskswap {version('taskswap')}"
    data = write_text_csv(tmp_path / "d.csv", sentiment_rows(20))
    code, _, err = run_cli(capsys, "train", "--name", "t", "--data", data, "--backbone", text_folder,
                           "--threads", "0", "--quiet")
    assert code == 2 and "--threads must be at least 1, got 0" in err


# ---- python -m training.demo ---------------------------------------------------------------
def test_demo_builds_on_the_threads_the_load_leaves_free(tmp_path, monkeypatch, capsys):
    import torch
    seen = []
    monkeypatch.setattr(demo_mod, "build_demo", lambda *a, **k: seen.append(torch.get_num_threads()) or {})
    before = torch.get_num_threads()
    assert demo_mod.main(["--store", str(tmp_path / "s"), "--threads", "1"]) == 0
    auto = demo_mod.auto_threads
    assert auto(cores=2, load=6.0) == 1 and auto(cores=2, load=0.0) == 2
    monkeypatch.setattr(demo_mod, "auto_threads", lambda: 3)
    assert demo_mod.main(["--store", str(tmp_path / "s")]) == 0  # --threads auto by default
    assert seen == [1, 3] and torch.get_num_threads() == before  # restored afterwards
    for bad in ("0", "two", "-1"):
        assert demo_mod.main(["--store", str(tmp_path / "s"), "--threads", bad]) == 2
        assert "--threads" in capsys.readouterr().err


def test_demo_registers_once_and_then_skips(tmp_path, monkeypatch, capsys, vision_folder):
    from adapters.backbones.base import BackboneSpec
    from adapters.store import open_store
    spec = BackboneSpec(name="vision", source=str(vision_folder), image_size=32)
    monkeypatch.setattr(demo_mod, "default_spec", lambda name: spec)
    monkeypatch.setattr(demo_mod, "DEMO_TASKS", (demo_mod.DemoTask("digits", "digits", "vision", 100, 50),))
    monkeypatch.setenv("TASKSWAP_HOME", str(tmp_path / "home"))
    store = tmp_path / "store"
    assert demo_mod.main(["--store", str(store), "--no-progress"]) == 0
    first = capsys.readouterr().out
    assert first.startswith("digits: registered version ") and "test accuracy" in first
    alias = open_store(str(store)).get_alias("digits")
    manifest = json.loads((open_store(str(store)).version_path("digits", alias.active) / "adapter.json").read_text())
    assert manifest["metrics"]["test_examples"] == 50 and manifest["preprocessing"] == {"image_size": 32}
    assert {"README.md", "loss_curves.png", "confusion_matrix.png"} <= {
        p.name for p in open_store(str(store)).version_path("digits", alias.active).iterdir()}
    assert any((tmp_path / "home" / "features").glob("*.safetensors"))

    assert demo_mod.main(["--store", str(store), "--no-progress"]) == 0
    assert capsys.readouterr().out == "digits: already registered\n"
    assert open_store(str(store)).get_alias("digits").active == alias.active
    assert demo_mod.main(["--store", str(store), "--tasks", "nope"]) == 2


def test_evaluate_scores_a_plain_peft_directory_with_the_data_labels(tmp_path, text_backbone, one_torch_thread):
    """A PEFT ``save_pretrained`` folder has no adapter.json: evaluate names it and takes the
    data's labels as its outputs, and scores what PEFT's own model scores."""
    import torch
    from support.factories import peft_lora_dir, peft_probs, peft_seq_cls_model
    from training.sources import DataSource
    from training.evaluate import evaluate_adapter
    rows = sentiment_rows(12)
    data = DataSource(path=write_text_csv(tmp_path / "t.csv", rows), labels=["neg", "pos"]).load()
    src = str(text_backbone.source_path)
    folder = peft_lora_dir(tmp_path / "peft", src, num_labels=2, seed=3)
    ev = evaluate_adapter(folder, data, text_backbone, progress=False)
    want = peft_probs(peft_seq_cls_model(src, 2, seed=3), text_backbone, [t for t, _ in rows])
    assert ev.probs.shape == (12, 2)
    assert torch.allclose(ev.probs, want, atol=1e-4)
