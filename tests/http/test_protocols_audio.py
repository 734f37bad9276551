"""The protocols on an audio backbone (tiny speech encoder) on the real server: ``/embed``
rows, the ``openai`` package with base64 WAV inputs, and ``tritonclient`` sending raw WAV
bytes as a binary ``BYTES`` tensor named ``audio``."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import torch

from adapters.backbones.audio_io import AudioLimits, decode_audio
from support.factories import head_adapter
from support.http_helpers import expected_head_scores, register_ok
from support.server import server_factory, tiny_backbones_env  # noqa: F401  (pytest fixture)

pytestmark = pytest.mark.server
sf = pytest.importorskip("soundfile")


def wav(seconds: float, freq: float) -> bytes:
    import io
    t = np.arange(int(seconds * 16000)) / 16000
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000, format="WAV")
    return buf.getvalue()


CLIPS = [wav(1.0, 300), wav(1.6, 900), wav(0.7, 2000)]


@pytest.fixture(scope="module")
def audio(server_factory, tiny_dir, tmp_path_factory):
    from adapters.backbones.base import load_backbone
    from adapters.backbones.tiny import tiny_backbone_spec
    spec = tiny_backbone_spec("audio", tmp_path_factory.mktemp("tiny-audio") / "a")
    bb = load_backbone(spec)
    srv = server_factory.start(store=tmp_path_factory.mktemp("store"), backbones=[
        *tiny_backbones_env(tiny_dir), {"name": spec.name, "source": spec.source}])
    folder = head_adapter(tmp_path_factory.mktemp("a") / "sounds", bb, "sounds", labels=("low", "mid", "high"))
    register_ok(srv, folder)
    decoded = [decode_audio(c, "clip", AudioLimits()) for c in CLIPS]
    return srv, bb, folder, decoded


def test_embed_audio_rows_equal_the_backbone_features(audio):
    srv, bb, _, decoded = audio
    r = srv.post("/embed", json={"audio": [base64.b64encode(c).decode() for c in CLIPS], "normalize": False})
    assert r.status_code == 200, r.text
    assert r.json()["backbone"] == "audio"
    torch.testing.assert_close(torch.tensor(r.json()["embeddings"]), bb.embed(decoded), atol=1e-4, rtol=1e-4)


def test_openai_package_embeds_audio(audio):
    openai = pytest.importorskip("openai")
    srv, bb, _, decoded = audio
    client = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="unused", max_retries=0)
    got = client.embeddings.create(model="audio", input=[base64.b64encode(c).decode() for c in CLIPS])
    want = torch.nn.functional.normalize(bb.embed(decoded), dim=-1)
    torch.testing.assert_close(torch.tensor([d.embedding for d in got.data]), want, atol=1e-4, rtol=1e-4)


def test_tritonclient_sends_raw_wav_bytes(audio):
    http = pytest.importorskip("tritonclient.http")
    srv, bb, folder, decoded = audio
    client = http.InferenceServerClient(url=srv.url.removeprefix("http://"))
    assert client.get_model_metadata("sounds")["inputs"][0]["name"] == "audio"
    inp = http.InferInput("audio", [len(CLIPS)], "BYTES")
    inp.set_data_from_numpy(np.array(CLIPS, dtype=object))  # binary tensor: the files' own bytes
    res = client.infer("sounds", [inp])
    torch.testing.assert_close(torch.tensor(res.as_numpy("scores")), expected_head_scores(folder, bb, decoded),
                               atol=1e-4, rtol=1e-4)
    assert srv.internal_errors() == []
