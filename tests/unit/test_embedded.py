"""The embedded default backbones load offline and give the original models' answers."""

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a model hub, whatever conftest says

import numpy as np
import pytest
import torch

from adapters.backbones import embedded
from adapters.backbones.embedded import (
    EMBEDDED_NAMES,
    convert_mobilenet_v2_state_dict,
    minilm_path,
    mobilenet_v2_path,
    resolve_embedded,
)
from adapters.errors import InvalidInput

pytestmark = pytest.mark.real
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("taskswap_home")


@pytest.fixture(scope="module")
def mobilenet_dir(home):
    return mobilenet_v2_path(home)


def test_names():
    assert EMBEDDED_NAMES == ("all-MiniLM-L6-v2", "mobilenet_v2", "speech_embedding", "SmolLM2-135M-Instruct",
                              "ssd-mobilenet-v2-coco")


def test_mobilenet_folder_layout(mobilenet_dir, home):
    assert mobilenet_dir == home / "backbones" / "mobilenet_v2"
    names = {p.name for p in mobilenet_dir.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "imagenet_head.safetensors"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pth")) for n in names)  # safetensors only
    # No temp sibling left behind.
    assert [p.name for p in mobilenet_dir.parent.iterdir()] == ["mobilenet_v2"]


def test_mobilenet_classifies_china_as_palace(mobilenet_dir):
    from safetensors.torch import load_file
    from sklearn.datasets import load_sample_image
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModel, MobileNetV2ForImageClassification

    processor = AutoImageProcessor.from_pretrained(mobilenet_dir)
    image = Image.fromarray(load_sample_image("china.jpg"))
    pixels = processor(image, return_tensors="pt")["pixel_values"]
    assert tuple(pixels.shape) == (1, 3, 224, 224)

    trunk = AutoModel.from_pretrained(mobilenet_dir).eval()
    head = load_file(str(mobilenet_dir / "imagenet_head.safetensors"))
    with torch.no_grad():
        pooled = trunk(pixel_values=pixels).pooler_output
    assert tuple(pooled.shape) == (1, 1280)
    logits = pooled @ head["weight"].T + head["bias"]
    assert logits.argmax(-1).item() == 698  # ImageNet "palace"

    # Same answer through the stock classification class with the head plugged in.
    clf = MobileNetV2ForImageClassification.from_pretrained(mobilenet_dir, num_labels=1000).eval()
    clf.classifier.load_state_dict(head)
    with torch.no_grad():
        logits2 = clf(pixel_values=pixels).logits
    assert logits2.argmax(-1).item() == 698
    assert torch.allclose(logits, logits2, atol=1e-4)


def test_second_call_is_a_noop(mobilenet_dir, home):
    before = {p.name: p.stat().st_mtime_ns for p in mobilenet_dir.iterdir()}
    assert mobilenet_v2_path(home) == mobilenet_dir
    assert {p.name: p.stat().st_mtime_ns for p in mobilenet_dir.iterdir()} == before


def test_home_from_environment(monkeypatch, mobilenet_dir, home):
    monkeypatch.setenv("TASKSWAP_HOME", str(home))
    assert mobilenet_v2_path() == mobilenet_dir
    assert resolve_embedded("embedded:mobilenet_v2") == mobilenet_dir


def test_incomplete_folder_is_rebuilt(tmp_path):
    broken = tmp_path / "backbones" / "mobilenet_v2"
    broken.mkdir(parents=True)
    (broken / "config.json").write_text("{}")
    path = mobilenet_v2_path(tmp_path)
    assert path == broken and (path / "model.safetensors").is_file()
    assert [p.name for p in path.parent.iterdir()] == ["mobilenet_v2"]


def test_concurrent_conversions_agree(tmp_path):
    code = (
        "import sys; from pathlib import Path; "
        "from adapters.backbones.embedded import mobilenet_v2_path; "
        "print(mobilenet_v2_path(Path(sys.argv[1])))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, env=env, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs[0] == outs[1] == str(tmp_path / "backbones" / "mobilenet_v2")
    assert [p.name for p in (tmp_path / "backbones").iterdir()] == ["mobilenet_v2"]


def test_loser_of_a_race_keeps_the_winners_folder(tmp_path, monkeypatch, mobilenet_dir):
    import shutil

    final = tmp_path / "backbones" / "mobilenet_v2"
    real_build = embedded._build_mobilenet_folder

    def build_while_another_process_wins(folder):
        real_build(folder)
        shutil.copytree(mobilenet_dir, final)  # the other process renames first
        (final / "winner").write_text("")

    monkeypatch.setattr(embedded, "_build_mobilenet_folder", build_while_another_process_wins)
    assert mobilenet_v2_path(tmp_path) == final
    assert (final / "winner").exists()
    assert [p.name for p in final.parent.iterdir()] == ["mobilenet_v2"]  # our temp copy is gone


def test_conversion_rejects_wrong_keys():
    sd = torch.load(embedded._mobilenet_weight_file(), weights_only=True)
    trunk, head = convert_mobilenet_v2_state_dict(sd)
    assert len(trunk) == 312 and set(head) == {"weight", "bias"}

    with pytest.raises(InvalidInput, match="unused"):
        convert_mobilenet_v2_state_dict({**sd, "features.19.0.weight": torch.zeros(1)})
    missing = dict(sd)
    del missing["features.5.conv.1.1.running_var"]
    with pytest.raises(InvalidInput, match="features.5.conv.1.1.running_var"):
        convert_mobilenet_v2_state_dict(missing)
    wrong = {**sd, "features.0.0.weight": torch.zeros(1, 1, 1, 1)}
    with pytest.raises(InvalidInput, match="shape"):
        convert_mobilenet_v2_state_dict(wrong)


def test_minilm_loads_offline():
    from transformers import AutoModel, AutoTokenizer

    path = minilm_path()
    assert resolve_embedded("embedded:all-MiniLM-L6-v2") == path
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    batch = tok(["a frozen backbone", "many adapters"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch).last_hidden_state
    assert out.shape[0] == 2 and out.shape[-1] == 384
    assert np.isfinite(out.numpy()).all()


def test_resolve_embedded_other_and_unknown():
    assert resolve_embedded("sentence-transformers/all-MiniLM-L6-v2") is None
    assert resolve_embedded("/some/local/folder") is None
    with pytest.raises(InvalidInput) as err:
        resolve_embedded("embedded:resnet50")
    msg = str(err.value)
    assert "resnet50" in msg and "embedded:all-MiniLM-L6-v2" in msg and "embedded:mobilenet_v2" in msg
