"""The default backbones: the one place their names, sources and input sizes are written.

The server serves exactly these unless configured otherwise, and the demo adapters
(``python -m training.demo``) are trained on exactly these, so a demo adapter's
fingerprint and preprocessing (``image_size``, ``max_length``) always match the server.

- ``text``: sentence-transformers all-MiniLM-L6-v2 (BERT, 384-d), 128 tokens at most.
- ``vision``: ImageNet MobileNetV2 (1280-d pooled) at 96 px: the demo images are 28 px
  (Fashion-MNIST) or 8 px (digits), and 96 px runs about 5x faster than 224 px on CPU.

Example::

    >>> [s.name for s in DEFAULT_BACKBONES]
    ['text', 'vision']
    >>> default_spec("vision").image_size
    96
"""

from __future__ import annotations

from adapters.backbones.base import BackboneSpec

TEXT = BackboneSpec(name="text", source="embedded:all-MiniLM-L6-v2", max_length=128)
VISION = BackboneSpec(name="vision", source="embedded:mobilenet_v2", image_size=96)

DEFAULT_BACKBONES: list[BackboneSpec] = [TEXT, VISION]


def default_spec(name: str) -> BackboneSpec:
    """The default spec called ``name`` ('text' | 'vision'); KeyError names the choices."""
    for spec in DEFAULT_BACKBONES:
        if spec.name == name:
            return spec
    raise KeyError(f"no default backbone {name!r}; defaults are {[s.name for s in DEFAULT_BACKBONES]}")
