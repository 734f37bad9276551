"""The audio backbone: decoding limits, the rebuilt speech encoder, batching and LoRA on it.

Most tests run on a tiny random speech_embedding (same code, 8 channels); the real encoder
rebuilt from openWakeWord's ONNX graphs is checked against onnxruntime and PEFT (``real``).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import torch

from adapters.backbones.audio_io import (MAX_RESAMPLE_FACTOR, Audio, AudioLimits, decode_audio, resample,
                                         resample_factors)
from adapters.errors import InvalidInput
from adapters.format import BackboneRef, HeadSpec, Manifest
from adapters.heads import Head
from adapters.runtime import Runtime
from support.factories import head_adapter

RNG = np.random.default_rng(0)


def wav_bytes(samples: np.ndarray, rate: int, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def tone(seconds: float, rate: int = 16000, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return x if channels == 1 else np.stack([x] * channels, axis=1)


def clips(n: int = 4) -> list[Audio]:
    """Noisy chirps of different lengths (some shorter than one window)."""
    out = []
    for i in range(n):
        length = [6000, 16000, 27000, 40000, 13000, 20000][i % 6]
        t = np.arange(length) / 16000
        x = 0.2 * np.sin(2 * np.pi * (150 + 300 * i + 500 * t) * t) + 0.02 * RNG.standard_normal(length)
        out.append(Audio(x.astype(np.float32), 16000))
    return out


# ---- decoding and limits ----------------------------------------------------------------
def test_decodes_wav_flac_ogg_to_mono_16k():
    for fmt, subtype in (("WAV", "PCM_16"), ("FLAC", None), ("OGG", "VORBIS")):
        clip = decode_audio(wav_bytes(tone(0.5, 8000, channels=2), 8000, fmt, subtype), "a", AudioLimits())
        assert clip.sample_rate == 16000 and clip.samples.ndim == 1
        assert abs(len(clip.samples) - 8000) <= 2, fmt
        assert 0.15 < np.abs(clip.samples).max() <= 1.0, fmt


def test_resampling_keeps_the_pitch():
    clip = decode_audio(wav_bytes(tone(1.0, 44100, freq=1000), 44100), "a", AudioLimits())
    spectrum = np.abs(np.fft.rfft(clip.samples))
    assert abs(np.argmax(spectrum) * 16000 / len(clip.samples) - 1000) < 5


@pytest.mark.parametrize("raw, limits, match", [
    (b"", AudioLimits(), "is empty"),
    (b"not audio at all", AudioLimits(), "unrecognised header"),
    (b"RIFF\x00\x00\x00\x00WAVEfmt garbage", AudioLimits(), "not a decodable audio file"),
    (wav_bytes(tone(2.0), 16000), AudioLimits(max_seconds=1.0), "2.0 s long; at most 1 s"),
    (wav_bytes(tone(0.5), 16000), AudioLimits(max_bytes=2000), "bytes; at most 2000"),
    (wav_bytes(tone(0.2, channels=3), 16000), AudioLimits(max_channels=2), "3 channels; at most 2"),
    (wav_bytes(tone(0.2, 2000), 2000), AudioLimits(), "sample rate 2000 Hz is outside"),
    (wav_bytes(tone(0.2, 96000), 96000), AudioLimits(max_sample_rate=48000), "96000 Hz is outside"),
    (wav_bytes(tone(1.0, channels=4), 16000), AudioLimits(max_decoded_bytes=100_000), "decodes to 256000 bytes"),
    (wav_bytes(np.full(800, np.nan, np.float32), 16000, subtype="FLOAT"), AudioLimits(), "NaN"),
    (wav_bytes(np.zeros((0,), np.float32), 16000), AudioLimits(), "no audio frames"),
])
def test_bad_audio_is_refused_with_the_reason(raw, limits, match):
    with pytest.raises(InvalidInput, match=match):
        decode_audio(raw, "audio[0]", limits)


def test_truncated_file_is_a_clear_error_or_a_shorter_clip():
    raw = wav_bytes(tone(1.0), 16000)
    try:  # libsndfile reads what is there; either way: no crash, no other exception type
        clip = decode_audio(raw[:5000], "a", AudioLimits())
        assert len(clip.samples) < 16000
    except InvalidInput as exc:
        assert "a is" in str(exc)


def test_a_lying_header_cannot_decode_past_the_duration_limit():
    raw = bytearray(wav_bytes(tone(3.0), 16000))
    # data chunk size claims 0.5 s: the header check passes, the read must still stop at the limit
    idx = raw.index(b"data")
    raw[idx + 4:idx + 8] = (16000 * 2 // 2).to_bytes(4, "little")
    clip_or_err = None
    try:
        clip_or_err = decode_audio(bytes(raw), "a", AudioLimits(max_seconds=1.0))
    except InvalidInput as exc:
        clip_or_err = exc
    if isinstance(clip_or_err, Audio):
        assert len(clip_or_err.samples) <= 16000


# ---- the encoder --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def audio_backbone(tmp_path_factory):
    from adapters.backbones.base import load_backbone
    from adapters.backbones.tiny import tiny_backbone_spec
    return load_backbone(tiny_backbone_spec("audio", tmp_path_factory.mktemp("tiny-audio") / "a"))


def test_batch_rows_equal_each_clip_alone(audio_backbone, one_torch_thread):
    cs = clips(6)
    alone = torch.cat([audio_backbone.embed([c]) for c in cs])
    together = audio_backbone.embed(cs)
    assert alone.std(0).mean() > 1e-3  # features differ between clips: the test can fail
    assert torch.allclose(alone, together, atol=1e-4, rtol=1e-4)


def test_output_has_a_window_mask_and_zero_padding(audio_backbone):
    enc = audio_backbone.preprocess([Audio(np.zeros(16000, np.float32), 16000),
                                     Audio(np.zeros(48000, np.float32), 16000)])
    with torch.no_grad():
        out = audio_backbone.model(**enc)
    assert out.last_hidden_state.shape[:2] == out.attention_mask.shape == (2, 28)
    assert out.attention_mask.sum(1).tolist() == [3, 28]  # (97 - 76) // 8 + 1 windows in 1 s
    assert out.last_hidden_state[0, 3:].abs().max() == 0


@pytest.fixture
def audio_registry(tmp_path, audio_backbone):
    from adapters.registry import Registry
    from adapters.store import open_store
    reg = Registry(open_store(str(tmp_path / "store")), {"audio": audio_backbone})
    reg.sync()
    return reg


def lora_adapter(folder, backbone, name: str, seed: int, labels=("a", "b", "c"), r: int = 4,
                 task_type: str = "single_label"):
    """An adapter directory as training writes it: PEFT LoRA on the encoder's convs + a head.
    Returns (folder, peft model, head) so tests can compare with PEFT's own forward."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    from training.export import write_lora_dir
    from training.lora import default_targets

    torch.manual_seed(seed)
    model = AutoModel.from_pretrained(backbone.source_path)
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=default_targets(model)))
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_" in n:
                p.normal_(0, 0.3)
    spec = HeadSpec(pooling="mean", input_dim=backbone.hidden_size)
    head = Head(spec, len(labels))
    for p in head.parameters():
        torch.nn.init.normal_(p, std=1.0)
    manifest = Manifest(name=name, kind="lora", task_type=task_type, labels=list(labels),
                        backbone=BackboneRef(name=backbone.name, fingerprint=backbone.fingerprint),
                        head=spec, preprocessing=backbone.preprocessing_settings())
    folder.mkdir(parents=True)
    write_lora_dir(folder, manifest, head, peft_model.eval(), f"# {name}\n")
    return folder, peft_model, head


