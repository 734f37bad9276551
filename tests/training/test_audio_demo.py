"""The spoken-digits demo on the real speech encoder: trained on espeak-ng voices only, scored
on a real speaker's recordings, and served over HTTP ("seven" in, ``7`` out).

Measured (``taskswap train --demo spoken-digits --backbone audio --method head``, full 1,280
synthetic clips; see docs/speech.md): 10/10 on the real recordings. This test trains on a
stratified 400-clip subset to stay quick; the floor (6/10, chance is 1/10) is well below
what it measures, so CI does not flake on a different BLAS or thread count.
"""

from __future__ import annotations

import base64
import shutil

import pytest

from support.server import server_factory  # noqa: F401  (pytest fixture)

pytestmark = pytest.mark.real

FLOOR = 0.6


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    pytest.importorskip("onnx")
    from adapters.backbones.base import load_backbone
    from adapters.backbones.defaults import audio_available, default_spec
    from training.config import TrainConfig
    from training.data import DemoDataUnavailable, load_demo
    from training.trainer import train
    if not audio_available():
        pytest.skip("the audio backbone's packages are not installed (scripts/setup.sh)")
    try:
        data = load_demo("spoken-digits", "train", limit=400, seed=0)
        test = load_demo("spoken-digits", "test")
    except DemoDataUnavailable as exc:
        pytest.skip(str(exc))
    bb = load_backbone(default_spec("audio"))
    out = tmp_path_factory.mktemp("spoken") / "adapter"
    result = train(data, bb, TrainConfig(name="spoken-digits", progress=False), out, test=test,
                   cache_dir=tmp_path_factory.mktemp("features"))
    return bb, result, test


def test_synthetic_voices_transfer_to_a_real_speaker(trained):
    _, result, test = trained
    assert len(test) == 10
    assert result.metrics["validation"].accuracy >= 0.9  # held-out synthetic clips
    assert result.metrics["test"].accuracy >= FLOOR, result.metrics["test"]


@pytest.mark.server
def test_a_real_recording_of_seven_is_served_as_7(trained, server_factory, tmp_path):
    from adapters.registry import Registry
    from adapters.store import open_store
    bb, result, test = trained
    store = tmp_path / "store"
    Registry(open_store(str(store)), {bb.name: bb}).register(result.path)
    srv = server_factory.start(store=store, backbones=[{"name": "audio", "source": "embedded:speech_embedding"}],
                               ready_timeout_s=300)
    seven = test.inputs[7].read_bytes()  # Allison Smith saying "seven" (8 kHz WAV)
    r = srv.post("/predict", json={"task": "spoken-digits", "audio": [base64.b64encode(seven).decode()]})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["predictions"][0]["label"] == "7"
    up = srv.post("/predict/upload", files=[("files", ("seven.wav", seven, "audio/wav"))],
                  data={"task": "spoken-digits"})
    assert up.status_code == 200, up.text
    assert up.json()["results"][0]["predictions"][0]["label"] == "7"
    assert up.json()["results"][0]["predictions"][0]["scores"] == r.json()["results"][0]["predictions"][0]["scores"]
    # Bad audio is the client's 400 naming the problem; the server keeps serving.
    bad = srv.post("/predict", json={"task": "spoken-digits", "audio": [base64.b64encode(b"RIFF....WAVEjunk").decode()]})
    assert bad.status_code == 400 and "audio[0]" in bad.json()["message"]
    long_clip = srv.post("/predict/upload", files=[("files", ("long.wav", _long_wav(), "audio/wav"))],
                         data={"task": "spoken-digits"})
    assert long_clip.status_code == 400 and "TASKSWAP_MAX_AUDIO_SECONDS" in long_clip.json()["message"]
    text = srv.post("/predict", json={"task": "spoken-digits", "texts": ["seven"]})
    assert text.status_code == 400 and "takes audio" in text.json()["message"]
    info = {b["name"]: b for b in srv.get("/backbones").json()["backbones"]}["audio"]
    assert info["modality"] == "audio" and info["hidden_size"] == 96
    assert not srv.internal_errors()
    shutil.rmtree(store, ignore_errors=True)


def _long_wav() -> bytes:
    import io

    import numpy as np
    import soundfile as sf
    buf = io.BytesIO()
    sf.write(buf, np.zeros(8000 * 31, np.float32), 8000, format="WAV")  # 31 s > the 30 s default
    return buf.getvalue()
