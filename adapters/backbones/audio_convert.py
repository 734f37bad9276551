"""Read openWakeWord's two ONNX graphs into a :class:`SpeechEmbeddingModel` state dict.

The graphs are walked node by node and checked against the architecture we rebuild
(kernel shapes, pools, activation constants, paddings), so a different ``.onnx`` can never
half-load: every problem is collected and raised together. Only the ``onnx`` package is
needed (to read initializers); onnxruntime is a test oracle, not a dependency.

Example::

    >>> sd = convert_speech_embedding(*openwakeword_model_files())
    >>> tuple(sd["embedder.layers.0.conv.weight"].shape), tuple(sd["mel.mel_weights"].shape)
    ((24, 1, 3, 3), (257, 32))
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from adapters.backbones.audio_model import GOOGLE_LAYERS, SpeechEmbeddingConfig, SpeechEmbeddingModel
from adapters.errors import InvalidInput

PACKAGE = "openwakeword"
MEL_FILE = "resources/models/melspectrogram.onnx"
EMBEDDING_FILE = "resources/models/embedding_model.onnx"


def openwakeword_model_files() -> tuple[Path, Path]:
    """Paths of ``melspectrogram.onnx`` and ``embedding_model.onnx`` in the installed package."""
    # find_spec, not import: openwakeword's __init__ imports onnxruntime, tflite, requests...
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InvalidInput("embedded backbone 'speech_embedding' needs the package openwakeword; "
                           "install it with: pip install --no-deps openwakeword==0.4.0")
    root = Path(spec.submodule_search_locations[0])
    paths = (root / MEL_FILE, root / EMBEDDING_FILE)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise InvalidInput(f"openwakeword is installed but {missing} are missing; reinstall "
                           "openwakeword==0.4.0 (its wheel carries the ONNX models)")
    return paths


def _graph(path: Path):
    try:  # optional: the audio backbone's packages may be absent (audio_available)
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:
        raise InvalidInput("converting the speech encoder needs the package onnx; "
                           "install it with: pip install onnx") from exc
    graph = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t)
              for n in graph.node if n.op_type == "Constant"}
    nodes = []
    for n in graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        nodes.append((n.op_type, list(n.input), attrs))
    return nodes, {**consts, **inits}


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float32))


def convert_mel(path: Path, config: SpeechEmbeddingConfig, problems: list[str]) -> dict:
    """``mel.*`` buffers from ``melspectrogram.onnx`` (STFT kernels and the mel matrix)."""
    nodes, values = _graph(path)
    convs = [(inp, attrs) for op, inp, attrs in nodes if op == "Conv"]
    matmuls = [inp for op, inp, _ in nodes if op == "MatMul"]
    bins = config.n_fft // 2 + 1
    if len(convs) != 2 or len(matmuls) != 1:
        problems.append(f"{path.name}: expected 2 STFT convolutions and 1 mel MatMul, "
                        f"found {len(convs)} and {len(matmuls)}")
        return {}
    for _, attrs in convs:
        if list(attrs.get("strides", [])) != [config.hop_length] or any(attrs.get("pads", [0])):
            problems.append(f"{path.name}: STFT conv has strides {attrs.get('strides')} pads "
                            f"{attrs.get('pads')}; expected hop {config.hop_length}, no padding")
    real, imag = (values[inp[1]] for inp, _ in convs)
    mel = values[matmuls[0][1]]
    for name, a, shape in (("real", real, (bins, 1, config.n_fft)), ("imag", imag, (bins, 1, config.n_fft)),
                           ("mel", mel, (bins, config.n_mels))):
        if tuple(a.shape) != shape:
            problems.append(f"{path.name}: {name} weights {tuple(a.shape)} != {shape}")
    # The log/clip constants the torch front end hard-codes (10 log10, floor 1e-10, 80 dB).
    scalars = sorted(float(np.ravel(v)[0]) for v in values.values() if np.size(v) == 1)
    for want in (10.0, 80.0, 1e-10):
        if not any(abs(s - want) <= 1e-6 * max(1.0, want) for s in scalars):
            problems.append(f"{path.name}: constant {want} not found; not the expected mel graph")
    return {"mel.stft_real": _t(real), "mel.stft_imag": _t(imag), "mel.mel_weights": _t(mel)}


def convert_embedder(path: Path, config: SpeechEmbeddingConfig, problems: list[str]) -> dict:
    """``embedder.*`` weights from ``embedding_model.onnx`` (conv weights/biases, one BatchNorm)."""
    nodes, values = _graph(path)
    sd: dict[str, torch.Tensor] = {}
    convs = [(inp, attrs) for op, inp, attrs in nodes if op == "Conv"]
    if len(convs) != len(GOOGLE_LAYERS):
        problems.append(f"{path.name}: {len(convs)} convolutions, expected {len(GOOGLE_LAYERS)}")
        return sd
    for i, ((inp, attrs), (cout, kernel, _)) in enumerate(zip(convs, GOOGLE_LAYERS)):
        w = values[inp[1]]
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        want_pads = [0, 1, 0, 1] if tuple(kernel) == (1, 3) else [0, 0, 0, 0]
        if tuple(attrs.get("kernel_shape", w.shape[2:])) != tuple(kernel) or pads != want_pads \
                or list(attrs.get("strides", [1, 1])) != [1, 1] or attrs.get("group", 1) != 1:
            problems.append(f"{path.name}: conv {i} is kernel {attrs.get('kernel_shape')} pads "
                            f"{pads}; expected {kernel} pads {want_pads}, stride 1, groups 1")
        if w.shape[0] != cout:
            problems.append(f"{path.name}: conv {i} has {w.shape[0]} outputs, expected {cout}")
        sd[f"embedder.layers.{i}.conv.weight"] = _t(w)
        has_bias = len(inp) > 2
        if has_bias != (0 < i < len(GOOGLE_LAYERS) - 1):
            problems.append(f"{path.name}: conv {i} {'has' if has_bias else 'lacks'} a bias, "
                            "unlike the speech_embedding graph")
        if has_bias:
            sd[f"embedder.layers.{i}.conv.bias"] = _t(values[inp[2]])
    bns = [(inp, attrs) for op, inp, attrs in nodes if op == "BatchNormalization"]
    if len(bns) != 1 or abs(bns[0][1].get("epsilon", 1e-5) - config.batch_norm_eps) > 1e-9:
        problems.append(f"{path.name}: expected one BatchNormalization with eps "
                        f"{config.batch_norm_eps}, found {[a.get('epsilon') for _, a in bns]}")
    else:
        inp = bns[0][0]
        for key, name in zip(("weight", "bias", "running_mean", "running_var"), inp[1:5]):
            sd[f"embedder.layers.0.norm.{key}"] = _t(values[name])
        sd["embedder.layers.0.norm.num_batches_tracked"] = torch.tensor(0)
    slopes = {round(float(a["alpha"]), 6) for op, _, a in nodes if op == "LeakyRelu"}
    floors = {round(float(np.ravel(values[i[1]])[0]), 6) for op, i, _ in nodes if op == "Max"}
    pools = [tuple(a["kernel_shape"]) for op, _, a in nodes if op == "MaxPool"]
    if slopes != {round(config.negative_slope, 6)} or floors != {round(config.activation_floor, 6)}:
        problems.append(f"{path.name}: LeakyReLU slopes {slopes} / floors {floors}; expected "
                        f"{config.negative_slope} / {config.activation_floor}")
    if pools != [tuple(p) for _, _, p in GOOGLE_LAYERS if p]:
        problems.append(f"{path.name}: max-pools {pools} differ from the speech_embedding graph")
    return sd


def convert_speech_embedding(mel_path: Path, embedding_path: Path,
                             config: SpeechEmbeddingConfig | None = None) -> dict:
    """The full ``SpeechEmbeddingModel`` state dict, checked key by key and shape by shape."""
    config = config or SpeechEmbeddingConfig()
    problems: list[str] = []
    sd = {**convert_mel(Path(mel_path), config, problems),
          **convert_embedder(Path(embedding_path), config, problems)}
    with torch.device("meta"):
        expected = SpeechEmbeddingModel(config).state_dict()
    missing = sorted(set(expected) - set(sd))
    extra = sorted(set(sd) - set(expected))
    if missing and not problems:
        problems.append(f"{len(missing)} weights not filled, e.g. {missing[:3]}")
    if extra:
        problems.append(f"{len(extra)} unexpected weights, e.g. {extra[:3]}")
    for key in set(sd) & set(expected):
        if tuple(sd[key].shape) != tuple(expected[key].shape):
            problems.append(f"{key}: shape {tuple(sd[key].shape)} != {tuple(expected[key].shape)}")
    InvalidInput.collect(problems[:20], "speech_embedding conversion")
    return sd


def build_speech_embedding() -> SpeechEmbeddingModel:
    """A ``SpeechEmbeddingModel`` with openWakeWord's weights, in eval mode."""
    config = SpeechEmbeddingConfig()
    model = SpeechEmbeddingModel(config)
    model.load_state_dict(convert_speech_embedding(*openwakeword_model_files(), config), strict=True)
    return model.eval()


# Files that make a converted folder complete; a folder missing any of them is rebuilt.
SPEECH_FILES = ("config.json", "model.safetensors")


def build_speech_embedding_folder(folder: Path) -> None:
    """Write the rebuilt model as a Hugging Face folder (``AutoModel`` loads it) into ``folder``."""
    build_speech_embedding().save_pretrained(folder)