def peft_probs(peft_model, head, backbone, cs) -> torch.Tensor:
    from adapters.backbones.base import Features
    enc = backbone.preprocess(cs)
    with torch.no_grad():
        feats = Features(peft_model(**enc), enc["attention_mask"]).get("mean")
        return torch.softmax(head(feats), -1)


def probs(result) -> torch.Tensor:
    return torch.tensor([list(r.scores.values()) for r in result.rows])


def test_mixed_batch_across_audio_tasks_equals_each_alone(tmp_path, audio_registry, audio_backbone,
                                                          one_torch_thread):
    reg = audio_registry
    _, p1, h1 = lora_adapter(tmp_path / "l1", audio_backbone, "l1", seed=1)
    _, p2, h2 = lora_adapter(tmp_path / "l2", audio_backbone, "l2", seed=2, r=2)
    reg.register(tmp_path / "l1")
    reg.register(tmp_path / "l2")
    reg.register(head_adapter(tmp_path / "h1", audio_backbone, "h1", seed=3))
    reg.register(head_adapter(tmp_path / "m1", audio_backbone, "m1", labels=("x", "y", "z"), seed=4,
                              hidden=(8,), task_type="multi_label"))
    rt = Runtime(reg)
    cs = clips(4)
    alone = {t: probs(rt.run([rt.prepare([t], cs, "audio")])[0][0]) for t in ("l1", "l2", "h1", "m1")}
    # LoRA alone runs on merged weights; PEFT's own forward is the reference for both paths
    assert torch.allclose(alone["l1"], peft_probs(p1, h1, audio_backbone, cs), atol=1e-4)
    assert torch.allclose(alone["l2"], peft_probs(p2, h2, audio_backbone, cs), atol=1e-4)
    mixed = rt.run([rt.prepare(["l1", "h1"], cs[:2], "audio"),
                    rt.prepare(["l2", "m1", "l1"], cs, "audio"),
                    rt.prepare(["h1"], cs[2:], "audio")])
    assert torch.allclose(probs(mixed[0][0]), alone["l1"][:2], atol=1e-4)
    assert torch.allclose(probs(mixed[0][1]), alone["h1"][:2], atol=1e-4)
    assert torch.allclose(probs(mixed[1][0]), alone["l2"], atol=1e-4)
    assert torch.allclose(probs(mixed[1][1]), alone["m1"], atol=1e-4)
    assert torch.allclose(probs(mixed[1][2]), alone["l1"], atol=1e-4)
    assert torch.allclose(probs(mixed[2][0]), alone["h1"][2:], atol=1e-4)
    assert not torch.allclose(alone["l1"], alone["l2"][:, :3], atol=1e-3)


def test_regression_on_audio_shares_the_pass_with_classification(tmp_path, audio_registry, audio_backbone,
                                                                 one_torch_thread):
    """The regression task type works on the audio trunk unchanged: its values are its head on
    the mean-pooled windows, alone or in a batch with a classification and a LoRA task."""
    from support.factories import regression_head
    reg = audio_registry
    _, head = regression_head(tmp_path / "r", audio_backbone, "loudness", ("a", "b"), seed=5)
    reg.register(tmp_path / "r")
    reg.register(head_adapter(tmp_path / "h", audio_backbone, "h", seed=6))
    lora_adapter(tmp_path / "l", audio_backbone, "l", seed=7)
    reg.register(tmp_path / "l")
    rt = Runtime(reg)
    cs = clips(3)
    with torch.no_grad():
        ref = head(audio_backbone.embed(cs, "mean")).double()  # [3, 2]
    alone = rt.run([rt.prepare(["loudness"], cs, "audio")])[0][0]
    mixed = rt.run([rt.prepare(["l", "loudness", "h"], cs, "audio")])[0][1]
    for res in (alone, mixed):
        assert res.task_type == "regression"
        got = torch.tensor([[r.values["a"], r.values["b"]] for r in res.rows], dtype=torch.float64)
        assert torch.allclose(got, ref, atol=1e-4)


def test_audio_sent_to_a_text_task_is_refused(audio_registry, audio_backbone, tmp_path):
    audio_registry.register(head_adapter(tmp_path / "h", audio_backbone, "h"))
    with pytest.raises(InvalidInput, match="takes audio"):
        Runtime(audio_registry).prepare(["h"], ["some text"], "text")


# ---- the real encoder -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_audio_backbone(tmp_path_factory):
    pytest.importorskip("onnx")
    from adapters.backbones.audio_convert import openwakeword_model_files
    from adapters.backbones.base import BackboneSpec, load_backbone
    try:
        openwakeword_model_files()
    except InvalidInput as exc:
        pytest.skip(str(exc))
    import os
    home = tmp_path_factory.mktemp("home")
    old = os.environ.get("TASKSWAP_HOME")
    os.environ["TASKSWAP_HOME"] = str(home)
    try:
        yield load_backbone(BackboneSpec(name="audio", source="embedded:speech_embedding"))
    finally:
        if old is None:
            os.environ.pop("TASKSWAP_HOME")
        else:
            os.environ["TASKSWAP_HOME"] = old


@pytest.mark.real
def test_rebuilt_encoder_matches_onnxruntime(real_audio_backbone):
    ort = pytest.importorskip("onnxruntime")
    from adapters.backbones.audio_convert import openwakeword_model_files
    mel_path, emb_path = openwakeword_model_files()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    mel_s = ort.InferenceSession(str(mel_path), opts, providers=["CPUExecutionProvider"])
    emb_s = ort.InferenceSession(str(emb_path), opts, providers=["CPUExecutionProvider"])
    clip = clips(4)[3]
    pcm = (clip.samples * 32767).astype(np.int16)  # openWakeWord's own input: 16-bit PCM
    ref_mel = np.squeeze(mel_s.run(None, {"input": pcm[None].astype(np.float32)})[0]) / 10 + 2
    windows = np.stack([ref_mel[i:i + 76] for i in range(0, ref_mel.shape[0] - 75, 8)])
    ref = emb_s.run(None, {"input_1": windows[..., None].astype(np.float32)})[0].squeeze()  # [W, 96]
    model = real_audio_backbone.model
    wave = torch.from_numpy(pcm.astype(np.float32) / 32768)[None]
    with torch.no_grad():
        mel = model.mel(wave, torch.tensor([wave.shape[1]]))[0].numpy()
        out = model(wave).last_hidden_state[0].numpy()
    assert mel.shape == ref_mel.shape and np.abs(mel - ref_mel).max() < 1e-4
    assert out.shape == ref.shape == (len(windows), 96)
    assert np.abs(out - ref).max() < 1e-4 * max(1.0, np.abs(ref).max())


@pytest.mark.real
def test_peft_lora_on_the_rebuilt_encoder_matches_the_runtime(tmp_path, real_audio_backbone, one_torch_thread):
    from adapters.registry import Registry
    from adapters.store import open_store
    reg = Registry(open_store(str(tmp_path / "store")), {"audio": real_audio_backbone})
    reg.sync()
    _, p1, h1 = lora_adapter(tmp_path / "l1", real_audio_backbone, "l1", seed=1)
    _, p2, h2 = lora_adapter(tmp_path / "l2", real_audio_backbone, "l2", seed=2)
    loaded = reg.register(tmp_path / "l1")
    reg.register(tmp_path / "l2")
    assert len(loaded.lora.modules) == 20  # every conv of the embedder, 3x3 / 1x3 / 3x1
    rt = Runtime(reg)
    cs = clips(3)
    ref1, ref2 = peft_probs(p1, h1, real_audio_backbone, cs), peft_probs(p2, h2, real_audio_backbone, cs)
    mixed = rt.run([rt.prepare(["l1", "l2"], cs, "audio")])[0]  # per-row deltas
    alone = rt.run([rt.prepare(["l1"], cs, "audio")])[0][0]  # merged weights
    assert torch.allclose(probs(mixed[0]), ref1, atol=1e-4)
    assert torch.allclose(probs(mixed[1]), ref2, atol=1e-4)
    assert torch.allclose(probs(alone), ref1, atol=1e-4)
    assert not torch.allclose(ref1, ref2, atol=1e-3)


@pytest.mark.real
def test_converted_folder_is_cached_and_readable(real_audio_backbone):
    import os
    import stat
    from pathlib import Path
    folder = Path(real_audio_backbone.source_path)
    for f in folder.iterdir():
        assert os.stat(f).st_mode & stat.S_IROTH, f"{f} is not other-readable"
    from adapters.backbones.embedded import speech_embedding_path
    mtime = (folder / "model.safetensors").stat().st_mtime_ns
    assert speech_embedding_path(folder.parents[1]) == folder  # a second call rebuilds nothing
    assert (folder / "model.safetensors").stat().st_mtime_ns == mtime


# ---- training data ----------------------------------------------------------------------------
def _clip_files(root, names=("yes", "no"), per=2):
    for c in names:
        (root / c).mkdir(parents=True)
        for i in range(per):
            sf.write(root / c / f"{i}.wav", tone(0.3, 8000, freq=300 + 100 * i), 8000)


def test_audio_folder_and_csv_are_found_by_auto_format(tmp_path):
    from training.sources import DataSource
    _clip_files(tmp_path / "clips")
    d = DataSource(path=tmp_path / "clips").load()
    assert d.modality == "audio" and d.class_counts() == {"no": 2, "yes": 2}
    (tmp_path / "clips.csv").write_text("path,label\nclips/yes/0.wav,yes\nclips/no/1.wav,no\n")
    c = DataSource(path=tmp_path / "clips.csv").load()
    assert c.modality == "audio" and c.label_names == ["no", "yes"]
    from training.data import open_input
    clip = open_input(c.inputs[0], "audio")
    assert clip.sample_rate == 16000 and abs(len(clip.samples) - 4800) <= 2


def test_audio_folder_reports_every_bad_file_at_once(tmp_path):
    from training.data.audio import load_audio_folder
    _clip_files(tmp_path / "clips")
    (tmp_path / "clips" / "yes" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (tmp_path / "clips" / "no" / "fake.ogg").write_bytes(b"not an ogg file")
    (tmp_path / "clips" / "empty").mkdir()
    with pytest.raises(InvalidInput) as err:
        load_audio_folder(tmp_path / "clips")
    msg = str(err.value)
    assert "broken.wav" in msg and "fake.ogg" in msg and "['empty']" in msg


# ---- issue 30 item 7: resampling at any rate costs a bounded filter ----------------------------
@pytest.mark.parametrize("rate", [44_100, 44_101, 191_999, 16_001, 7_919, 768_000, 8_000])
def test_resampling_any_rate_uses_bounded_factors_and_keeps_pitch_and_length(rate):
    up, down = resample_factors(rate, 16_000)
    assert max(up, down) <= MAX_RESAMPLE_FACTOR
    assert abs((up / down) / (16_000 / rate) - 1) < 6e-4
    n = rate // 2  # half a second
    t = np.arange(n) / rate
    y = resample(np.sin(2 * np.pi * 440 * t).astype(np.float32), rate, 16_000)
    assert len(y) == round(n * 16_000 / rate) and y.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y)), 16 * len(y)))
    peak_hz = np.argmax(spectrum) * 16_000 / (16 * len(y))
    assert abs(peak_hz - 440) < 2, peak_hz
